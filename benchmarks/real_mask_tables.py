"""The tables of ``benchmarks/results/latency-real-masks.md`` from the JSON reports of ``bench_latency.py --masks``.

    python benchmarks/real_mask_tables.py [benchmarks/results]

Reads ``latency-real-masks-b<B>-eager.json`` and ``latency-real-masks-b<B>-eager-<runtime>.json`` (compile, aoti) for
B = 32 and 1 (and ``b1-calls20``: batch 1 with 20 calls back to back per model and round, ``bench_latency.py --calls
20``) and prints one markdown table per batch size: every method's own mask and ablation with its speedup over the
dense eager model of the same process (quartiles of the per-round ratios, then its median), beside its stock twins
and its no-attention ceiling (the same FFN widths without any head: what the mask would reach if attention cost
nothing).
"""

from __future__ import annotations

import json
import os
import sys


def _load(directory: str, batch: int, runtimes: str) -> dict | None:
    path = os.path.join(directory, f"latency-real-masks-b{batch}-{runtimes}.json")
    if not os.path.exists(path):
        return None
    with open(path) as handle:
        return json.load(handle)


def _cell(row: dict | None) -> str:
    if not row:
        return "-"
    q1, q3 = row["speedup_q1_q3"]
    return f"{row['speedup_vs_dense']:.2f}x ({q1:.1f}-{q3:.1f}); {row['median_ms']:.1f} ms"


def _speedup(row: dict | None, key: str = "speedup_vs_dense") -> str:
    return f"{row[key]:.2f}x" if row and row.get(key) is not None else "-"


#: runtimes beside eager, each timed in its own process (``latency-real-masks-b<B>-eager-<runtime>.json``)
RUNTIMES = ("compile", "aoti")


def table(directory: str, batch: int, variant: str = "") -> str:
    """One batch size's table (markdown), or an empty string when its eager report is missing. ``variant`` is a
    file-name tag after the batch size (``calls20``)."""
    prefix = f"{variant}-" if variant else ""
    eager = _load(directory, batch, f"{prefix}eager")
    if eager is None:
        return ""
    others = {runtime: _load(directory, batch, f"{prefix}eager-{runtime}") or {"results": {}} for runtime in RUNTIMES}
    calls = eager["settings"].get("calls", 1)
    rows, results = [], eager["results"]
    dense = results["dense"]["median_ms"]
    processes = "".join(f", {report['results']['dense']['median_ms']:.1f} ms ({runtime} process)"
                        for runtime, report in others.items() if "dense" in report["results"])
    lines = [f"## Batch {batch} x {eager['settings']['seq_len']}"
             + (f", {calls} calls back to back per model and round" if calls > 1 else "")
             + f": dense eager {dense:.1f} ms (eager-only process){processes}",
             "",
             f"| mask | heads | distinct widths | FLOPs-predicted | eager | {' | '.join(RUNTIMES)} | "
             f"twin-heads (eager) | twin-64 (eager) | no-attention ceiling (eager / {' / '.join(RUNTIMES)}) |",
             "|---|---|---|---|---|" + "---|" * len(RUNTIMES) + "---|---|---|"]
    for label, row in results.items():
        if label == "dense" or ":" in label or " [" in label:
            continue
        runtime_rows = [others[runtime]["results"].get(f"{label} [{runtime}]") for runtime in RUNTIMES]
        ceiling = " / ".join(_speedup(r, "no_attention_speedup") for r in [row, *runtime_rows])
        rows.append(f"| {label.replace('@', ' @ ')} | {row['heads']} | {row['distinct_head_widths']} | "
                    f"{row['flops_predicted_speedup']:.1f}x | {_cell(row)} | "
                    f"{' | '.join(_cell(r) for r in runtime_rows)} | "
                    f"{_speedup(row, 'twin-heads_speedup')} | {_speedup(row, 'twin-64_speedup')} | {ceiling} |")
    return "\n".join(lines + rows) + "\n"


def main(argv=None) -> int:
    """Print the tables for batch 32 and batch 1."""
    argv = sys.argv[1:] if argv is None else argv
    directory = argv[0] if argv else os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    print("\n".join(filter(None, (table(directory, batch, variant)
                                   for batch, variant in ((32, ""), (1, ""), (1, "calls20"))))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
