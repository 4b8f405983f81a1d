"""The ragged-width attention kernel against PyTorch's fused attention (SDPA), per (sequence, head), at equal widths.

    python benchmarks/bench_ragged_kernel.py [--rounds 41] [--out benchmarks/results/ragged-kernel.json]

For each head width (query/key = value width) and batch, H heads of that width over 64 tokens with a padding mask:
SDPA on [batch, H, 64, width] tensors (what one bucket of the compact model's default layout calls) and
``grain_bench.ragged.RaggedLayout`` on the packed [batch, 64, 3 H width] GEMM output (what the ``ragged`` runtime
calls), both checked equal first, then timed alternately in one process (2 threads, median over rounds of 20 calls
each). A row gives microseconds per (sequence, head) and SDPA's time over the kernel's (above 1: the kernel is faster).
This is what ``grain_bench.ragged.RAGGED_MAX_WIDTH`` rests on; whole models are in ``latency-real-masks.md``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from bench_latency import THREADS, allocator, machine, write_report  # noqa: E402

CASES = ((32, 5, 1), (32, 5, 5), (32, 4, 13), (32, 3, 32), (32, 12, 32), (32, 5, 64), (1, 5, 5), (1, 4, 13),
         (1, 3, 32), (1, 5, 64))  # (batch, heads, width)
LENGTH, CALLS = 64, 20


def _timed(function) -> float:
    started = time.perf_counter()
    for _ in range(CALLS):
        function()
    return (time.perf_counter() - started) / CALLS


def main(argv=None) -> int:
    """Time every case; print a table and optionally write the JSON report."""
    from grain_bench.measure import torch_threads
    from grain_bench.ragged import RaggedLayout

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=41)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    malloc = allocator("tuned", argv, script=__file__)
    generator = torch.Generator().manual_seed(0)
    rows = []
    with torch_threads(THREADS), torch.inference_mode():
        for batch, heads, width in CASES:
            q, k, v = (torch.randn(batch, heads, LENGTH, width, generator=generator) for _ in range(3))
            mask = torch.zeros(batch, 1, 1, LENGTH)
            mask[0, ..., LENGTH // 2:] = torch.finfo(torch.float32).min
            packed = torch.cat([t.transpose(1, 2).reshape(batch, LENGTH, heads * width) for t in (q, k, v)], dim=-1)
            layout = RaggedLayout([width] * heads, [width] * heads)
            scale = 32 ** -0.5

            def sdpa(q=q, k=k, v=v, mask=mask, scale=scale):
                return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)

            def ragged(packed=packed, mask=mask, scale=scale, layout=layout):
                return layout(packed, mask, scale)

            expected = sdpa().transpose(1, 2).reshape(batch, LENGTH, heads * width)
            gap = float((ragged() - expected).abs().max())
            if gap > 1e-4:
                raise SystemExit(f"batch {batch}, {heads} heads of width {width}: the kernel differs by {gap:.2e}")
            times: dict[str, list[float]] = {"sdpa": [], "ragged": []}
            for name in times:
                _timed(sdpa if name == "sdpa" else ragged)  # warm-up
            for round_index in range(args.rounds):
                for name in (("sdpa", "ragged") if round_index % 2 else ("ragged", "sdpa")):
                    times[name].append(_timed(sdpa if name == "sdpa" else ragged))
            pairs = batch * heads
            row = {"batch": batch, "heads": heads, "width": width, "length": LENGTH,
                   "sdpa_us_per_pair": statistics.median(times["sdpa"]) * 1e6 / pairs,
                   "ragged_us_per_pair": statistics.median(times["ragged"]) * 1e6 / pairs,
                   "sdpa_over_ragged": statistics.median(a / b for a, b in zip(times["sdpa"], times["ragged"]))}
            rows.append(row)
            print(f"batch {batch:2d}, {heads:2d} heads of width {width:2d}: SDPA {row['sdpa_us_per_pair']:6.2f} us, "
                  f"ragged {row['ragged_us_per_pair']:6.2f} us per (sequence, head); SDPA / ragged "
                  f"{row['sdpa_over_ragged']:.2f}", flush=True)
    report = {"machine": machine(), "command": " ".join(["python benchmarks/bench_ragged_kernel.py", *sys.argv[1:]]),
              "settings": {"length": LENGTH, "threads": THREADS, "rounds": args.rounds, "calls_per_round": CALLS,
                           "malloc": malloc}, "results": rows}
    write_report(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
