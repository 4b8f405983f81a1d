"""The Python API: ``run`` a grid in one call and get its records as a pandas DataFrame; ``load_results`` reads any
results directory into the same frame. The ``grain-bench run`` command is a thin layer over ``prepare_sweep``.

Every check of the command line happens here too, before anything trains or is written: names, option ranges,
seeds, the device, the backbones and the results location raise ``GrainBenchError`` with one line that says what was
wrong.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from grain_bench.errors import UsageError
from grain_bench.records import RunRecord
from grain_bench.request import DEFAULT_RESULTS, SweepRequest
from grain_bench.types import RunSpec


@dataclass
class Sweep:
    """A validated grid, ready to run: the request it came from, its specs, the store and the harness."""

    request: SweepRequest
    specs: list[RunSpec]
    store: Any  # RecordStore
    harness: Any  # Harness
    recovered: int = 0  # records an earlier sweep had kept aside, appended by ``prepare_sweep``
    dry_run: bool = False  # planned without writing: ``estimates`` only, never executed

    def status(self) -> str:
        """One line: how many runs the grid has, how many are recorded, and what happens to failed ones."""
        existing = self.store.latest()
        done = [s for s in self.specs if s.run_id in existing]
        failed = sum(1 for s in done if not existing[s.run_id].ok)
        if self.request.rerun:
            return (f"{len(self.specs)} runs in the grid, {len(done)} already recorded in {self.store.path}: "
                    f"rerunning all of them (--rerun; the new records supersede the old)")
        skipped = len(done) - (failed if self.request.retry_failed else 0)
        hint = ""
        if failed:
            hint = (f" ({failed} of them failed: rerunning them)" if self.request.retry_failed else
                    f" ({failed} of them failed and are skipped: rerun them with --retry-failed)")
        return f"{len(self.specs)} runs in the grid, {skipped} already recorded in {self.store.path}{hint}"

    def estimates(self):
        """Every run of the grid with what the sweep does with it and its estimated cost on this machine
        (``grain_bench.estimate.estimate_runs``); reads, writes nothing."""
        from grain_bench.estimate import estimate_runs

        return estimate_runs(self)

    def execute(self) -> list[RunRecord]:
        """Run what is not recorded yet (errors too with ``retry_failed``); returns the new records."""
        from grain_bench.sweep import run_sweep

        if self.dry_run:
            raise UsageError("this sweep was planned as a dry run (nothing profiled or kept): plan it again with "
                             "prepare_sweep(..., dry_run=False) to run it")
        request = self.request
        return run_sweep(self.specs, self.harness, self.store, retry_failed=request.retry_failed,
                         progress=request.progress, executor=request.executor,
                         executor_options=request.executor_options, rerun=request.rerun)

    @property
    def run_ids(self) -> set[str]:
        """Ids of the grid's runs."""
        return {s.run_id for s in self.specs}


def prepare_sweep(request: SweepRequest | None = None, regs=None, dry_run: bool = False, **choices: Any) -> Sweep:
    """Validate everything about a sweep (raises ``GrainBenchError``) and return the ``Sweep`` that runs it.

    ``request`` is a ``SweepRequest`` (default: one built from ``choices``, its field names as keywords); ``regs`` the
    registries names are looked up in (default: the process-wide ones). ``dry_run``: plan it without writing
    anything (no cost model profiled or kept in the results directory, no record kept aside appended), for
    ``Sweep.estimates`` (``grain-bench run --dry-run``); such a sweep is not executed."""
    from grain_bench.environment import default_device
    from grain_bench.grid import build_specs
    from grain_bench.harness import Harness
    from grain_bench.leaderboard.store import RecordStore
    from grain_bench.plugins import get_registries
    from grain_bench.precision import for_device
    from grain_bench.preflight import check_backbones, check_teacher_cache
    from grain_bench.recipes import get_recipe

    request = _request(request, choices)
    regs = regs or get_registries()
    _check_request(request, regs)
    overrides = dict(request.recipe_options)

    device = default_device(request.device)

    def recipe(task: str):  # the named recipe with the values the task declares for it, under the user's overrides,
        # trained in the precision asked for, else the device's default (part of the run id where it is not fp32)
        named = get_recipe(request.recipe, overrides, regs.tasks.get(task))
        return for_device(named if "precision" in overrides else replace(named, precision="auto"), device)

    specs = build_specs(regs, list(request.methods), list(request.tasks), list(request.grid_densities()),
                        list(request.seeds), request.backbone, recipe, request.method_options, request.data_dir,
                        _revisions(regs, request), list(request.target_speedups))
    store = RecordStore(request.results)
    store.check_writable()
    store.check_current()  # records of an older schema: upgraded once, explicitly, not re-run
    check_teacher_cache(request.teacher_cache)
    cost_models = _cost_models(request, specs, regs, profile=not dry_run)
    check_backbones(specs, regs, cost_models=cost_models)
    specs = _with_cost_models(request, specs, cost_models, keep=not dry_run)
    recovered = 0 if dry_run else store.recover_aside()
    return Sweep(request, specs, store, Harness(request, regs=regs), recovered, dry_run)


