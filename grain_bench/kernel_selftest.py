"""The ragged kernel's self-test, run as a script in a child process (``python -I -S kernel_selftest.py KERNEL``) by
``grain_bench.kernel_cache`` before a kernel is trusted: it loads the compiled kernel and checks one small attention
call against a pure-Python reference, so a kernel that crashes (a truncated file: SIGBUS; damaged code: SIGILL),
does not load or computes wrong numbers takes down the child, never the caller. Standard library only (no torch, no
grain_bench imports): it runs in milliseconds. Exit 0: passed; 1: wrong numbers; 2: it does not load; a signal: it
crashed."""

from __future__ import annotations

import ctypes
import math
import sys

#: heads across both lane blocks of 16 queries and the 4-key tiles: a head without query units, one unit wide, wide
QK_DIMS, VO_DIMS = (5, 0, 1, 17), (7, 4, 1, 2)
BATCH, LENGTH, SCALE, TOLERANCE = 2, 18, 0.3, 1e-4
MASKED_KEYS = 5  # the second sequence's last keys are padding
I64P, F32P = ctypes.POINTER(ctypes.c_int64), ctypes.POINTER(ctypes.c_float)


def _inputs() -> tuple[list[float], list[float]]:
    """Deterministic qkv values in [-1, 1] and the additive padding mask [batch, 1, 1, length]."""
    channels = 2 * sum(QK_DIMS) + sum(VO_DIMS)
    qkv = [math.sin(0.37 * i + 0.1) for i in range(BATCH * LENGTH * channels)]
    mask = [-1e30 if b == 1 and j >= LENGTH - MASKED_KEYS else 0.0 for b in range(BATCH) for j in range(LENGTH)]
    return qkv, mask


def reference(qkv: list[float], mask: list[float]) -> list[float]:
    """Per-head softmax(scale q k^T + mask) v, the contexts [batch, length, sum(VO_DIMS)] packed head by head."""
    cq, cv = sum(QK_DIMS), sum(VO_DIMS)
    channels = 2 * cq + cv
    out: list[float] = []
    for b in range(BATCH):
        rows = [qkv[(b * LENGTH + i) * channels:(b * LENGTH + i + 1) * channels] for i in range(LENGTH)]
        for i in range(LENGTH):
            q_start, v_start = 0, 2 * cq
            for qk, vo in zip(QK_DIMS, VO_DIMS):
                scores = [SCALE * sum(rows[i][q_start + c] * rows[j][cq + q_start + c] for c in range(qk))
                          + mask[b * LENGTH + j] for j in range(LENGTH)]
                top = max(scores)
                weights = [math.exp(s - top) for s in scores]
                total = sum(weights)
                out.extend(sum(w * rows[j][v_start + c] for j, w in enumerate(weights)) / total for c in range(vo))
                q_start, v_start = q_start + qk, v_start + vo
    return out


def run_kernel(path: str, qkv: list[float], mask: list[float]) -> list[float]:
    """The kernel's contexts for the same inputs (one thread)."""
    function = ctypes.CDLL(path).grain_ragged_attention
    function.restype = ctypes.c_int
    function.argtypes = [F32P, *[ctypes.c_int64] * 4, F32P, *[ctypes.c_int64] * 3, ctypes.c_int64, *[I64P] * 4,
                         ctypes.c_int64, ctypes.c_int64, ctypes.c_float, F32P, ctypes.c_int]
    heads, cq, cv = len(QK_DIMS), sum(QK_DIMS), sum(VO_DIMS)
    qoff = [sum(QK_DIMS[:h]) for h in range(heads)]
    voff = [sum(VO_DIMS[:h]) for h in range(heads)]
    arrays = [(ctypes.c_int64 * heads)(*values) for values in (qoff, QK_DIMS, voff, VO_DIMS)]
    qkv_array, mask_array = (ctypes.c_float * len(qkv))(*qkv), (ctypes.c_float * len(mask))(*mask)
    out = (ctypes.c_float * (BATCH * LENGTH * cv))()
    channels = 2 * cq + cv
    failed = function(qkv_array, BATCH, LENGTH, LENGTH * channels, channels, mask_array, LENGTH, 0, 1, heads,
                      *arrays, cq, cv, SCALE, out, 1)
    if failed:
        raise MemoryError("the kernel could not allocate its scratch memory")
    return list(out)


def main(argv: list[str]) -> int:
    """Check the kernel at ``argv[1]``; print one line on failure."""
    qkv, mask = _inputs()
    try:
        got = run_kernel(argv[1], qkv, mask)
    except (OSError, AttributeError, MemoryError) as exc:
        print(f"does not load ({exc})")
        return 2
    expected = reference(qkv, mask)
    error = max((abs(a - b) for a, b in zip(got, expected)), default=math.inf)
    if not error <= TOLERANCE:
        print(f"computes wrong attention (largest error {error:.3g}, more than {TOLERANCE:g})")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
