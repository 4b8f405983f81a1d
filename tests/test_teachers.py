"""The teacher cache: verified on read, trained once per seed and shared, repaired when damaged, never caching a
teacher that did not learn."""

from __future__ import annotations

import os
import stat

import pytest
import torch
from helpers import run_cli

from grain_bench.backbones import load_tiny
from grain_bench.grid import build_specs
from grain_bench.harness import Harness
from grain_bench.teachers import load_cached_teacher, save_teacher


def test_teacher_cache_round_trip_and_corruption(tmp_path):
    model, _ = load_tiny("sequence", 2)
    with torch.no_grad():
        model.classifier.weight.fill_(0.25)
    save_teacher(str(tmp_path), "abc", model, {"scores": {"accuracy": 0.5}})
    fresh, _ = load_tiny("sequence", 2)
    meta = load_cached_teacher(str(tmp_path), "abc", fresh)
    assert meta["scores"] == {"accuracy": 0.5}
    assert torch.all(fresh.classifier.weight == 0.25)
    with open(os.path.join(tmp_path, "abc", "model.safetensors"), "r+b") as handle:
        handle.seek(-8, os.SEEK_END)
        handle.write(b"garbage!")
    assert load_cached_teacher(str(tmp_path), "abc", fresh) is None  # detected, moved aside, to be retrained
    assert not os.path.exists(os.path.join(tmp_path, "abc"))


def test_teacher_is_trained_once_per_seed_and_shared(regs, pm, results_dir, test_recipe, data_dir):
    specs = build_specs(regs, ["dense", "random"], ["sst2"], [0.5], [1], "test-bert-tiny", test_recipe,
                        data_dir=data_dir)
    harness = Harness(results_dir, regs=regs, pm=pm, progress=False, save_models=False, measure_latency=False)
    records = [harness.run(spec) for spec in specs]
    assert all(r.ok for r in records), [r.error for r in records]
    assert len([d for d in os.listdir(harness.teacher_cache) if not d.startswith(".")]) == 1
    assert records[0].teacher_scores == records[1].teacher_scores
    assert records[0].teacher_scores["accuracy"] > records[0].chance_scores["accuracy"] == 0.5  # it learned
    assert records[0].warnings == ()
    assert 0.0 <= records[0].scores["accuracy"] <= 1.0


def test_a_teacher_no_better_than_chance_is_used_but_never_cached(regs, pm, results_dir, test_recipe):
    """The tiny character-level model cannot learn tweet sentiment from 64 rows: its teacher predicts the majority
    class. The runs of this process share it, the records say so, and nothing is cached for later sweeps."""
    specs = build_specs(regs, ["dense", "random"], ["tweets"], [0.5], [1], "test-bert-tiny", test_recipe)
    harness = Harness(results_dir, regs=regs, pm=pm, progress=False, save_models=False, measure_latency=False)
    records = [harness.run(spec) for spec in specs]
    assert all(r.ok for r in records), [r.error for r in records]
    teacher, chance = records[0].teacher_scores["accuracy"], records[0].chance_scores["accuracy"]
    assert teacher <= chance
    assert not os.path.exists(harness.teacher_cache)
    for record in records:
        assert record.teacher_scores == records[0].teacher_scores
        assert any("no better than a trivial predictor" in w and "not cached" in w for w in record.warnings)


@pytest.mark.usefixtures("builtin_plugins_only")
def test_a_cached_teacher_with_non_finite_weights_is_moved_aside(tmp_path):
    import torch

    from grain_bench.backbones import load_tiny
    from grain_bench.teachers import load_cached_teacher, save_teacher

    model, _ = load_tiny("sequence", 2)
    with torch.no_grad():
        model.classifier.weight.fill_(float("nan"))
    save_teacher(str(tmp_path), "key", model, {"scores": {"accuracy": 0.625}})
    assert load_cached_teacher(str(tmp_path), "key", load_tiny("sequence", 2)[0]) is None
    assert [n.split(".corrupt-")[0] for n in os.listdir(tmp_path)] == ["key"]


@pytest.mark.usefixtures("builtin_plugins_only")
def test_teacher_cache_without_weights_is_repaired(tmp_path, data_dir, capsys):
    results = tmp_path / "results"
    args = ("--tasks", "sst2", "--data-dir", data_dir, "--no-save-models", "--densities", "0.5")
    assert run_cli(*args, "--methods", "dense", results=str(results), capsys=capsys)[0] == 0
    (entry,) = [n for n in os.listdir(results / "teachers") if not n.startswith(".")]
    os.remove(results / "teachers" / entry / "model.safetensors")
    assert run_cli(*args, "--methods", "random", results=str(results), capsys=capsys)[0] == 0
    assert os.path.isfile(results / "teachers" / entry / "model.safetensors")  # rebuilt in place
    moved = [n for n in os.listdir(results / "teachers") if n.startswith(entry + ".corrupt-")]
    assert len(moved) == 1


@pytest.mark.usefixtures("builtin_plugins_only")
def test_cache_and_model_folders_are_readable_by_others(tmp_path, data_dir, capsys):
    results = tmp_path / "results"
    previous = os.umask(0o022)
    try:
        code, _, err = run_cli("--tasks", "sst2", "--data-dir", data_dir, "--methods", "dense",
                               results=str(results), capsys=capsys)
    finally:
        os.umask(previous)
    assert code == 0, err
    folders = [os.path.join(results, "teachers", n) for n in os.listdir(results / "teachers")]
    folders += [os.path.join(results, "models", n) for n in os.listdir(results / "models")]
    assert len(folders) == 2
    for folder in folders:
        assert stat.S_IMODE(os.stat(folder).st_mode) == 0o755, folder
        for name in os.listdir(folder):
            assert stat.S_IMODE(os.stat(os.path.join(folder, name)).st_mode) & 0o044 == 0o044, name
