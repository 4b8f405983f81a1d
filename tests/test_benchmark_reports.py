"""The committed latency tables are printed from the committed JSON reports, not typed by hand."""

from __future__ import annotations

import importlib.util
import json
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")


def _script(name: str):
    """A module of benchmarks/ loaded from its file (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "benchmarks", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_real_mask_tables_match_their_reports_and_the_committed_page():
    tables = _script("real_mask_tables")
    page = open(os.path.join(RESULTS, "latency-real-masks.md")).read()
    for batch, variant in ((32, ""), (1, ""), (1, "calls20")):
        text = tables.table(RESULTS, batch, variant)
        assert text and text in page  # the page shows exactly what the reports say
        name = f"latency-real-masks-b{batch}-{variant + '-' if variant else ''}eager.json"
        with open(os.path.join(RESULTS, name)) as handle:
            results = json.load(handle)["results"]
        masks = [label for label in results if label != "dense" and ":" not in label and " [" not in label]
        rows = [line for line in text.splitlines() if line.startswith("| ") and " @ " in line]
        assert len(rows) == len(masks) and masks
        for label, line in zip(masks, rows):
            row = results[label]
            assert line.startswith(f"| {label.replace('@', ' @ ')} | {row['heads']} |")
            assert f"{row['speedup_vs_dense']:.2f}x" in line and f"{row['no_attention_speedup']:.2f}x" in line
            for runtime in tables.RUNTIMES:  # each runtime's column comes from its own process's report
                other = os.path.join(RESULTS, name.replace("eager.json", f"eager-{runtime}.json"))
                if not os.path.exists(other):
                    continue
                with open(other) as handle:
                    prepared = json.load(handle)["results"].get(f"{label} [{runtime}]")
                if prepared:
                    assert f"{prepared['speedup_vs_dense']:.2f}x ({prepared['speedup_q1_q3'][0]:.1f}-" in line
    assert tables.table(os.path.join(RESULTS, "no-such-dir"), 32) == ""


def test_twin_report_pairs_rounds_and_matches_the_page():
    module = _script("bench_twins")
    # Paired by round: a model always 10% slower than its twin gives 1.1 however much the rounds drift.
    twin = [10.0, 20.0, 15.0, 40.0, 12.0]
    result = module.paired_ratio([1.1 * t for t in twin], twin)
    assert abs(result["median_ratio"] - 1.1) < 1e-12 and all(abs(x - 1.1) < 1e-12 for x in result["ci95"])
    tables = _script("real_mask_tables")
    page = open(os.path.join(RESULTS, "latency-real-masks.md")).read()
    text = tables.twins_table(RESULTS)
    assert text and text in page
    for name in ("twins", "twins-ragged"):  # the compact models eager, then under the ragged runtime
        with open(os.path.join(RESULTS, f"latency-real-masks-b32-{name}.json")) as handle:
            rows = json.load(handle)["results"]
        for label, row in rows.items():
            low, high = row["ci95"]
            assert low <= row["median_ratio"] <= high
            line = next(line for line in text.splitlines() if line.startswith(f"| {label.replace('@', ' @ ')} |"))
            assert (f"{row['median_ms']:.1f} | {row['twin_median_ms']:.1f} | {row['median_ratio']:.3f} "
                    f"[{low:.3f}, {high:.3f}]") in line


def test_runtime_pairs_come_from_one_process_and_match_the_page():
    """The ragged runtime beside eager: both columns of a row from the same report (the same process's rounds)."""
    tables = _script("real_mask_tables")
    page = open(os.path.join(RESULTS, "latency-real-masks.md")).read()
    text = tables.runtime_pairs(RESULTS)
    assert text and text in page
    with open(os.path.join(RESULTS, "latency-real-masks-b32-eager-ragged.json")) as handle:
        results = json.load(handle)["results"]
    row, prepared = results["grain@0.05"], results["grain@0.05 [ragged]"]
    assert (f"| grain @ 0.05 | 32 | {row['median_ms']:.2f} ({row['speedup_vs_dense']:.2f}x) | "
            f"{prepared['median_ms']:.2f} ({prepared['speedup_vs_dense']:.2f}x) | "
            f"{row['median_ms'] / prepared['median_ms']:.2f} |") in text
    assert tables.runtime_pairs(os.path.join(RESULTS, "no-such-dir")) == ""
