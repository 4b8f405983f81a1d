"""The ``ray`` sweep executor: one Ray task per run spec, on a local Ray instance or an existing cluster.

Ray is an optional extra (``ray[default]``; ``scripts/setup.sh`` installs it), imported only when a sweep uses this
executor.

- Each task asks for one GPU when the cluster has GPUs, one CPU otherwise (``gpus_per_run`` / ``cpus_per_run``).
- Teachers before students: specs are grouped by teacher (task, data, backbone, teacher recipe, seed); the first spec
  of each group runs first and fine-tunes the teacher into the teacher cache under the results directory; the rest of
  its group is submitted when it ends, and loads the cached teacher instead of training it again.
- Only the driver writes: it appends each record to the store as its result arrives, so an interrupted driver loses
  at most the runs still in flight, and those run again on the next start of the same command.
- A worker that dies is retried (``max_retries``); when retries run out, or a task fails inside Ray, the spec gets an
  ``error`` record (re-run it with ``--retry-failed``).
"""

from __future__ import annotations

import datetime as _dt
import os
import traceback
from dataclasses import dataclass
from typing import Any

from tqdm.auto import tqdm

from grain_bench.errors import GrainBenchError, UsageError
from grain_bench.options import Options
from grain_bench.records import RunRecord
from grain_bench.sweep import store_record
from grain_bench.types import Recipe, RunSpec, canonical_json

# Environment variables a worker needs to behave like the driver (plugin selection, offline hub, caches).
FORWARDED_ENV = ("GRAIN_BENCH_LOAD_PLUGINS", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE",
                 "HF_HOME", "HF_DATASETS_CACHE", "TOKENIZERS_PARALLELISM")


@dataclass(frozen=True)
class RayOptions(Options):
    """Options of the Ray executor (``--ray-address``, ``-E key=value``)."""

    owner = "ray executor"

    address: str | None = None  # None/"local": start a local instance; "auto" or HOST:PORT: connect to a cluster
    num_cpus: int | None = None  # CPUs of a local instance (default: all of this machine's)
    cpus_per_run: float = 1.0
    gpus_per_run: float | None = None  # default: 1 when the cluster has GPUs, else 0
    max_retries: int = 1  # re-runs of a task whose worker died
    shutdown: bool = True  # shut down a Ray instance this executor started, at the end of the sweep

    def validate(self) -> None:
        """Reject values that make no sense."""
        if self.cpus_per_run <= 0:
            raise UsageError(f"ray executor: cpus_per_run must be > 0, got {self.cpus_per_run}")
        if self.max_retries < 0:
            raise UsageError(f"ray executor: max_retries must be >= 0, got {self.max_retries}")
        if self.num_cpus is not None and self.num_cpus < 1:
            raise UsageError(f"ray executor: num_cpus must be >= 1, got {self.num_cpus}")


