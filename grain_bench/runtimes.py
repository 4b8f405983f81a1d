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

- on CUDA: ``eager``, ``cuda_graph`` (one CUDA graph per model, captured on its own static inputs, so that any number
  of models replay side by side) and ``compile`` (``torch.compile`` with max-autotune, no CUDA graphs); both of the
  latter run the model in the GPU layout (``grain_bench.prepared.gpu_layout``: one aligned attention call per layer).
  ``compile``'s first call (the compilation) has a time budget (``CompileTimeout``, ``compile_budget``).

Each is a ``Runtime`` registered through the ``register_runtimes`` hook (a plugin adds its own the same way): its
``devices``, a ``check`` of what it needs here (a package, a compiler) and ``prepare``. Every runtime must reproduce
the eager model's outputs: ``check_equivalent`` compares them on given inputs, and ``prepare`` runs it before handing
a model back. A prepared model is called like the module (keyword inputs) and returns an object with the head's
output attribute (``logits``, or ``start_logits``/``end_logits``). This module imports no torch at import; the
prepared models live in ``grain_bench.prepared`` and ``grain_bench.ragged``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any, ClassVar

from grain_bench.errors import GrainBenchError, UsageError
from grain_bench.hookspecs import hookimpl

#: torch._dynamo's recompile limit while models are compiled here: one process may compile every run of a results
#: directory (``grain-bench measure --mode compile``), at each input shape.
RECOMPILE_LIMIT = 256
#: largest absolute output difference a runtime may show against eager fp32 (fused kernels reorder sums)
TOLERANCE = 1e-4


class Runtime:
    """How a model's forward pass runs for inference, not what it computes. Subclasses set ``name``, ``devices`` and
    ``description`` and implement ``build``; register an instance through ``register_runtimes``."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    #: the device types it runs on ("cpu", "cuda")
    devices: ClassVar[tuple[str, ...]] = ("cpu",)

    def check(self) -> None:
        """Raise ``UsageError`` when the runtime cannot run here (a package that is not installed, say)."""

    def build(self, model, inputs: dict, threads: int | None):
        """The prepared model for ``model`` (eval mode) on ``inputs`` (the shapes it will see)."""
        raise NotImplementedError

    def prepare(self, model, inputs: dict, threads: int | None = None, check: bool = True):
        """``model`` under this runtime, warmed up and (with ``check``) checked against the eager model on
        ``inputs``."""
        self.check()
        model = model.eval()
        prepared = self.build(model, inputs, threads)
        if check and prepared is not model:
            check_equivalent(prepared, model, inputs, self.name)
        return prepared


class Eager(Runtime):
    """The PyTorch module as it is."""

    name, devices = "eager", ("cpu", "cuda")
    description = "the PyTorch module as it is (the default everywhere)"

    def build(self, model, inputs, threads):
        """The module itself."""
        return model


class CudaGraph(Runtime):
    """One CUDA graph per model, replayed (``grain_bench.prepared.CudaGraphModel``)."""

    name, devices = "cuda_graph", ("cuda",)
    description = "each model captured as one CUDA graph on its own static inputs and replayed"

    def build(self, model, inputs, threads):
        """The captured graph of the model in the GPU layout."""
        from grain_bench.prepared import CudaGraphModel, gpu_layout

        return CudaGraphModel(gpu_layout(model), inputs)


class Compile(Runtime):
    """``torch.compile`` for inference with static shapes."""

    name, devices = "compile", ("cpu", "cuda")
    description = "torch.compile with static shapes (CPU: freezing, C++ wrapper, written-out attention; CUDA: " \
                  "max-autotune without CUDA graphs)"

    def build(self, model, inputs, threads):
        """The compiled model (compiled on its first call)."""
        import torch

        from grain_bench.prepared import for_compile, gpu_layout

        allow_recompiles()  # every model of a side-by-side run is compiled in one process
        device = next(model.parameters()).device
        if device.type == "cuda":
            compiled = torch.compile(gpu_layout(model), mode="max-autotune-no-cudagraphs", dynamic=False)
        else:
            compiled = torch.compile(for_compile(model), dynamic=False, options=compile_options(device))
        with compile_budget(compile_budget_s()), torch.inference_mode():  # the first call compiles
            compiled(**inputs)
        return compiled


class Aoti(Runtime):
    """AOTInductor: exported and compiled ahead of time (``grain_bench.prepared.AotiModel``)."""

    name = "aoti"
    description = "torch.export with dynamic batch and length, compiled ahead of time by AOTInductor"

    def build(self, model, inputs, threads):
        """The compiled package."""
        from grain_bench.prepared import AotiModel

        return AotiModel(model, inputs)


class Ragged(Runtime):
    """The ragged-width attention kernel (``grain_bench.ragged.RaggedModel``)."""

    name = "ragged"
    description = "every head of a layer at its own widths in one C kernel call (CPU, fp32)"

    def check(self) -> None:
        """The kernel's cache setting (``GRAIN_BENCH_KERNEL_CACHE``) must be usable, checked without building."""
        from grain_bench.kernel_cache import check_kernel_cache_setting

        check_kernel_cache_setting()

    def build(self, model, inputs, threads):
        """The eager model with its attention on the kernel."""
        from grain_bench.ragged import RaggedModel

        return RaggedModel(model)


