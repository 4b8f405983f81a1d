"""The models the inference runtimes prepare (``grain_bench.runtimes``): an AOTInductor package, an ONNX Runtime
session, the compile runtime's copy with written-out attention, a captured CUDA graph. Each is called like the module
(keyword inputs) and returns an object with the head's outputs. This module imports torch and the saved modeling
file; the runtimes registry imports it only when a runtime is used.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import tempfile

import torch

from grain_bench.errors import GrainBenchError
from grain_bench.modeling_pruned_bert import PrunedBertAttention, _is_exporting


def head_outputs(result) -> dict:
    """The head's output tensors of a model call (``logits``, or ``start_logits``/``end_logits``, or a bare encoder's
    ``last_hidden_state``), by name."""
    names = [n for n in ("logits", "start_logits", "end_logits", "last_hidden_state") if getattr(result, n, None)
             is not None]
    return {name: getattr(result, name) for name in names}


def _dynamic_dims(config):
    """torch.export dimensions for the batch and the sequence length (up to the model's position embeddings)."""
    return {0: torch.export.Dim("batch", min=1),
            1: torch.export.Dim("length", min=2, max=int(getattr(config, "max_position_embeddings", 512)))}


class AotiModel:
    """A model exported with dynamic batch and length and compiled by AOTInductor; called with the module's keyword
    inputs (the names it was prepared with), returns the module's output type."""

    def __init__(self, model, inputs: dict[str, torch.Tensor]):
        from torch import _inductor

        model = model.eval()
        self.config = model.config
        reference = next(model.parameters())
        # Traced on 2 x 16 tokens (contiguous: a view's strides would become guards): a batch of 1 would be
        # specialised (torch.export treats sizes 0 and 1 as constants).
        example = {name: tensor[:1].repeat(2, 16 // tensor.shape[1] + 1)[:, :16].clone()
                   for name, tensor in inputs.items()}
        with tempfile.TemporaryDirectory() as folder:
            try:
                with torch.no_grad():
                    dims = {name: _dynamic_dims(model.config) for name in example}
                    program = torch.export.export(model, (), kwargs=example, dynamic_shapes=dims)
                path = _inductor.aoti_compile_and_package(program, package_path=os.path.join(folder, "model.pt2"),
                                                          inductor_configs={"freezing": True})
                self.runner = _inductor.aoti_load_package(path, device_index=-1 if reference.device.index is None
                                                           else reference.device.index)
            except Exception as error:  # an export or a C++ build that failed: say which runtime and why
                raise GrainBenchError(f"the aoti runtime could not build the model ({type(error).__name__}: "
                                      f"{str(error).splitlines()[0] if str(error) else ''}); it needs a C++ compiler, "
                                      f"as torch.compile on CPU does") from error

    def __call__(self, **inputs):
        return self.runner(**inputs)

    def eval(self):
        return self


class OnnxModel:
    """A model exported to ONNX and run by ONNX Runtime; called with the module's keyword inputs."""

    def __init__(self, model, inputs: dict[str, torch.Tensor], threads: int | None = None):
        import onnxruntime as ort

        model = model.eval()
        with torch.no_grad():
            names = list(head_outputs(model(**inputs)))
        self.output_names, self.input_names = names, list(inputs)
        self.config = model.config
        handle, path = tempfile.mkstemp(suffix=".onnx")
        os.close(handle)
        try:
            with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):  # the exporter prints its progress
                program = torch.onnx.export(model, (), kwargs=dict(inputs), input_names=self.input_names,
                                            output_names=names, dynamo=True, verbose=False,
                                            dynamic_shapes={name: _dynamic_dims(model.config)
                                                            for name in self.input_names})
            if program is None:  # only with dynamo=False
                raise GrainBenchError("torch.onnx.export returned no program")
            program.save(path)
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            if threads:
                options.intra_op_num_threads, options.inter_op_num_threads = int(threads), 1
            # ORT's pool threads spin after each run by default, taking cores from whatever runs next in the process.
            # Even without spinning, eager models timed beside ONNX sessions ran slower at batch 1 (a dense batch:
            # 16.3 ms against 13.2 ms alone), so time each runtime in its own process (benchmarks/results/
            # latency-real-masks.md).
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.add_session_config_entry("session.inter_op.allow_spinning", "0")
            self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        finally:
            os.remove(path)

    def __call__(self, **inputs):
        from types import SimpleNamespace

        feed = {name: inputs[name].cpu().numpy() for name in self.input_names}
        values = self.session.run(self.output_names, feed)
        return SimpleNamespace(**{name: torch.from_numpy(value) for name, value in zip(self.output_names, values)})

    def eval(self):
        return self


def sharing_copy(model):
    """A copy of ``model`` that shares its parameters and buffers (what a runtime changes in the copy's modules stays
    there), in eval mode."""
    memo = {id(tensor): tensor for tensor in (*model.parameters(), *model.buffers())}
    return copy.deepcopy(model, memo).eval()


class WrittenOutAttention(PrunedBertAttention):
    """A compact attention block whose attention, while torch.compile traces it on the CPU for inference, is matmul,
    softmax, matmul instead of the fused SDPA call (``for_compile``); eager calls and torch.export keep SDPA."""

    def _attend(self, q, k, v, attention_mask, dropout: float):
        """``PrunedBertAttention._attend``, written out under torch.compile on the CPU."""
        if not dropout and q.device.type == "cpu" and torch.compiler.is_compiling() and not _is_exporting():
            # Under torch.compile on CPU the fused kernel is an opaque call; written out, inductor fuses the scaling,
            # the mask and the softmax into one loop and the two matmuls need no padding: 7% faster at batch 1 x 64
            # and level or 1-3% faster at batch 8-32 on GRAIN's real masks (docs/compact-and-latency.md). Eager keeps
            # the fused kernel, which is 15-50% faster than these three operations run one by one.
            scores = torch.matmul(q, k.transpose(-1, -2)) * self.scaling
            if attention_mask is not None:
                scores = scores + attention_mask
            return torch.matmul(torch.softmax(scores, dim=-1), v)
        return super()._attend(q, k, v, attention_mask, dropout)


def for_compile(model):
    """What the ``compile`` runtime compiles: a copy of ``model`` (eval mode) sharing its parameters, with its compact
    attention blocks written out (``WrittenOutAttention``). ``model`` itself is unchanged."""
    prepared = sharing_copy(model)
    for block in prepared.modules():
        if type(block) is PrunedBertAttention:
            block.__class__ = WrittenOutAttention
    return prepared


#: The GPU layout (``gpu_layout``): one attention call per layer for the heads with query units (and one for those
#: without), every head padded to the layer's widest, widths rounded up to multiples of 8 (tensor-core tiles; SDPA's
#: fused CUDA kernels want head widths that are multiples of 8). On a GPU a kernel launch costs microseconds whatever
#: its size, so one wider call beats the CPU plan's two or three narrower ones; the call cost is a planning weight
#: large enough that the planner never splits a layer (``benchmarks/device/run.sh gpu-bench`` times the plans).
GPU_BUCKET_CALL_COST = 1e9
GPU_WIDTH_MULTIPLE = 8


def gpu_layout(model, call_cost: float = GPU_BUCKET_CALL_COST, width_multiple: int = GPU_WIDTH_MULTIPLE):
    """A copy of ``model`` (eval mode, sharing its parameters) whose compact blocks run the GPU layout; the outputs
    are the model's (the layout only pads and regroups). Any device and dtype: the CUDA runtimes use it, and the tests
    check it on CPU in fp32 and bf16. ``model`` itself is unchanged."""
    prepared = sharing_copy(model)
    for block in prepared.modules():
        if isinstance(block, PrunedBertAttention) and block.num_heads:
            block.set_layout(call_cost, width_multiple=width_multiple)
    return prepared


class CudaGraphModel:
    """A model captured as one CUDA graph on the inputs it was prepared with (its own static inputs and memory pool),
    replayed for every call: any number of models replay side by side. A call with other tensors copies them into the
    static inputs first (same shapes only)."""

    def __init__(self, model, inputs: dict[str, torch.Tensor]):
        self.model, self.config = model.eval(), model.config
        self.static = dict(inputs)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), torch.inference_mode():
            for _ in range(3):  # warm-up on a side stream before capture, as the CUDA-graph docs require
                model(**self.static)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph), torch.inference_mode():
            self.output = model(**self.static)

    def __call__(self, **inputs):
        for name, tensor in inputs.items():
            if tensor is not self.static[name]:
                self.static[name].copy_(tensor)
        self.graph.replay()
        return self.output

    def eval(self):
        return self