def import_ray():
    """Import Ray with quiet defaults, or explain how to install it."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # A `ray start --head` node has token auth on by default; grain-bench's docs start it with auth disabled, and
    # client and head must agree. Set RAY_AUTH_MODE yourself to use token auth.
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    try:
        import ray
    except ImportError:
        raise GrainBenchError("the ray executor needs Ray: pip install 'ray[default]>=2.9' "
                              "(the ray extra of grain-bench)") from None
    return ray


def teacher_group(spec: RunSpec) -> str:
    """Specs with the same value share one fine-tuned teacher (the fields of ``distill.teacher_key``)."""
    recipe = Recipe.parse(spec.recipe).teacher_dict()
    return canonical_json([spec.task, spec.task_version, spec.data, spec.backbone, recipe, spec.seed])


def _check_reachable(address: str, timeout: float = 10.0) -> None:
    """Fail fast, in one line, when nothing listens at HOST:PORT."""
    import socket

    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--ray-address {address!r}: expected auto or HOST:PORT, e.g. 10.0.0.5:6379")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise GrainBenchError(
            f"no Ray head reachable at {address} ({exc}); start one with "
            "`RAY_AUTH_MODE=disabled ray start --head --port=6379` and pass --ray-address HOST:6379"
        ) from None


_WORKER_HARNESSES: dict[str, Any] = {}


def run_in_worker(spec: dict, config: dict) -> dict:
    """Body of one Ray task: run ``spec`` with a harness kept per worker process (its data and teacher caches)."""
    from grain_bench.harness import Harness
    from grain_bench.request import SweepRequest

    key = canonical_json(config)
    harness = _WORKER_HARNESSES.get(key)
    if harness is None:
        harness = _WORKER_HARNESSES[key] = Harness(SweepRequest.from_dict(config))
    return harness.run(RunSpec.from_dict(spec)).to_dict()


class RayExecutor:
    """One Ray task per spec; the driver appends results to the store as they arrive."""

    Options = RayOptions
    worker_function = staticmethod(run_in_worker)  # the body of every task: (spec dict, request dict) -> record dict

    def __init__(self, **options):
        self.options = RayOptions.parse(options)

    # ---- connection ---------------------------------------------------------------------------------------------
    def connect(self, ray) -> bool:
        """Join a running Ray session, connect to ``address``, or start a local instance; True when started here."""
        if ray.is_initialized():
            return False
        address = self.options.address or os.environ.get("RAY_ADDRESS")
        if address and address not in ("local", "auto") and "://" not in address:
            _check_reachable(address)  # ray.init would retry an unreachable head for minutes
        try:
            if address and address != "local":
                ray.init(address=address, log_to_driver=False)
            else:
                # "local": a new instance even when `ray start` runs on this machine (plain init would join it)
                ray.init(address="local", num_cpus=self.options.num_cpus or os.cpu_count() or 1,
                         include_dashboard=False, log_to_driver=False)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            where = f"the Ray cluster at {address}" if address and address != "local" else "a local Ray instance"
            raise GrainBenchError(
                f"could not start or reach {where}: {exc}. For a cluster, start its head with "
                "`RAY_AUTH_MODE=disabled ray start --head --port=6379` and pass --ray-address HOST:6379"
            ) from None
        return True

    def _task_options(self, ray) -> dict:
        gpus = self.options.gpus_per_run
        if gpus is None:
            gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        env = {name: os.environ[name] for name in FORWARDED_ENV if name in os.environ}
        options = {"num_cpus": self.options.cpus_per_run, "num_gpus": gpus, "max_retries": self.options.max_retries,
                   "retry_exceptions": False}
        if env:
            options["runtime_env"] = {"env_vars": env}
        return options

    # ---- the sweep ----------------------------------------------------------------------------------------------
    def run(self, specs, harness, store, progress: bool = True):
        """Run ``specs`` as Ray tasks (teachers first) and append each record to ``store`` as it arrives."""
        if not specs:
            return []
        ray = import_ray()
        started = self.connect(ray)
        try:
            return self._run(ray, specs, harness, store, progress)
        finally:
            if started and self.options.shutdown:
                ray.shutdown()

    def _run(self, ray, specs, harness, store, progress):
        remote = ray.remote(self.worker_function).options(**self._task_options(ray))
        # paths as the driver resolved them, so every worker reads the same teachers whatever its own home says
        config = harness.config.replace(results=os.path.abspath(harness.results_dir), progress=False,
                                        teacher_cache=harness.teacher_cache).to_dict()
        groups: dict[str, list[RunSpec]] = {}
        for spec in specs:
            groups.setdefault(teacher_group(spec), []).append(spec)

        pending: dict = {}  # ObjectRef -> (spec, group key or None when the spec is not a group's first)

        def submit(spec, group=None):
            pending[remote.remote(spec.to_dict(), config)] = (spec, group)

        for group, members in groups.items():
            submit(members[0], group)  # trains (or loads) the group's teacher
        records = []
        bar = tqdm(total=len(specs), desc="sweep (ray)", unit="run", disable=not progress)
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                for ref in ready:
                    spec, group = pending.pop(ref)
                    record = self._result(ray, ref, spec, harness)
                    store_record(store, record, spec)
                    records.append(record)
                    bar.update(1)
                    bar.set_postfix_str(spec.label(), refresh=True)
                    if group is not None:  # the teacher is in the cache now (or failed: the others try again)
                        for member in groups[group][1:]:
                            submit(member)
        except BaseException:
            for ref in pending:  # their runs have no record, so the next start of the sweep runs them again
                ray.cancel(ref, force=True)
            raise
        finally:
            bar.close()
        return records

    def _result(self, ray, ref, spec: RunSpec, harness) -> RunRecord:
        """The record a task returned, or an ``error`` record when its worker was lost or Ray failed it."""
        from ray.exceptions import RayError

        try:
            return RunRecord.from_dict(ray.get(ref))
        except RayError as exc:
            from grain_bench.environment import package_versions

            lost = type(exc).__name__ in ("WorkerCrashedError", "NodeDiedError", "OwnerDiedError", "ObjectLostError")
            what = "Ray worker lost" if lost else "Ray task failed"
            first = str(exc).splitlines()[0]
            message = f"{what} after {self.options.max_retries} retries: {type(exc).__name__}: {first}"
            record = RunRecord(run_id=spec.run_id, spec=spec, status="error", error=message,
                               versions=package_versions(), method_info={"traceback": traceback.format_exc(limit=8)},
                               created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
            harness.pm.hook.run_finished(record=record)  # the worker could not announce it
            return record
