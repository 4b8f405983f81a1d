"""Inference runtimes for a model (dense or compact): how its forward pass is executed, not what it computes.

- ``eager``: the PyTorch module as it is (the default everywhere);
- ``compile``: ``torch.compile`` for inference with static shapes and inductor's freezing (the weights, including the
  compact model's padded bucket layout, are folded into constants and the fixed per-token work -- LayerNorm, GELU,
  residuals, the score scaling and softmax -- is fused); on CPU with inductor's C++ wrapper, which calls the kernels
  from C++ instead of Python (at batch 1 the calls are most of the time), and with the compact model's attention
  written out as matmul, softmax, matmul (``for_compile``). Compiles on the first call of each input shape (tens of
  seconds on CPU);
- ``aoti``: the model exported with ``torch.export`` (batch and length dynamic) and compiled ahead of time by
  AOTInductor (freezing, C++ kernels and wrapper) into a package that runs without Python or dynamo: no guard
  checks on each call, which cost ``compile`` about 0.3 ms a call on a compact model (11% of GRAIN's 5% model at
  batch 1 x 64). Builds once for every shape (tens of seconds on CPU; a C++ compiler, as ``compile`` on CPU needs);
- ``ragged``: the eager module with the compact model's attention run by a C kernel (``grain_bench.ragged``) that
  takes every head of a layer at its own query/key and value widths in one call: no padding of heads into buckets, no
  bucket calls, transposes or concatenation, and the exact QKV GEMM. Layers whose heads are all at most
  ``RAGGED_MAX_WIDTH`` wide use it; layers with wider heads keep the bucket layout, where PyTorch's fused attention is
  faster. CPU, fp32, inference. Built on first use with the system's C compiler (about a second). Models without
  compact attention blocks (the dense backbone) run as in ``eager``;
- ``onnx``: the model exported to ONNX (``torch.onnx.export`` with ``torch.export``, batch and length dynamic) and
  run by ONNX Runtime's CPU provider, with the graph optimisations at their highest level. Needs
  ``pip install onnx onnxscript onnxruntime`` (the ``onnx`` extra: ``pip install -e '.[onnx]'``).

Every runtime must reproduce the eager model's outputs: ``check_equivalent`` compares them on given inputs, and
``prepare`` runs it before handing a model back. A prepared model is called like the module (keyword inputs) and
returns an object with the head's output attribute (``logits``, or ``start_logits``/``end_logits``).
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import tempfile
from typing import Any

import torch

from grain_bench.errors import GrainBenchError, UsageError
from grain_bench.modeling_pruned_bert import PrunedBertAttention, _is_exporting

RUNTIMES = ("eager", "compile", "aoti", "ragged", "onnx")
#: torch._dynamo's recompile limit while models are compiled here: one process may compile every run of a results
#: directory (``grain-bench measure --mode compile``), at each input shape.
RECOMPILE_LIMIT = 256
#: the ``ragged`` runtime's kernel runs a layer whose heads are all at most this wide (query/key or value units); wider
#: heads keep the bucket layout. Per (sequence, head) at 64 tokens and batch 32 on the 2-core CPU of
#: docs/compact-and-latency.md, the kernel was 1.35-1.8x faster than PyTorch's fused attention up to 13 units, level at
#: 32 and 11% slower at 64 (benchmarks/results/ragged-kernel.json); in whole MiniLM models (32-unit heads) GRAIN's
#: masks ran 7-37% faster with it and whole-head masks level (benchmarks/results/latency-real-masks.md). BERT-base's
#: 64-unit heads keep the buckets.
RAGGED_MAX_WIDTH = 32
#: largest absolute output difference a runtime may show against eager fp32 (fused kernels reorder sums)
TOLERANCE = 1e-4


def check_runtime(runtime: str) -> str:
    """``runtime`` if it is known; ``UsageError`` otherwise (with the choices)."""
    if runtime not in RUNTIMES:
        raise UsageError(f"unknown runtime {runtime!r}; expected one of {', '.join(RUNTIMES)}")
    if runtime == "onnx":
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
            import onnxscript  # noqa: F401
        except ImportError:
            raise UsageError("the onnx runtime needs onnx, onnxscript and onnxruntime: pip install onnx onnxscript "
                             "onnxruntime (the 'onnx' extra of grain-bench)") from None
    return runtime


def example_inputs(config, device: str | torch.device = "cpu", batch: int = 2, length: int = 16, seed: int = 0
                   ) -> dict[str, torch.Tensor]:
    """Random token ids of the given shape, a full attention mask and zero token types: what ``prepare`` needs when
    the caller has no inputs of its own, and what latency is timed on (it does not depend on the values)."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, config.vocab_size, (batch, length), generator=generator)
    return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device),
            "token_type_ids": torch.zeros_like(ids).to(device)}


