"""Resumable content-hashed sweeps: skip ok runs, retry errors on request, survive kills; the teacher cache."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import gate_plugin
import pytest
from helpers import (
    BACKBONE,
    fill_filesystem,
    records_aside,
    run_cli,
    write_sst2,
)

from grain_bench.cli import main
from grain_bench.grid import build_specs
from grain_bench.harness import Harness
from grain_bench.leaderboard.store import RecordStore
from grain_bench.plugins import get_registries
from grain_bench.recipes import get_recipe
from grain_bench.records import RunRecord
from grain_bench.sweep import run_sweep
from grain_bench.teachers import teacher_folder

GRID = dict(methods=["dense", "random"], tasks=["sst2"], densities=[0.5, 0.3], seeds=[1, 2])  # 6 runs, 2 teachers


# ---- skip / retry, with a stand-in harness (no training) ----------------------------------------------------------
class CountingHarness:
    """Records every spec it is asked to run; fails the ones listed in ``fail``; tags its records' warnings."""

    def __init__(self, regs, fail=(), tag=""):
        self.regs = regs
        self.fail = set(fail)
        self.tag = tag
        self.ran = []

    def run(self, spec):
        """Pretend to run ``spec``."""
        self.ran.append(spec.run_id)
        status = "error" if spec.run_id in self.fail else "ok"
        return RunRecord(run_id=spec.run_id, spec=spec, status=status,
                         error="boom" if status == "error" else None, warnings=(self.tag,) if self.tag else ())


def test_sweep_skips_ok_and_retries_errors_only_when_asked(regs, results_dir, test_recipe):
    specs = build_specs(regs, ["dense", "random", "grain"], ["tweets"], [0.5, 0.2], [1, 2], BACKBONE, test_recipe)
    assert len(specs) == 2 + 4 + 4  # dense once per seed; the pruning methods at both densities
    store = RecordStore(results_dir)
    failing = specs[3].run_id

    first = CountingHarness(regs, fail={failing})
    records = run_sweep(specs, first, store, progress=False)
    assert first.ran == [s.run_id for s in specs] and sum(not r.ok for r in records) == 1

    again = CountingHarness(regs)
    assert run_sweep(specs, again, store, progress=False) == [] and again.ran == []  # ok and error both skipped

    retry = CountingHarness(regs)
    records = run_sweep(specs, retry, store, retry_failed=True, progress=False)
    assert retry.ran == [failing] and records[0].ok
    assert store.done() == {s.run_id for s in specs}  # the retried ok record replaces the error
    assert len(store.records()) == len(specs) + 1  # append-only: the error stays in the file

    rerun = CountingHarness(regs, fail={specs[0].run_id}, tag="rerun")
    run_sweep(specs, rerun, store, rerun=True, progress=False)
    assert rerun.ran == [s.run_id for s in specs]  # every spec again, ok ones too
    assert len(store.records()) == 2 * len(specs) + 1  # the earlier records stay in the file
    latest = store.latest()
    assert store.done() == {s.run_id for s in specs}  # a failed rerun leaves the earlier ok record standing
    assert latest[specs[0].run_id].warnings == () and latest[specs[0].run_id].ok
    assert all(latest[s.run_id].warnings == ("rerun",) for s in specs[1:])  # the new records supersede the old


def test_grid_ids_are_content_hashes(regs, test_recipe, data_dir, tmp_path):
    a = build_specs(regs, **GRID, backbone=BACKBONE, recipe=test_recipe, data_dir=data_dir)
    b = build_specs(regs, **{**GRID, "seeds": [2, 1]}, backbone=BACKBONE, recipe=test_recipe, data_dir=data_dir)
    assert {s.run_id for s in a} == {s.run_id for s in b} and len(a) == 6
    other = write_sst2(tmp_path / "other")  # the same bytes elsewhere: the same runs
    assert {s.run_id for s in a} == {s.run_id for s in build_specs(regs, **GRID, backbone=BACKBONE,
                                                                   recipe=test_recipe, data_dir=other)}
    with open(os.path.join(other, "SST-2", "dev.tsv"), "a") as handle:
        handle.write("one more row\t1\n")
    d = build_specs(regs, **GRID, backbone=BACKBONE, recipe=test_recipe, data_dir=other)
    assert not {s.run_id for s in a} & {s.run_id for s in d}  # other data, other runs

    c = build_specs(regs, **GRID, backbone=BACKBONE, recipe=get_recipe("test", {"max_steps": 13}), data_dir=data_dir)
    assert not {s.run_id for s in a} & {s.run_id for s in c}  # any recipe change is a different run


