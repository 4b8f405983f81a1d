"""The ``ray`` executor on a local Ray instance (2 CPUs, one session for the module) against the local executor.

Tolerance: the same grid gives the same run ids, the same achieved densities and scores (accuracy on 32 examples
moves in steps of 1/32, so scores must match to 1e-9), and final distillation losses equal to a relative 1e-4: the
runs may differ in torch's thread count (Ray workers get 1 thread per CPU asked for), which reorders float sums.
"""

from __future__ import annotations

import math
import os
import time

import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'grain-bench[ray]' (CI installs it)")

from helpers import write_sst2  # noqa: E402  (tests/ is on sys.path: no tests/__init__.py)
from test_sweep_resume import _harness  # noqa: E402

from grain_bench.grid import build_specs  # noqa: E402
from grain_bench.leaderboard.store import RecordStore  # noqa: E402
from grain_bench.ray_executor import RayExecutor, import_ray, teacher_group  # noqa: E402
from grain_bench.sweep import run_sweep  # noqa: E402
from grain_bench.teachers import teacher_folder  # noqa: E402

BACKBONE = "test-bert-tiny"
SCORE_TOL = 1e-9
LOSS_RTOL = 1e-4


@pytest.fixture(scope="module")
def ray_session():
    """One local Ray instance for every test here (``ray.init`` takes 6-10 s)."""
    os.environ.setdefault("GRAIN_BENCH_LOAD_PLUGINS", "")  # workers inherit it: built-in plugins only
    os.environ.pop("RAY_ADDRESS", None)
    import_ray()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)  # never a running cluster
    yield ray
    ray.shutdown()


def test_ray_grid_matches_local(ray_session, regs, pm, tmp_path, test_recipe, one_thread):
    data_dir = write_sst2(tmp_path / "data")
    specs = build_specs(regs, ["dense", "random"], ["sst2"], [0.5], [1, 2], BACKBONE, test_recipe, data_dir=data_dir)
    local_dir, ray_dir = str(tmp_path / "local"), str(tmp_path / "ray")
    local = run_sweep(specs, _harness(local_dir, regs, pm, teacher_cache=os.path.join(local_dir, "teachers")),
                      RecordStore(local_dir), progress=False)  # its own teachers: the Ray run must train them too
    remote = run_sweep(specs, _harness(ray_dir, regs, pm), RecordStore(ray_dir), progress=False, executor="ray")
    assert all(r.ok for r in local + remote), [r.error for r in local + remote]

    store = RecordStore(ray_dir)
    stored = store.records()
    assert store.problems == [] and sorted(r.run_id for r in stored) == sorted(s.run_id for s in specs)
    by_id = {r.run_id: r for r in local}
    for record in stored:
        twin = by_id[record.run_id]
        assert record.spec == twin.spec
        assert record.density.achieved == twin.density.achieved
        for metric, value in twin.scores.items():
            assert abs(record.scores[metric] - value) <= SCORE_TOL, (metric, record.scores, twin.scores)
        assert record.teacher_scores == twin.teacher_scores
        for name in ("logit_loss", "hidden_loss"):
            a, b = record.method_info["final_losses"][name], twin.method_info["final_losses"][name]
            assert math.isclose(a, b, rel_tol=LOSS_RTOL), (name, a, b)
        assert record.environment["device"] == "cpu"
    # One teacher per seed, trained once before the students that share it, in the cache the driver resolved (this
    # test's GRAIN_BENCH_HOME), not the one the workers' environment names (the session's, when Ray started)
    teachers = [n for n in os.listdir(teacher_folder()) if not n.startswith(".")]
    assert len(teachers) == 2

    # Resuming with Ray runs nothing: every spec is ok in the store.
    assert run_sweep(specs, _harness(ray_dir, regs, pm), store, progress=False, executor="ray") == []


def _fake_specs(regs, test_recipe):
    return build_specs(regs, ["dense", "random", "grain"], ["tweets"], [0.5, 0.2], [1, 2], BACKBONE, test_recipe)