def _outputs(result) -> dict[str, torch.Tensor]:
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
            names = list(_outputs(model(**inputs)))
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


def _sharing_copy(model):
    """A copy of ``model`` that shares its parameters and buffers (what a runtime changes in the copy's modules stays
    there), in eval mode."""
    memo = {id(tensor): tensor for tensor in (*model.parameters(), *model.buffers())}
    return copy.deepcopy(model, memo).eval()


class RaggedModel:
    """The eager module with every compact attention block on the ragged kernel (``grain_bench.ragged.use_kernel``),
    called under ``torch.inference_mode``. The module is a copy that shares the parameters: the model it came from
    keeps its own attention."""

    def __init__(self, model):
        from grain_bench.ragged import RaggedLayout, library, use_kernel

        reference = next(model.parameters())
        if reference.device.type != "cpu" or reference.dtype != torch.float32:
            raise GrainBenchError(f"the ragged runtime runs fp32 models on the CPU; this one is {reference.dtype} on "
                                  f"{reference.device}")
        library()  # built (or found in the cache) now, so that a missing compiler is an error here
        self.model = _sharing_copy(model)
        self.config = model.config
        self.kernel_layers = 0
        for block in self.model.modules():
            if isinstance(block, PrunedBertAttention) and block.num_heads \
                    and max(*block.qk_dims, *block.vo_dims) <= RAGGED_MAX_WIDTH:
                use_kernel(block, RaggedLayout(block.qk_dims, block.vo_dims))
                self.kernel_layers += 1

    def __call__(self, **inputs):
        with torch.inference_mode():
            return self.model(**inputs)

    def eval(self):
        return self


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
    prepared = _sharing_copy(model)
    for block in prepared.modules():
        if type(block) is PrunedBertAttention:
            block.__class__ = WrittenOutAttention
    return prepared


def allow_recompiles() -> None:
    """Raise torch._dynamo's recompile limits to ``RECOMPILE_LIMIT``: dynamo traces each compact model (and each input
    shape) as a recompilation of the same forward code, and past ``recompile_limit`` (8) it runs every further model
    eagerly without a word (the outputs are unchanged, so no equivalence check notices)."""
    config = torch._dynamo.config
    config.recompile_limit = max(config.recompile_limit, RECOMPILE_LIMIT)
    config.accumulated_recompile_limit = max(config.accumulated_recompile_limit, 4 * RECOMPILE_LIMIT)


def compile_options(device: torch.device) -> dict[str, Any]:
    """Inductor options of the ``compile`` runtime: freezing; on CPU also the C++ wrapper (GRAIN's 5% model at batch
    1 x 64: 2.9 ms against 3.5 ms with the Python wrapper, level at batch 32; compiling takes 30-60% longer)."""
    return {"freezing": True, **({"cpp_wrapper": True} if device.type == "cpu" else {})}


def prepare(model, runtime: str, inputs: dict[str, torch.Tensor], threads: int | None = None,
            check: bool = True) -> Any:
    """``model`` (eval mode) under ``runtime``, warmed up and checked against the eager model on ``inputs`` (the
    shapes it will see: ``compile`` specialises on them, ``onnx`` exports with them)."""
    check_runtime(runtime)
    model = model.eval()
    if runtime == "eager":
        return model
    if runtime == "compile":
        allow_recompiles()
        device = next(model.parameters()).device
        prepared = torch.compile(for_compile(model), dynamic=False, options=compile_options(device))
    elif runtime == "aoti":
        prepared = AotiModel(model, inputs)
    elif runtime == "ragged":
        prepared = RaggedModel(model)
    else:
        prepared = OnnxModel(model, inputs, threads)
    if check:
        check_equivalent(prepared, model, inputs, runtime)
    return prepared


def check_equivalent(prepared, model, inputs: dict[str, torch.Tensor], runtime: str = "") -> float:
    """Largest output difference of ``prepared`` against the eager ``model``; ``GrainBenchError`` over ``TOLERANCE``."""
    with torch.inference_mode():
        expected, got = _outputs(model(**inputs)), _outputs(prepared(**inputs))
    if set(got) != set(expected):
        raise GrainBenchError(f"runtime {runtime!r} returned {sorted(got)}, the model {sorted(expected)}")
    worst = max(float((got[name].float() - expected[name].float()).abs().max()) for name in expected)
    if not worst <= TOLERANCE:
        raise GrainBenchError(f"runtime {runtime!r} does not reproduce the model: outputs differ by up to {worst:.3g} "
                              f"(tolerance {TOLERANCE:g})")
    return worst
