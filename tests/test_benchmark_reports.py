"""The committed latency tables are printed from the committed JSON reports, not typed by hand."""

from __future__ import annotations

import importlib.util
import json
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")


def _tables_module():
    spec = importlib.util.spec_from_file_location("real_mask_tables",
                                                  os.path.join(ROOT, "benchmarks", "real_mask_tables.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_real_mask_tables_match_their_reports_and_the_committed_page():
    tables = _tables_module()
    page = open(os.path.join(RESULTS, "latency-real-masks.md")).read()
    for batch in (32, 1):
        text = tables.table(RESULTS, batch)
        assert text and text in page  # the page shows exactly what the reports say
        with open(os.path.join(RESULTS, f"latency-real-masks-b{batch}-eager.json")) as handle:
            results = json.load(handle)["results"]
        masks = [label for label in results if label != "dense" and ":" not in label and " [" not in label]
        rows = [line for line in text.splitlines() if line.startswith("| ") and " @ " in line]
        assert len(rows) == len(masks) and masks
        for label, line in zip(masks, rows):
            row = results[label]
            assert line.startswith(f"| {label.replace('@', ' @ ')} | {row['heads']} |")
            assert f"{row['speedup_vs_dense']:.2f}x" in line and f"{row['no_attention_speedup']:.2f}x" in line
    assert tables.table(os.path.join(RESULTS, "no-such-dir"), 32) == ""