def test_teachers_run_before_their_students(ray_session, regs, pm, results_dir, test_recipe):
    """With a stand-in task body, each teacher group's first spec ends before any other spec of its group starts."""
    log = os.path.join(results_dir, "events.log")

    def pretend(spec, config):  # a closure: Ray ships it by value
        import json as _json
        import time as _time

        from grain_bench.records import RunRecord
        from grain_bench.types import RunSpec

        with open(log, "a") as handle:
            handle.write(f"start {spec['seed']} {spec['method']} {spec['target_density']} {_time.time()}\n")
        _time.sleep(0.2)
        with open(log, "a") as handle:
            handle.write(f"end {spec['seed']} {spec['method']} {spec['target_density']} {_time.time()}\n")
        return RunRecord(run_id=RunSpec.from_dict(spec).run_id, spec=RunSpec.from_dict(spec), status="ok",
                         method_info={"config": _json.loads(_json.dumps(config))}).to_dict()

    class Pretending(RayExecutor):
        worker_function = staticmethod(pretend)

    specs = _fake_specs(regs, test_recipe)
    store = RecordStore(results_dir)
    records = Pretending().run(specs, _harness(results_dir, regs, pm), store, progress=False)
    assert len(records) == len(specs) == 10 and all(r.ok for r in records)
    assert {r.run_id for r in store.records()} == {s.run_id for s in specs}
    assert records[0].method_info["config"]["results"] == os.path.abspath(results_dir)  # shared teacher cache

    events = [line.split() for line in open(log)]
    first = {}
    for spec in specs:
        first.setdefault(teacher_group(spec), spec)
    assert len(first) == 2  # one group per seed
    for head in first.values():
        key = (str(head.seed), head.method, str(head.target_density))
        head_end = next(float(e[4]) for e in events if e[0] == "end" and tuple(e[1:4]) == key)
        others = [float(e[4]) for e in events if e[0] == "start" and e[1] == str(head.seed) and tuple(e[1:4]) != key]
        assert len(others) == 4 and min(others) >= head_end


def test_lost_worker_becomes_an_error_record_after_retries(ray_session, regs, pm, results_dir, test_recipe):
    attempts = os.path.join(results_dir, "attempts.log")

    def crash(spec, config):
        with open(attempts, "a") as handle:
            handle.write(spec["method"] + "\n")
        os._exit(1)  # the worker process dies: Ray raises WorkerCrashedError on the driver

    class Crashing(RayExecutor):
        worker_function = staticmethod(crash)

    specs = build_specs(regs, ["dense"], ["tweets"], [0.5], [1], BACKBONE, test_recipe)
    store = RecordStore(results_dir)
    start = time.time()
    records = Crashing(max_retries=1).run(specs, _harness(results_dir, regs, pm), store, progress=False)
    assert time.time() - start < 120
    assert len(records) == 1 and not records[0].ok
    assert "Ray worker lost after 1 retries" in records[0].error and "WorkerCrashedError" in records[0].error
    assert open(attempts).read().split() == ["dense", "dense"]  # first try + one retry
    assert [r.status for r in store.records()] == ["error"]


def test_bad_options_and_missing_address_are_one_line_errors(tmp_path):
    from grain_bench.errors import GrainBenchError, UsageError

    with pytest.raises(UsageError, match="unknown option 'max_retry'. Did you mean 'max_retries'"):
        RayExecutor(max_retry=2)
    with pytest.raises(UsageError, match="max_retries must be >= 0"):
        RayExecutor(max_retries="-1")
    assert RayExecutor(cpus_per_run="2").options.cpus_per_run == 2.0
    assert issubclass(UsageError, GrainBenchError)


def test_unreachable_head_fails_fast_in_one_line(results_dir, regs, pm):
    import socket

    from grain_bench.errors import GrainBenchError, UsageError

    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    executor = RayExecutor(address=f"127.0.0.1:{port}")
    start = time.time()
    with pytest.raises(GrainBenchError, match=f"no Ray head reachable at 127.0.0.1:{port}"):
        executor.connect(_FakeRay())
    assert time.time() - start < 15
    with pytest.raises(UsageError, match="expected auto or HOST:PORT"):
        RayExecutor(address="headnode").connect(_FakeRay())


class _FakeRay:
    """Stands in for an uninitialised ``ray`` module (the real session of this module stays untouched)."""

    @staticmethod
    def is_initialized():
        return False

    @staticmethod
    def init(**kwargs):
        raise AssertionError("init must not be reached")
