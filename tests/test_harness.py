"""The harness: a run that fails becomes an error record that says why."""

from __future__ import annotations

import os

import pytest
from helpers import run_cli

from grain_bench.leaderboard.store import RecordStore
from grain_bench.teachers import teacher_folder


@pytest.mark.usefixtures("builtin_plugins_only")
@pytest.mark.parametrize("override,expected", [
    ("lr=1e6", "training diverged at step"),
    ("teacher_lr=1e6", "teacher fine-tuning diverged at step"),
])
def test_divergence_is_an_error_record_that_says_so(override, expected, tmp_path, capsys, data_dir):
    results = tmp_path / "results"
    code, _, err = run_cli("--tasks", "sst2", "--data-dir", data_dir, "--methods", "dense", "-r", override,
                           results=str(results), capsys=capsys)
    assert code == 1
    (record,) = RecordStore(str(results)).records()
    assert record.status == "error"
    assert expected in record.error and "lower the learning rate" in record.error
    assert "bug in grain_bench" not in record.error
    teachers = teacher_folder()
    cached = [n for n in os.listdir(teachers) if not n.startswith(".")] if os.path.isdir(teachers) else []
    assert cached == [] if override.startswith("teacher") else len(cached) == 1