def _check_request(request: SweepRequest, regs) -> None:
    """The checks that need no grid: the environment, the recipe and its overrides, the data folder, the executor and
    the device."""
    from grain_bench.preflight import check_device, check_environment
    from grain_bench.recipes import get_recipe

    check_environment()
    get_recipe(request.recipe, dict(request.recipe_options))  # the name and the overrides, before anything else
    if request.data_dir is not None and not os.path.isdir(request.data_dir):
        raise UsageError(f"--data-dir {request.data_dir!r} is not a directory")
    regs.executors.get(request.executor)  # raises with the choices
    check_device(request.device)


def _cost_models(request: SweepRequest, specs, regs, profile: bool = True):
    """The ``SweepCostModels`` of a grid with target speedups (None without): the given file read and checked now;
    ``profile``: whether a device model not cached yet is profiled (else such specs stay without one)."""
    if not any(spec.target_speedup for spec in specs):
        if request.cost_model is not None:
            from grain_bench.errors import UsageError

            raise UsageError("--cost-model is only used with --target-speedup")
        return None
    from grain_bench.environment import default_device
    from grain_bench.profile import SweepCostModels

    return SweepCostModels(request.cost_model, default_device(request.device), regs, request.progress,
                           profile=profile)


def _with_cost_models(request: SweepRequest, specs, cost_models, keep: bool = True):
    """Specs with their cost models' keys, the models kept in the results directory unless not ``keep`` (after every
    check: profiling a model on first use is the last step of planning). A spec whose model is not profiled (a dry
    run) keeps no key."""
    if cost_models is None:
        return specs
    from grain_bench.costs import store_in_results
    from grain_bench.grid import with_cost_models

    def model_of(spec):
        model = cost_models.of(spec)
        if keep and model is not None:
            store_in_results(request.results, model)
        return model

    return with_cost_models(specs, model_of)


def _request(request: SweepRequest | None, choices: dict[str, Any]) -> SweepRequest:
    if request is not None and choices:
        raise UsageError(f"give a SweepRequest or its fields as keywords, not both (got {', '.join(choices)})")
    if request is not None and not isinstance(request, SweepRequest):
        raise UsageError(f"the request must be a grain_bench.request.SweepRequest, got {type(request).__name__}; or "
                         f"give its fields as keywords: grain_bench.run(methods=[...], ...)")
    return request if request is not None else SweepRequest.parse(choices)


def _revisions(regs, request: SweepRequest) -> dict[str, str]:
    """``data_revisions`` ({task, suite or "*": revision}) with suites expanded to their tasks, refused where a
    revision cannot apply: with ``data_dir`` (local files are identified by their content), for a name that is none
    of the grid's tasks, or for tasks that do not load from the hub (tweets: its packaged file)."""
    if not request.data_revisions:
        return {}
    if request.data_dir is not None:
        raise UsageError(f"--data-revision applies to hub data, not to --data-dir {request.data_dir!r} (local files "
                         f"are identified by their content): give one or the other")
    tasks = regs.expand_tasks(request.tasks)
    out: dict[str, str] = {}
    for name, revision in request.data_revisions.items():
        given = f"--data-revision {revision!r}" if name == "*" else f"--data-revision {name}={revision}"
        if not revision.strip():
            raise UsageError(f"{given}: expected a branch, tag or commit of the hub dataset, e.g. main")
        targets = tasks if name == "*" else [t for t in regs.expand_tasks([name]) if t in tasks]
        if not targets:
            raise UsageError(f"{given}: {name!r} is none of the tasks of --tasks ({', '.join(tasks)})")
        if not any(regs.tasks.get(t).hub_id for t in targets):
            what = f"task {targets[0]} does" if len(targets) == 1 else f"tasks {', '.join(targets)} do"
            raise UsageError(f"{given}: {what} not load from the hub (it reads packaged or local files, identified by "
                             f"their content); leave --data-revision out")
        out.update({"*": revision} if name == "*" else dict.fromkeys(targets, revision))
    return out


def run(request: SweepRequest | None = None, **choices: Any):
    """Run a sweep (what is not recorded yet) and return the records of its whole grid as a DataFrame, one row per
    run (see ``load_results`` for the columns).

    The choices are ``SweepRequest``'s fields, as keywords (or a ``SweepRequest``): the same as ``grain-bench run``'s
    flags, with the same defaults: ``methods=["grain", "heads"]``, ``densities=[0.05, 0.2]``, ``recipe="quick"``,
    ``recipe_options`` is ``-r`` ({"max_steps": 300}), ``method_options`` is ``-o`` ({"grain": {"alpha": 0.0}}),
    ``data_revisions`` is ``--data-revision`` ({"glue": "main"} or {"*": ...}). A bad choice raises
    ``GrainBenchError`` before anything runs; a failed run is a row with ``status == "error"`` and its message."""
    sweep = prepare_sweep(request, **choices)
    if sweep.request.progress:
        print(f"grain-bench: {sweep.status()}", file=sys.stderr)
    records = sweep.execute()
    return _grid_frame(sweep, records)


