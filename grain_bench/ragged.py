"""The ragged-width attention kernel (``kernels/ragged_attention.c``): one call per layer over heads of unequal widths,
for the compact model's CPU inference in fp32. The ``ragged`` runtime (``grain_bench.runtimes``) uses it, through
``use_kernel``, which hands one compact attention block's inference to a kernel (``RaggedAttention``).

The kernel is plain C with OpenMP. It is built on first use with the system's C compiler (``$CC``, else ``cc``, with
``-O3 -march=native -fopenmp``) into a cache folder (``$GRAIN_BENCH_KERNEL_CACHE``, else
``~/.cache/grain-bench/kernels``), self-tested and verified before it is loaded with ctypes
(``grain_bench.kernel_cache``). A build takes about a second; no PyTorch headers or build tools beyond the compiler are
involved.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

import torch
from torch.nn import functional as F

from grain_bench.errors import GrainBenchError
from grain_bench.kernel_cache import build, cache_dir, check_kernel_cache_setting
from grain_bench.modeling_pruned_bert import (
    ALIGN,
    BUCKET_CALL_COST,
    PrunedBertAttention,
    _is_exporting,
    _PaddedWeights,
    _residual_linear,
    _round_up,
)

__all__ = ["RAGGED_MAX_WIDTH", "RaggedAttention", "RaggedLayout", "RaggedModel", "build", "cache_dir",
           "check_kernel_cache_setting", "kernel_of", "library", "use_kernel"]

_LIBRARY: ctypes.CDLL | None = None
_I64P = ctypes.POINTER(ctypes.c_int64)
_F32P = ctypes.POINTER(ctypes.c_float)


def library() -> ctypes.CDLL:
    """The loaded kernel (built on first use; a cached one only once its bytes are verified)."""
    global _LIBRARY
    if _LIBRARY is None:
        path = build()
        try:
            loaded = ctypes.CDLL(path)
            function = loaded.grain_ragged_attention
        except (OSError, AttributeError) as exc:
            raise GrainBenchError(f"the ragged kernel {path} passed its checks but does not load in this process "
                                  f"({exc}): delete it to build it again, or use another runtime") from None
        function.restype = ctypes.c_int
        function.argtypes = [_F32P, *[ctypes.c_int64] * 4, _F32P, *[ctypes.c_int64] * 3, ctypes.c_int64,
                             *[_I64P] * 4, ctypes.c_int64, ctypes.c_int64, ctypes.c_float, _F32P, ctypes.c_int]
        _LIBRARY = loaded
    return _LIBRARY


class RaggedLayout:
    """A layer's heads as the kernel reads them: query/key widths ``qk_dims`` and value widths ``vo_dims``, packed head
    by head in the exact QKV GEMM's output (queries, then keys, then values) and in W_O's columns."""

    def __init__(self, qk_dims, vo_dims):
        self.heads = len(qk_dims)
        self.qk_total, self.vo_total = int(sum(qk_dims)), int(sum(vo_dims))
        offsets = [0, 0]
        arrays = {name: (ctypes.c_int64 * self.heads)() for name in ("qoff", "qdim", "voff", "vdim")}
        for h, (qk, vo) in enumerate(zip(qk_dims, vo_dims)):
            arrays["qoff"][h], arrays["qdim"][h], arrays["voff"][h], arrays["vdim"][h] = offsets[0], qk, offsets[1], vo
            offsets[0] += int(qk)
            offsets[1] += int(vo)
        self.arrays = arrays  # kept alive with the layout: the kernel reads them through pointers

    def __call__(self, qkv: torch.Tensor, attention_mask: torch.Tensor | None, scale: float) -> torch.Tensor:
        """Context [batch, length, vo_total] of ``qkv`` [batch, length, channels] (fp32, CPU; the packed queries,
        keys and values, then any unused channels), with SDPA's additive ``attention_mask`` ([batch or 1, 1, 1 or
        length, length]) or None."""
        batch, length, channels = qkv.shape
        if qkv.dtype != torch.float32 or qkv.device.type != "cpu" or channels < 2 * self.qk_total + self.vo_total:
            raise GrainBenchError(f"ragged attention takes fp32 CPU inputs with at least "
                                  f"{2 * self.qk_total + self.vo_total} channels, got {qkv.dtype} on {qkv.device} "
                                  f"with {channels}")
        if attention_mask is not None and not attention_mask.is_floating_point():
            raise GrainBenchError(f"ragged attention takes an additive float mask (0 = attend, a large negative number "
                                  f"= masked), got {attention_mask.dtype}")
        if qkv.stride(2) != 1:
            qkv = qkv.contiguous()
        mask_pointer, strides = None, [0, 0, 0]
        if attention_mask is not None:
            mask = attention_mask.to(torch.float32)
            if mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[3] != length or mask.shape[2] not in (1, length) \
                    or mask.shape[0] not in (1, batch):
                raise GrainBenchError(f"ragged attention takes an additive mask [batch, 1, 1 or {length}, {length}], "
                                      f"got {list(mask.shape)}")
            strides = [0 if mask.shape[dim] == 1 else mask.stride(dim) for dim in (0, 2, 3)]
            mask_pointer = ctypes.cast(mask.data_ptr(), _F32P)
        out = qkv.new_empty(batch, length, self.vo_total)
        a = self.arrays
        failed = library().grain_ragged_attention(
            ctypes.cast(qkv.data_ptr(), _F32P), batch, length, qkv.stride(0), qkv.stride(1), mask_pointer, *strides,
            self.heads, a["qoff"], a["qdim"], a["voff"], a["vdim"], self.qk_total, self.vo_total, float(scale),
            ctypes.cast(out.data_ptr(), _F32P), torch.get_num_threads())
        if failed:
            raise MemoryError("ragged attention could not allocate its scratch memory")
        return out


class RaggedAttention(PrunedBertAttention):
    """A compact attention block whose inference hands its attention to ``kernel`` (``use_kernel`` makes a block one,
    and back). Training, gradients and compilers keep the bucket layout."""

    kernel: Callable[[torch.Tensor, torch.Tensor | None, float], torch.Tensor]

    def set_layout(self, call_cost: float = BUCKET_CALL_COST, align: int = ALIGN, width_multiple: int = 1) -> None:
        """``PrunedBertAttention.set_layout``, and a fresh cache of the kernel's GEMM weights."""
        super().set_layout(call_cost, align, width_multiple)
        self._kernel_weights = _PaddedWeights()

    def _exact_weights(self):
        """(W_qkv, b_qkv) with zero rows up to a multiple of ``align``: the kernel's GEMM."""
        params = self.qkv.weight, self.qkv.bias
        extra = _round_up(len(params[0]), self.align) - len(params[0])
        if not extra:
            return params
        return self._kernel_weights.get(params, lambda: (F.pad(params[0], (0, 0, 0, extra)),
                                                         F.pad(params[1], (0, extra))))

    def forward(self, hidden_states, attention_mask=None):
        """The kernel's attention without gradients (not compiled or exported); the bucket layout otherwise."""
        if self.training or torch.is_grad_enabled() or torch.compiler.is_compiling() or _is_exporting():
            return super().forward(hidden_states, attention_mask)
        context = self.kernel(F.linear(hidden_states, *self._exact_weights()), attention_mask, self.scaling)
        return self.LayerNorm(_residual_linear(context, self.dense.weight, self.dense.bias, hidden_states,
                                               self.hidden_dropout))


