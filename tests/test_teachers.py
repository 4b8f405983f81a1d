"""The teacher cache: one per user, verified on read, trained once per seed and shared (across results folders and
processes), repaired when damaged, never caching a teacher that did not learn."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest
import torch
from helpers import one_line_error, run_cli

from grain_bench.backbones import load_tiny
from grain_bench.grid import build_specs
from grain_bench.harness import Harness
from grain_bench.leaderboard.store import RecordStore
from grain_bench.teachers import load_cached_teacher, save_teacher, teacher_folder


def entries(folder) -> list[str]:
    """The cache entries in ``folder`` (not the per-key lock files, not the temporary folders)."""
    return sorted(n for n in os.listdir(folder) if not n.startswith(".")) if os.path.isdir(folder) else []


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
    assert harness.teacher_cache == teacher_folder() != os.path.join(results_dir, "teachers")  # the user's folder
    assert len(entries(harness.teacher_cache)) == 1
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
    assert entries(harness.teacher_cache) == []
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
    cache = teacher_folder()
    (entry,) = entries(cache)
    os.remove(os.path.join(cache, entry, "model.safetensors"))
    assert run_cli(*args, "--methods", "random", results=str(results), capsys=capsys)[0] == 0
    assert os.path.isfile(os.path.join(cache, entry, "model.safetensors"))  # rebuilt in place
    moved = [n for n in os.listdir(cache) if n.startswith(entry + ".corrupt-")]
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
    folders = [os.path.join(teacher_folder(), n) for n in entries(teacher_folder())]
    folders += [os.path.join(results, "models", n) for n in os.listdir(results / "models")]
    assert len(folders) == 2
    for folder in folders:
        assert stat.S_IMODE(os.stat(folder).st_mode) == 0o755, folder
        for name in os.listdir(folder):
            assert stat.S_IMODE(os.stat(os.path.join(folder, name)).st_mode) & 0o044 == 0o044, name


@pytest.mark.usefixtures("builtin_plugins_only")
def test_two_results_folders_share_the_users_teachers_and_an_older_folder_keeps_its_own(tmp_path, data_dir, capsys):
    """One teacher per user: a second results folder loads the first one's teacher; ``--teacher-cache`` moves the
    cache; a results folder from before the per-user cache still serves the teachers in its ``teachers/``."""
    args = ("--tasks", "sst2", "--data-dir", data_dir, "--no-save-models", "--densities", "0.5", "--methods", "dense")
    assert run_cli(*args, results=str(tmp_path / "a"), capsys=capsys)[0] == 0
    (entry,) = entries(teacher_folder())
    assert not os.path.exists(tmp_path / "a" / "teachers")  # nothing of the teacher in the results folder
    stamp_train_seconds(os.path.join(teacher_folder(), entry), 12345.0)
    assert run_cli(*args, results=str(tmp_path / "b"), capsys=capsys)[0] == 0
    (record,) = RecordStore(str(tmp_path / "b")).records()
    assert record.method_info["teacher_seconds"] == 12345.0  # the first folder's teacher, loaded, not retrained

    older = tmp_path / "older"  # as a results folder written before the per-user cache looks
    os.makedirs(older / "teachers")
    os.replace(os.path.join(teacher_folder(), entry), older / "teachers" / entry)
    assert run_cli(*args, results=str(older), capsys=capsys)[0] == 0
    (record,) = RecordStore(str(older)).records()
    assert record.method_info["teacher_seconds"] == 12345.0 and entries(teacher_folder()) == []  # read, not copied

    elsewhere = tmp_path / "elsewhere"
    assert run_cli(*args, "--teacher-cache", str(elsewhere), results=str(tmp_path / "c"), capsys=capsys)[0] == 0
    assert entries(elsewhere) == [entry] and entries(teacher_folder()) == []
    (tmp_path / "file").write_text("")
    code, _, err = run_cli(*args, "--teacher-cache", str(tmp_path / "file"), results=str(tmp_path / "d"),
                           capsys=capsys)
    assert "--teacher-cache" in one_line_error(code, err) and "is a file, not a folder" in err


def stamp_train_seconds(entry: str, seconds: float) -> None:
    """Mark a cache entry (its meta, which the weights' checksum does not cover) so a record shows it was loaded."""
    path = os.path.join(entry, "meta.json")
    with open(path) as handle:
        meta = json.load(handle)
    with open(path, "w") as handle:
        json.dump({**meta, "train_seconds": seconds}, handle)


@pytest.mark.usefixtures("builtin_plugins_only")
def test_a_process_waits_for_the_one_training_its_teacher_and_loads_it(tmp_path, data_dir, capsys):
    """Two processes asking for one teacher train it once: the second waits on the key's lock (held here as a
    process training it would), says so, and then loads what the first cached."""
    from filelock import FileLock

    args = ["--tasks", "sst2", "--data-dir", data_dir, "--no-save-models", "--densities", "0.5", "--methods", "dense"]
    cache = str(tmp_path / "cache")
    assert run_cli(*args, "--teacher-cache", cache, results=str(tmp_path / "a"), capsys=capsys)[0] == 0
    (entry,) = entries(cache)
    stamp_train_seconds(os.path.join(cache, entry), 12345.0)
    away = str(tmp_path / "away")
    os.replace(os.path.join(cache, entry), away)  # as if not trained yet
    lock = FileLock(os.path.join(cache, f".{entry}.lock"))
    lock.acquire()
    try:
        child = subprocess.Popen(
            [sys.executable, "-m", "grain_bench", "run", *args, "--backbone", "test-bert-tiny", "--recipe", "test",
             "-q", "--no-latency", "--teacher-cache", cache, "--results", str(tmp_path / "b")],
            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        assert child.stderr is not None
        seen = []
        for line in child.stderr:  # the event: the child says it waits (it cannot get past the lock before)
            seen.append(line)
            if "waiting for another process training teacher" in line:
                break
        assert any(entry in line for line in seen), "".join(seen)
        os.replace(away, os.path.join(cache, entry))  # the "other process" finishes its teacher
    finally:
        lock.release()
    rest = child.stderr.read()
    assert child.wait(timeout=600) == 0, "".join(seen) + rest
    (record,) = RecordStore(str(tmp_path / "b")).records()
    assert record.method_info["teacher_seconds"] == 12345.0  # loaded after the wait, not trained again
    assert entries(cache) == [entry]