class Onnx(Runtime):
    """ONNX Runtime's CPU provider (``grain_bench.prepared.OnnxModel``)."""

    name = "onnx"
    description = "exported to ONNX and run by ONNX Runtime (needs the onnx extra)"

    def check(self) -> None:
        """onnx, onnxscript and onnxruntime must be installed."""
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
            import onnxscript  # noqa: F401
        except ImportError:
            raise UsageError("the onnx runtime needs onnx, onnxscript and onnxruntime: pip install onnx onnxscript "
                             "onnxruntime (the 'onnx' extra of grain-bench)") from None

    def build(self, model, inputs, threads):
        """The ONNX Runtime session."""
        from grain_bench.prepared import OnnxModel

        return OnnxModel(model, inputs, threads)


@hookimpl
def register_runtimes(register):
    """The built-in runtimes (in the order listings show them)."""
    for runtime in (Eager(), CudaGraph(), Compile(), Aoti(), Ragged(), Onnx()):
        register(runtime)


def _registries(regs):
    if regs is None:
        from grain_bench.plugins import get_registries

        regs = get_registries()
    return regs


def runtime_names(device: str = "cpu", regs=None) -> list[str]:
    """The registered runtimes that run on ``device`` (a device name such as ``cpu`` or ``cuda:1``)."""
    kind = device.split(":")[0]
    return [name for name, entry in _registries(regs).runtimes.entries.items() if kind in entry.obj.devices]


def get_runtime(name: str, device: str = "cpu", regs=None, what: str = "runtime") -> Runtime:
    """The registered runtime ``name`` that runs on ``device``; ``UsageError`` naming the runtimes of that device
    (``what`` says what was given, e.g. ``--mode``)."""
    regs = _registries(regs)
    names = runtime_names(device, regs)
    if name not in regs.runtimes or regs.runtimes.entry(name).name not in names:
        raise UsageError(f"{what} {name!r} is not one of {', '.join(names)} on {device!r}")
    return regs.runtimes.get(name)


def prepare(model, runtime: str, inputs: dict, threads: int | None = None, check: bool = True, regs=None) -> Any:
    """``model`` (eval mode) under the runtime named ``runtime`` on its device, warmed up and checked against the
    eager model on ``inputs`` (the shapes it will see: ``compile`` specialises on them, ``onnx`` exports with them)."""
    device = next(model.parameters()).device.type
    return get_runtime(runtime, device, regs).prepare(model, inputs, threads, check)