def use_kernel(block: PrunedBertAttention, kernel=None) -> None:
    """Inference only: compute ``block``'s attention with ``kernel(qkv, attention_mask, scale)``, where ``qkv`` is the
    exact QKV GEMM's output [batch, length, channels] (the kept query rows, key rows and value rows, head by head, then
    zero channels up to a multiple of ``ALIGN``) and the result is the contexts [batch, length, vo_total] in W_O's
    column order: one call for all heads at their own widths, no buckets and no padding (``RaggedLayout`` is such a
    kernel). Only this block changes; a block without heads has no attention to hand over and stays as it is. No
    kernel: back to the plain block."""
    if kernel is None:
        if isinstance(block, RaggedAttention):
            block.__class__ = PrunedBertAttention  # type: ignore[assignment]  # back to the plain block
            del block.kernel, block._kernel_weights
        return
    if type(block) not in (PrunedBertAttention, RaggedAttention):
        raise GrainBenchError(f"use_kernel takes a plain PrunedBertAttention block, got {type(block).__name__}")
    if not block.num_heads:
        return
    block.__class__ = RaggedAttention
    block.kernel = kernel
    block._kernel_weights = _PaddedWeights()  # type: ignore[assignment]  # a cache, not a parameter


def kernel_of(block) -> Callable | None:
    """The kernel ``block`` runs its inference with (``use_kernel``), or None."""
    return block.kernel if isinstance(block, RaggedAttention) else None


#: the ``ragged`` runtime's kernel runs a layer whose heads are all at most this wide (query/key or value units); wider
#: heads keep the bucket layout. Per (sequence, head) at 64 tokens and batch 32 on the 2-core CPU of
#: docs/compact-and-latency.md, the kernel was 1.35-1.8x faster than PyTorch's fused attention up to 13 units, level at
#: 32 and 11% slower at 64 (benchmarks/results/ragged-kernel.json); in whole MiniLM models (32-unit heads) GRAIN's
#: masks ran 7-37% faster with it and whole-head masks level (benchmarks/results/latency-real-masks.md). BERT-base's
#: 64-unit heads keep the buckets.
RAGGED_MAX_WIDTH = 32


class RaggedModel:
    """The eager module with every compact attention block on the ragged kernel (``grain_bench.ragged.use_kernel``),
    called under ``torch.inference_mode``. The module is a copy that shares the parameters: the model it came from
    keeps its own attention."""

    def __init__(self, model):
        from grain_bench.prepared import sharing_copy

        reference = next(model.parameters())
        if reference.device.type != "cpu" or reference.dtype != torch.float32:
            raise GrainBenchError(f"the ragged runtime runs fp32 models on the CPU; this one is {reference.dtype} on "
                                  f"{reference.device}")
        library()  # built (or found in the cache) now, so that a missing compiler is an error here
        self.model = sharing_copy(model)
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