# ---- teacher cache ------------------------------------------------------------------------------------------------
def _teacher_entries():
    folder = teacher_folder()  # the user's (this test's GRAIN_BENCH_HOME), not the results folder's
    return sorted(name for name in os.listdir(folder) if not name.startswith(".") and ".corrupt-" not in name)


@pytest.fixture
def finetune_calls(monkeypatch):
    """Count teacher fine-tunings."""
    import grain_bench.distill as distill

    calls = []
    real = distill.finetune

    def counting(model, task, data, recipe, seed, progress=True):
        calls.append(seed)
        return real(model, task, data, recipe, seed, progress)

    monkeypatch.setattr(distill, "finetune", counting)
    return calls


def _harness(results_dir, regs, pm, **settings):
    return Harness(results_dir, regs=regs, pm=pm, progress=False, save_models=False, measure_latency=False, **settings)


def test_teacher_trained_once_per_seed_and_corrupt_entry_retrained(regs, pm, results_dir, test_recipe, finetune_calls,
                                                                   data_dir, one_thread):
    specs = build_specs(regs, ["dense", "random"], ["sst2"], [0.5], [1, 2], BACKBONE, test_recipe, data_dir=data_dir)
    store = RecordStore(results_dir)
    records = run_sweep(specs, _harness(results_dir, regs, pm), store, progress=False)
    assert all(r.ok for r in records), [r.error for r in records]
    assert sorted(finetune_calls) == [1, 2]  # two methods, one teacher per seed
    entries = _teacher_entries()
    assert len(entries) == 2
    teacher_scores = {r.spec.seed: r.teacher_scores for r in records}

    # A new process (fresh harness, empty memory cache) loads both teachers from disk.
    more = build_specs(regs, ["random"], ["sst2"], [0.2], [1, 2], BACKBONE, test_recipe, data_dir=data_dir)
    records = run_sweep(more, _harness(results_dir, regs, pm), store, progress=False)
    assert all(r.ok for r in records) and sorted(finetune_calls) == [1, 2]
    assert {r.spec.seed: r.teacher_scores for r in records} == teacher_scores

    # Flip bytes in one cached teacher: the checksum catches it, the entry is moved aside and the teacher retrained.

    for name in entries:
        with open(os.path.join(teacher_folder(), name, "meta.json")) as handle:
            if json.load(handle)["seed"] == 2:
                corrupt = name
    weights = os.path.join(teacher_folder(), corrupt, "model.safetensors")
    with open(weights, "r+b") as handle:
        handle.seek(os.path.getsize(weights) - 64)
        handle.write(b"\x00" * 64)
    last = build_specs(regs, ["random"], ["sst2"], [0.3], [1, 2], BACKBONE, test_recipe, data_dir=data_dir)
    records = run_sweep(last, _harness(results_dir, regs, pm), store, progress=False)
    assert all(r.ok for r in records)
    assert sorted(finetune_calls) == [1, 2, 2]  # only the corrupt one again
    assert _teacher_entries() == entries
    moved = [n for n in os.listdir(teacher_folder()) if n.startswith(corrupt + ".corrupt-")]
    assert len(moved) == 1
    assert {r.spec.seed: r.teacher_scores for r in records} == teacher_scores  # same seed, same teacher