def _grid_frame(sweep: Sweep, records: list[RunRecord]):
    """The grid's stored records (``load_results``) and the new ones the store could not take, which wait aside until
    the next sweep with the same ``results`` appends them (each said on stderr): a trained run is never missing."""
    import pandas as pd

    aside = dict(sweep.store.aside)
    for run_id, path in aside.items():
        print(f"grain-bench: warning: run {run_id} could not be appended to {sweep.store.path}; its record is kept in "
              f"{path} and is appended by the next run with the same results", file=sys.stderr)
    stored = (load_results(sweep.request.results, run_ids=sweep.run_ids - set(aside))
              if os.path.isfile(sweep.store.path) else pd.DataFrame())
    kept = pd.DataFrame([record_row(r, sweep.request.results) for r in records if r.run_id in aside])
    frames = [frame for frame in (stored, kept) if not frame.empty]
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0] if frames else stored


def load_results(results: str = DEFAULT_RESULTS, task: str | None = None, run_ids: Iterable[str] | None = None):
    """The latest record of every run in ``results`` (read-only) as a DataFrame, one row per run.

    Columns: ``run_id``, ``status``, ``error``, the spec (``method``, ``options`` as a dict, ``task``,
    ``task_version``, ``data``, ``backbone``, ``target_density``, ``seed``, ``recipe`` name), ``metric`` and
    ``score`` (the task's primary metric), ``score.<metric>``, ``teacher.<metric>`` and ``chance.<metric>`` for every
    metric, ``density`` (kept share of the encoder's parameters, as in tables), ``achieved_density`` (kept share of
    the unit cost, what ``target_density`` asks for), ``encoder_params``, ``flops_speedup`` (predicted), ``speedup``
    (measured, compact vs dense) with ``latency_device``, ``wall_time_s``, ``artifact`` (the saved model) and
    ``predictions`` (its per-example predictions; both absolute paths, None when not saved), ``warnings``,
    ``nonfinite`` and ``created``. Unreadable lines and malformed records are left out, as in tables."""
    import pandas as pd

    from grain_bench.leaderboard.tables import load_records

    wanted = set(run_ids) if run_ids is not None else None
    records, _ = load_records(results, task, wanted)
    return pd.DataFrame([record_row(r, results) for r in records])


def record_row(record: RunRecord, results: str) -> dict[str, Any]:
    """One DataFrame row of ``load_results``: the record's file paths resolved against its ``results`` directory
    (absolute, so ``load_pruned(row["artifact"])`` works from any working directory)."""
    spec = record.spec
    compact = record.latency_of("compact")
    row: dict[str, Any] = {
        "run_id": record.run_id, "status": record.status, "error": record.error, "method": spec.method,
        "options": dict(spec.method_options), "task": spec.task, "task_version": spec.task_version,
        "data": spec.data, "backbone": spec.backbone, "target_density": spec.target_density, "seed": spec.seed,
        "recipe": spec.recipe.get("name"), "metric": record.primary_metric,
        "score": record.scores.get(record.primary_metric) if record.primary_metric else None,
    }
    for prefix, scores in (("score", record.scores), ("se", record.standard_errors),
                           ("teacher", record.teacher_scores), ("chance", record.chance_scores)):
        row.update({f"{prefix}.{name}": value for name, value in scores.items()})
    row.update({
        "density": record.density.encoder_params, "achieved_density": record.density.achieved,
        "encoder_params": record.params.encoder, "flops_speedup": record.flops.predicted_speedup,
        "speedup": compact.speedup if compact else None, "latency_device": compact.device if compact else None,
        "wall_time_s": record.wall_time_s, "artifact": _resolved(results, record.artifact),
        "predictions": _resolved(results, record.predictions), "warnings": list(record.warnings),
        "nonfinite": list(record.nonfinite),
        "created": record.created,
    })
    return row


def _resolved(results: str, path: str | None) -> str | None:
    """A record's path (relative to its results directory) as an absolute path; None stays None. Records from before
    paths were relative hold absolute ones (``/old/results/models/<run id>``): where ``results`` has that file under
    the same folder and name (a copied or moved results folder), it is the one meant."""
    if path is None:
        return None
    if os.path.isabs(path):
        local = os.path.join(results, os.path.basename(os.path.dirname(path)), os.path.basename(path))
        return os.path.abspath(local) if os.path.exists(local) else path
    return os.path.abspath(os.path.join(results, path))