def example_inputs(config, device="cpu", batch: int = 2, length: int = 16, seed: int = 0) -> dict:
    """Random token ids of the given shape, a full attention mask and zero token types: what ``prepare`` needs when
    the caller has no inputs of its own, and what latency is timed on (it does not depend on the values)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, config.vocab_size, (batch, length), generator=generator)
    return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device),
            "token_type_ids": torch.zeros_like(ids).to(device)}


def allow_recompiles() -> None:
    """Raise torch._dynamo's recompile limits to ``RECOMPILE_LIMIT``: dynamo traces each compact model (and each input
    shape) as a recompilation of the same forward code, and past ``recompile_limit`` (8) it runs every further model
    eagerly without a word (the outputs are unchanged, so no equivalence check notices)."""
    import torch

    config = torch._dynamo.config
    config.recompile_limit = max(config.recompile_limit, RECOMPILE_LIMIT)
    config.accumulated_recompile_limit = max(config.accumulated_recompile_limit, 4 * RECOMPILE_LIMIT)


def compile_options(device) -> dict[str, Any]:
    """Inductor options of the ``compile`` runtime: freezing; on CPU also the C++ wrapper (GRAIN's 5% model at batch
    1 x 64: 2.9 ms against 3.5 ms with the Python wrapper, level at batch 32; compiling takes 30-60% longer)."""
    return {"freezing": True, **({"cpp_wrapper": True} if device.type == "cpu" else {})}


#: seconds the ``compile`` runtime's first call (the compilation) may take unless ``GRAIN_BENCH_COMPILE_BUDGET_S``
#: says otherwise; past it the model is "not compiled in N s" (``CompileTimeout``) instead of a run that hangs
COMPILE_BUDGET_S = 600.0
COMPILE_BUDGET_ENV = "GRAIN_BENCH_COMPILE_BUDGET_S"


def compile_budget_s() -> float:
    """The compile budget in seconds, read when a model is compiled (``UsageError`` for a value that is no number)."""
    value = os.environ.get(COMPILE_BUDGET_ENV)
    if value is None:
        return COMPILE_BUDGET_S
    try:
        return float(value)
    except ValueError:
        raise UsageError(f"{COMPILE_BUDGET_ENV}={value!r} is not a number of seconds") from None


class CompileTimeout(GrainBenchError):
    """A model that ``torch.compile`` did not compile within its budget."""


@contextlib.contextmanager
def compile_budget(seconds: float) -> Iterator[None]:
    """Raise ``CompileTimeout`` ("not compiled in N s") when the block runs past ``seconds``: a SIGALRM in the main
    thread, where inductor's compilation (Python, and its worker processes' results) is interrupted at its next
    bytecode. Elsewhere (another thread, no SIGALRM) the block runs without a limit."""
    usable = (seconds > 0 and hasattr(signal, "setitimer")
              and threading.current_thread() is threading.main_thread())
    if not usable:
        yield
        return

    def expired(signum, frame):
        raise CompileTimeout(f"not compiled in {seconds:g} s ({COMPILE_BUDGET_ENV})")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def check_equivalent(prepared, model, inputs: dict, runtime: str = "") -> float:
    """Largest output difference of ``prepared`` against the eager ``model``; ``GrainBenchError`` over ``TOLERANCE``."""
    import torch

    from grain_bench.prepared import head_outputs

    with torch.inference_mode():
        expected, got = head_outputs(model(**inputs)), head_outputs(prepared(**inputs))
    if set(got) != set(expected):
        raise GrainBenchError(f"runtime {runtime!r} returned {sorted(got)}, the model {sorted(expected)}")
    worst = max(float((got[name].float() - expected[name].float()).abs().max()) for name in expected)
    if not worst <= TOLERANCE:
        raise GrainBenchError(f"runtime {runtime!r} does not reproduce the model: outputs differ by up to {worst:.3g} "
                              f"(tolerance {TOLERANCE:g})")
    return worst
