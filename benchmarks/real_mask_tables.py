"""The tables of ``benchmarks/results/latency-real-masks.md`` from the JSON reports of ``bench_latency.py --masks``.

    python benchmarks/real_mask_tables.py [benchmarks/results]

Reads ``latency-real-masks-b<B>-eager.json`` and ``latency-real-masks-b<B>-eager-<runtime>.json`` (compile, aoti,
ragged) for B = 32 and 1 (and ``b1-calls20``: batch 1 with 20 calls back to back per model and round,
``bench_latency.py --calls 20``) and prints one markdown table per batch size: every method's own mask and ablation
with its speedup over the dense eager model of the same process (quartiles of the per-round ratios, then its median),
beside its stock twins and its no-attention ceiling (the same FFN widths without any head: what the mask would reach
if attention cost nothing).
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
RUNTIMES = ("compile", "aoti", "ragged")


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


#: (batch, file-name tag) of every table
BATCHES = ((32, ""), (1, ""), (1, "calls20"))


def runtime_pairs(directory: str, runtime: str = "ragged") -> str:
    """Each method mask's eager model beside the same model under ``runtime``, both timed in the runtime's process
    (``latency-real-masks-b<B>-eager-<runtime>.json``): the side-by-side comparison of the two. Empty without
    reports."""
    lines = []
    for batch, variant in BATCHES:
        report = _load(directory, batch, f"{variant + '-' if variant else ''}eager-{runtime}")
        if report is None:
            continue
        results = report["results"]
        for label, row in results.items():
            prepared = results.get(f"{label} [{runtime}]")
            if ":" in label or " [" in label or label == "dense" or not prepared:
                continue
            lines.append(f"| {label.replace('@', ' @ ')} | {batch}{' (20 calls)' if variant else ''} | "
                         f"{row['median_ms']:.2f} ({row['speedup_vs_dense']:.2f}x) | "
                         f"{prepared['median_ms']:.2f} ({prepared['speedup_vs_dense']:.2f}x) | "
                         f"{row['median_ms'] / prepared['median_ms']:.2f} |")
    if not lines:
        return ""
    return "\n".join([f"| mask | batch | eager, ms (speedup) | {runtime}, ms (speedup) | eager / {runtime} |",
                      "|---|---|---|---|---|", *lines]) + "\n"


def twins_table(directory: str, runtimes=("eager", "ragged")) -> str:
    """``bench_twins.py``'s paired ratios, one column group per runtime of the compact models
    (``latency-real-masks-b32-twins[-<runtime>].json``); above 1 the compact model is slower than its twin."""
    reports = {}
    for runtime in runtimes:
        report = _load(directory, 32, "twins" if runtime == "eager" else f"twins-{runtime}")
        if report is not None:
            reports[runtime] = report["results"]
    if not reports:
        return ""
    header = "| mask | " + " | ".join(f"{runtime} (ms) | twin-heads (ms) | {runtime} / twin [95% interval]"
                                     for runtime in reports) + " |"
    lines = [header, "|---|" + "---|---|---|" * len(reports)]
    for label in next(iter(reports.values())):
        cells = []
        for rows in reports.values():
            row = rows.get(label)
            cells.append("- | - | -" if row is None else
                         f"{row['median_ms']:.1f} | {row['twin_median_ms']:.1f} | {row['median_ratio']:.3f} "
                         f"[{row['ci95'][0]:.3f}, {row['ci95'][1]:.3f}]")
        lines.append(f"| {label.replace('@', ' @ ')} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    """Print the tables for batch 32 and batch 1, the ragged runtime beside eager, and the paired twin ratios."""
    argv = sys.argv[1:] if argv is None else argv
    directory = argv[0] if argv else os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    print("\n".join(filter(None, (*(table(directory, batch, variant) for batch, variant in BATCHES),
                                   runtime_pairs(directory), twins_table(directory)))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