# ---- kill and resume ------------------------------------------------------------------------------------------------
def _command(results_dir, data_dir, grid=GRID, launcher=(sys.executable, "-m", "grain_bench")):
    return [*launcher, "run", "--backbone", BACKBONE, "--recipe", "test", "--tasks", ",".join(grid["tasks"]),
            "--data-dir", data_dir, "--methods", ",".join(grid["methods"]),
            "--densities", ",".join(map(str, grid["densities"])), "--seeds", ",".join(map(str, grid["seeds"])),
            "--results", results_dir, "-q", "--no-latency", "--no-save-models"]


def _env():
    env = dict(os.environ, GRAIN_BENCH_LOAD_PLUGINS="", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    env.pop("RAY_ADDRESS", None)
    return env


def _default_sigint() -> None:
    """``preexec_fn`` of the sweeps the tests signal: SIGINT back to its default, as for a command run from a terminal.
    A shell starts background jobs with SIGINT ignored and Python keeps an inherited ignore, so without this a sweep
    started by ``bash scripts/test.sh &`` (or under nohup) never sees the test's SIGINT and the test waits for its
    timeout: the outcome would depend on how pytest was launched."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _lines(path):
    if not os.path.exists(path):
        return 0
    with open(path, "rb") as handle:
        return handle.read().count(b"\n")


def _start_and_kill(results_dir, data_dir, signum, after_records, extra_delay=0.0, timeout=240):
    """Start the sweep, send ``signum`` once the store has ``after_records`` lines (plus a delay); return rc, stderr."""
    path = os.path.join(results_dir, "records.jsonl")
    proc = subprocess.Popen(_command(results_dir, data_dir), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=_default_sigint)
    deadline = time.time() + timeout
    while proc.poll() is None and _lines(path) < after_records and time.time() < deadline:
        time.sleep(0.05)
    if proc.poll() is None:
        time.sleep(extra_delay)
        proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=timeout)
    return proc.returncode, stderr.decode()


def _resume_to_end(results_dir, data_dir):
    done = subprocess.run(_command(results_dir, data_dir), env=_env(), capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    return done.stderr.decode()


def _assert_complete(regs, results_dir, test_recipe, data_dir):
    expected = {s.run_id for s in build_specs(regs, **GRID, backbone=BACKBONE, recipe=test_recipe, data_dir=data_dir)}
    store = RecordStore(results_dir)
    records = store.records()
    assert store.problems == []
    ids = [r.run_id for r in records]
    assert sorted(ids) == sorted(expected)  # every run of the grid exactly once, nothing else
    assert all(r.ok for r in records), [r.error for r in records]


GATED_GRID = dict(methods=["gated"], tasks=["sst2"], densities=[0.5, 0.3], seeds=[1, 2])  # 4 runs, 2 teachers


def _gated_command(results_dir, data_dir):
    return _command(results_dir, data_dir, GATED_GRID, gate_plugin.COMMAND)


def _start_gated(results_dir, data_dir, gate):
    env = dict(_env(), GRAIN_BENCH_TEST_GATE=str(gate), PYTHONPATH=os.path.dirname(__file__))
    return subprocess.Popen(_gated_command(results_dir, data_dir), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, preexec_fn=_default_sigint)


def _signal_at_run(results_dir, data_dir, gate, signum, run):
    """Start the sweep, let its first ``run - 1`` gated runs finish, send ``signum`` while run ``run`` waits at the
    gate (after its teacher, before training); returns rc and stderr."""
    proc = _start_gated(results_dir, data_dir, gate)
    try:
        for n in range(1, run):
            gate_plugin.wait_for(os.path.join(gate, f"entered-{proc.pid}-{n}"), proc)
            open(os.path.join(gate, f"release-{proc.pid}-{n}"), "w").close()
        gate_plugin.wait_for(os.path.join(gate, f"entered-{proc.pid}-{run}"), proc)
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, stderr.decode()


@pytest.mark.signals
def test_kill_with_each_signal_and_resume(pm, results_dir, test_recipe, data_dir, tmp_path):
    """SIGTERM, SIGINT and SIGKILL, each while a run is in progress and after one more run finished; the fourth start
    completes the grid. The kill points are gates the runs wait at, so the outcome does not depend on machine speed."""
    pm.register(gate_plugin)
    regs = get_registries(pm)
    path = os.path.join(results_dir, "records.jsonl")
    gate = tmp_path / "gate"
    gate.mkdir()
    rc, stderr = _signal_at_run(results_dir, data_dir, str(gate), signal.SIGTERM, run=1)
    assert rc == 128 + signal.SIGTERM, stderr[-2000:]
    assert "terminated by signal" in stderr and "run the same command to resume" in stderr
    assert "Traceback" not in stderr and _lines(path) == 0
    rc, stderr = _signal_at_run(results_dir, data_dir, str(gate), signal.SIGINT, run=2)
    assert rc == 130, stderr[-2000:]
    assert "interrupted" in stderr and "Traceback" not in stderr and _lines(path) == 1
    rc, stderr = _signal_at_run(results_dir, data_dir, str(gate), signal.SIGKILL, run=2)
    assert rc == -signal.SIGKILL and _lines(path) == 2
    done = subprocess.run(_gated_command(results_dir, data_dir), capture_output=True, timeout=300,
                          env=dict(_env(), PYTHONPATH=os.path.dirname(__file__)))  # no gate: runs to the end
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert "4 runs in the grid, 2 already recorded" in done.stderr.decode()
    expected = {s.run_id for s in build_specs(regs, **GATED_GRID, backbone=BACKBONE, recipe=test_recipe,
                                              data_dir=data_dir)}
    store = RecordStore(results_dir)
    records = store.records()
    assert store.problems == [] and all(r.ok for r in records), [r.error for r in records]
    assert sorted(r.run_id for r in records) == sorted(expected)  # every run of the grid exactly once


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_kill_at_random_moments_and_resume(regs, results_dir, test_recipe, data_dir, signum):
    """Kill at random moments (also during teacher training and appends) until the grid completes."""
    rng = random.Random(signum)
    path = os.path.join(results_dir, "records.jsonl")
    for _ in range(4):
        rc, _ = _start_and_kill(results_dir, data_dir, signum, after_records=_lines(path),
                                extra_delay=rng.uniform(3, 12))
        if rc == 0:
            break
    _resume_to_end(results_dir, data_dir)
    _assert_complete(regs, results_dir, test_recipe, data_dir)


def test_executor_mistakes_are_one_line_errors(pm, results_dir, capsys):

    base = ["run", "--backbone", BACKBONE, "--recipe", "test", "--methods", "dense", "--results", results_dir, "-q"]
    assert main([*base, "--ray-address", "127.0.0.1:1"]) == 2
    assert "--ray-address needs --executor ray" in capsys.readouterr().err
    assert main([*base, "--executor", "rya"]) == 2
    assert "Did you mean 'ray'" in capsys.readouterr().err
    assert main([*base, "-E", "max_retries=2"]) == 2
    assert "the local executor takes no options, got max_retries" in capsys.readouterr().err
    assert main([*base, "--executor", "ray", "-E", "max_retry=2"]) == 2
    err = capsys.readouterr().err
    assert "unknown option 'max_retry'" in err and "Traceback" not in err
    assert not os.path.exists(os.path.join(results_dir, "records.jsonl"))  # nothing ran


def test_named_recipe_per_task_values_and_user_overrides_win(regs):
    """A task declares its values of a named recipe (``Task.recipe_values``); the user's overrides win."""
    task = regs.tasks.get
    assert get_recipe("paper", task=task("squad")).max_length == 384  # the GRAIN paper, §4.1: SQuAD at length 384
    assert get_recipe("paper", task=task("rte")).max_length == 128
    conll = get_recipe("paper", task=task("conll2003"))
    assert (conll.lr, conll.epochs) == (1e-4, 40.0)
    assert get_recipe("paper", {"max_length": "256"}, task("squad")).max_length == 256  # the user's value wins
    # quick: values chosen from the task curves; the offline default task keeps the recipe as it is
    assert get_recipe("quick", task=task("tweets")) == get_recipe("quick")
    conll = get_recipe("quick", task=task("conll2003"))
    assert (conll.max_length, conll.teacher_lr, conll.teacher_max_steps, conll.max_steps) == (128, 1e-4, 600, 600)
    assert get_recipe("quick", {"max_steps": "50"}, task("stsb")).max_steps == 50
    fixtures = os.path.join(os.path.dirname(__file__), "data")  # SQuAD JSON and GLUE TSV files
    specs = build_specs(regs, ["dense"], ["squad", "rte"], [1.0], [1], BACKBONE,
                        lambda name: get_recipe("paper", None, task(name)), data_dir=fixtures)
    lengths = {spec.task: spec.recipe["max_length"] for spec in specs}
    assert lengths == {"squad": 384, "rte": 128}
    one = build_specs(regs, ["dense"], ["squad", "rte"], [1.0], [1], BACKBONE, get_recipe("paper"), data_dir=fixtures)
    assert {spec.recipe["max_length"] for spec in one} == {128}


def test_max_length_beyond_the_backbone_positions_is_a_clear_error(regs, pm, results_dir, test_recipe, tmp_path):

    data_dir = write_sst2(str(tmp_path / "glue"))
    long = get_recipe("test", {"max_length": 256})  # the tiny backbone has 128 positions
    spec = build_specs(regs, ["dense"], ["sst2"], [1.0], [1], BACKBONE, long, data_dir=data_dir)[0]
    record = Harness(results_dir, regs=regs, pm=pm, progress=False, save_models=False, measure_latency=False).run(spec)
    assert record.status == "error"
    assert "max_length 256" in record.error and "128 positions" in record.error


@pytest.mark.usefixtures("builtin_plugins_only")
def test_full_disk_during_a_sweep_loses_nothing(small_fs, data_dir, tmp_path, capsys):
    """The teacher cache and the record do not fit: the run still ends, its record waits aside, the command exits 1
    and says where; once there is space, the same command stores it (exactly once) and skips the run."""
    point = small_fs("512k")
    results = os.path.join(point, "results")
    os.makedirs(results)
    filler = fill_filesystem(point, leave=0)
    args = ("--tasks", "sst2", "--data-dir", data_dir, "--methods", "dense", "--no-save-models",
            "--teacher-cache", os.path.join(point, "teachers"))
    code, out, err = run_cli(*args, results=results, capsys=capsys)
    assert code == 1, err
    assert "could not append run" in err and "kept in" in err and "Traceback" not in err
    assert not os.path.exists(os.path.join(results, "records.jsonl")) or \
        os.path.getsize(os.path.join(results, "records.jsonl")) == 0
    assert len(records_aside(tmp_path)) == 1
    os.remove(filler)
    code, out, err = run_cli(*args, results=results, capsys=capsys)
    assert code == 0, err
    assert "appended 1 record(s) that an earlier run had to keep aside" in err
    assert "1 runs in the grid, 1 already recorded" in err
    records = RecordStore(results).records()
    assert len(records) == 1 and records[0].ok
    assert any("teacher could not be cached (" in w and "No space left on device" in w for w in records[0].warnings)
    assert records_aside(tmp_path) == []


@pytest.mark.usefixtures("builtin_plugins_only")
def test_rerun_after_a_failed_run_points_at_retry_failed(tmp_path, data_dir, capsys):
    results = tmp_path / "results"
    args = ("--tasks", "sst2", "--data-dir", data_dir, "--methods", "dense", "-r", "teacher_lr=1e6")
    assert run_cli(*args, results=str(results), capsys=capsys)[0] == 1
    code, _, err = run_cli(*args, results=str(results), capsys=capsys)
    assert code == 0
    assert "1 already recorded" in err and "1 of them failed and are skipped: rerun them with --retry-failed" in err
