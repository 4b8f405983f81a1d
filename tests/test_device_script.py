"""The prepared GPU device run (``benchmarks/device/run.sh gpu-bench``) dry-run on CPU with tiny settings, so that the
script a borrowed GPU machine runs for a few minutes never rots: every part runs and returns its files."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from helpers import ROOT

pytestmark = pytest.mark.device


def test_gpu_bench_dry_run_returns_every_part(tmp_path):
    out, grid = tmp_path / "out", tmp_path / "grid"
    out.mkdir()
    env = {**os.environ, "DRY_RUN": "1", "OUT": str(out), "GRID_RESULTS": str(grid),
           "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(["bash", "benchmarks/device/run.sh", "gpu-bench"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    latency = json.loads((out / "gpu-latency-b2.json").read_text())
    assert {"dense", "grain@0.05"} <= set(latency["results"]) and latency["settings"]["labels"] == ["grain@0.05"]
    layouts = json.loads((out / "gpu-layouts.json").read_text())
    assert "grain@0.05:gpu" in layouts["results"]
    speed = json.loads((out / "gpu-train-speed.json").read_text())
    assert {(row["method"], row["precision"]) for row in speed["rows"]} == {
        (m, p) for m in ("dense", "grain") for p in ("fp32", "bf16")}
    assert all(row["steps_per_s"] > 0 for row in speed["rows"])
    assert "CUDA" in speed["skipped"]["tf32"]
    table = (out / "gpu-grid.md").read_text()
    assert all(f"| tweets | {method}" in table for method in ("dense", "grain", "heads")), table
    assert (out / "gpu-grid.tgz").stat().st_size > 0


def test_dry_run_is_refused_for_other_parts(tmp_path):
    env = {**os.environ, "DRY_RUN": "1", "OUT": str(tmp_path)}
    done = subprocess.run(["bash", "benchmarks/device/run.sh", "curves"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and "gpu-bench only" in done.stderr
