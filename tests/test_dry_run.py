"""``grain-bench run --dry-run``: the grid with each run's state and estimated cost from the rates finished runs filed
on this machine, and nothing trained or written."""

from __future__ import annotations

import json
import os

from helpers import run_cli

from grain_bench.estimate import KEEP, RateBook, machine_key, rates_path, run_observations, work_key


def _tree(*folders) -> dict[str, tuple[int, int]]:
    """Every file under ``folders`` with its size and modification time (what a write would change)."""
    out = {}
    for folder in folders:
        for root, dirs, files in os.walk(folder):
            for name in dirs + files:
                path = os.path.join(root, name)
                info = os.lstat(path)
                out[path] = (info.st_size, info.st_mtime_ns)
    return out


def test_dry_run_writes_nothing_and_estimates_from_the_rates_a_real_run_filed(
        tmp_path, data_dir, capsys, monkeypatch, builtin_plugins_only, one_thread):
    home, results = str(tmp_path / "home"), str(tmp_path / "results")
    grid = ("--methods", "dense,grain", "--tasks", "sst2", "--data-dir", data_dir, "--densities", "0.5")

    code, out, _ = run_cli(*grid, "--seeds", "1", "--dry-run", results=results, capsys=capsys)
    assert code == 0
    assert not os.path.exists(results) and not os.path.exists(home)  # nothing written, not even the folders
    assert "to run" in out and "no rate measured yet on this machine" in out and "?" in out
    assert "no estimate yet of compute" in out and "estimated 0 s" not in out  # no rate: no total, not "0 s"

    code, _, _ = run_cli(*grid, "--seeds", "1", results=results, capsys=capsys)  # a real run files its rates
    assert code == 0
    book = RateBook()
    assert book.path == rates_path() and book.path.startswith(home)
    with open(book.path) as handle:
        filed = json.load(handle)
    (machine,) = filed
    assert machine == machine_key("cpu")
    names = {name for work in filed[machine].values() for name in work}
    assert {"teacher", "dense.distillation", "grain.distillation", "grain.rest"} <= names

    before = _tree(results, home)
    code, out, _ = run_cli(*grid, "--seeds", "1,2", "--dry-run", results=results, capsys=capsys)
    assert code == 0
    assert _tree(results, home) == before  # the store, the teacher cache and the rate book as they were
    lines = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| ") and "seed" in line}
    assert len(lines) == 4
    assert "recorded" in lines["grain on sst2 @ 0.5 seed 1"]
    seed2 = lines["grain on sst2 @ 0.5 seed 2"]
    assert "to run" in seed2 and "?" not in seed2  # every part has a rate now
    # one teacher per seed: the first run of seed 2 trains it, the second shares it
    assert "trains" in lines["dense on sst2 @ 1 seed 2"] and "shared" in seed2
    assert "2 of 4 runs would run: estimated " in out and "no rate measured yet" not in out
    assert "at least" not in out  # every part has a rate: the total is an estimate, not a lower bound


def test_rates_keep_the_last_observations_and_estimate_by_their_median(tmp_path):
    book = RateBook(str(tmp_path / "rates.json"))
    work = work_key("b", "t", 64)
    for value in range(1, KEEP + 3):
        book.add("m", work, {"grain.distillation": float(value)})
    again = RateBook(book.path)  # what the next process reads
    assert again.data["m"][work]["grain.distillation"] == [float(v) for v in range(3, KEEP + 3)]
    assert again.rate("m", work, "grain.distillation") == float((3 + KEEP + 2) / 2)
    assert again.rate("m", work, "heads.distillation") is None and again.rate("other", work, "teacher") is None


def test_an_unreadable_rate_book_is_an_empty_one(tmp_path):
    path = tmp_path / "rates.json"
    path.write_text("{not json")
    assert RateBook(str(path)).data == {}
    RateBook(str(path)).add("m", "w", {"teacher": 0.5})  # and the next run writes a good one over it
    assert RateBook(str(path)).rate("m", "w", "teacher") == 0.5


def test_run_observations_are_per_example_rates_of_the_record(tmp_path):
    from grain_bench.records import RunRecord
    from grain_bench.types import RunSpec

    spec = RunSpec(method="kwon", task="t", backbone="b", target_density=0.5, seed=1, recipe={})
    record = RunRecord(run_id=spec.run_id, spec=spec, status="ok", method_info={
        "phase_seconds": {"calibration": 20.0, "distillation": 30.0, "compaction_and_timing": 4.0, "scoring": 2.0},
        "examples_seen": {"calibration": 2000, "distillation": 1500, "scoring": 1000}})
    assert run_observations(record) == {"kwon.calibration": 0.01, "kwon.distillation": 0.02, "kwon.rest": 6.0}
