"""The Python API: ``run`` a grid in one call and get its records as a pandas DataFrame; ``load_results`` reads any
results directory into the same frame. The ``grain-bench run`` command is a thin layer over ``prepare_sweep``.

Every check of the command line happens here too, before anything trains or is written: names, option ranges,
seeds, the device, the backbones and the results location raise ``GrainBenchError`` with one line that says what was
wrong.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from grain_bench.backbones import DEFAULT_BACKBONE
from grain_bench.harness import DEFAULT_RESULTS
from grain_bench.records import RunRecord
from grain_bench.types import RunSpec

DEFAULT_METHODS = ("dense", "random", "magnitude", "grain", "heads")


@dataclass
class Sweep:
    """A validated grid, ready to run: its specs, the store and the harness."""

    specs: list[RunSpec]
    store: Any  # RecordStore
    harness: Any  # Harness
    executor: str = "local"
    executor_options: dict[str, Any] = field(default_factory=dict)
    retry_failed: bool = False
    progress: bool = True
    recovered: int = 0  # records an earlier sweep had kept aside, appended by ``prepare_sweep``

    def status(self) -> str:
        """One line: how many runs the grid has, how many are recorded, and what happens to failed ones."""
        existing = self.store.latest()
        done = [s for s in self.specs if s.run_id in existing]
        failed = sum(1 for s in done if not existing[s.run_id].ok)
        skipped = len(done) - (failed if self.retry_failed else 0)
        hint = ""
        if failed:
            hint = (f" ({failed} of them failed: rerunning them)" if self.retry_failed else
                    f" ({failed} of them failed and are skipped: rerun them with --retry-failed)")
        return f"{len(self.specs)} runs in the grid, {skipped} already recorded in {self.store.path}{hint}"

    def execute(self) -> list[RunRecord]:
        """Run what is not recorded yet (errors too with ``retry_failed``); returns the new records."""
        from grain_bench.sweep import run_sweep

        return run_sweep(self.specs, self.harness, self.store, retry_failed=self.retry_failed, progress=self.progress,
                         executor=self.executor, executor_options=self.executor_options)

    @property
    def run_ids(self) -> set[str]:
        """Ids of the grid's runs."""
        return {s.run_id for s in self.specs}


def prepare_sweep(methods: Iterable[str] = DEFAULT_METHODS, tasks: Iterable[str] = ("tweets",),
                  densities: Iterable[float] = (0.2,), seeds: Iterable[int] = (1,), backbone: str = DEFAULT_BACKBONE,
                  recipe: str = "demo", recipe_options: dict[str, Any] | None = None,
                  method_options: dict[str, dict[str, Any]] | None = None, results: str = DEFAULT_RESULTS,
                  data_dir: str | None = None, device: str | None = None, executor: str = "local",
                  executor_options: dict[str, Any] | None = None, retry_failed: bool = False,
                  save_models: bool = True, measure_latency: bool = True, progress: bool = True,
                  data_revisions: dict[str, str] | None = None, save_predictions: bool = True, regs=None) -> Sweep:
    """Validate everything about a grid (raises ``GrainBenchError``) and return the ``Sweep`` that runs it."""
    import os

    from grain_bench.errors import UsageError
    from grain_bench.grid import build_specs
    from grain_bench.harness import Harness
    from grain_bench.leaderboard.store import RecordStore
    from grain_bench.plugins import get_registries
    from grain_bench.preflight import check_backbones, check_device
    from grain_bench.recipes import get_recipe

    regs = regs or get_registries()
    overrides = dict(recipe_options or {})
    get_recipe(recipe, overrides)  # the name and the overrides, before anything else
    if data_dir is not None and not os.path.isdir(data_dir):
        raise UsageError(f"--data-dir {data_dir!r} is not a directory")
    regs.executors.get(executor)  # raises with the choices
    check_device(device)
    specs = build_specs(regs, list(methods), list(tasks), list(densities), list(seeds), backbone,
                        lambda task: get_recipe(recipe, overrides, task), method_options, data_dir,
                        _expand_revisions(regs, data_revisions))
    store = RecordStore(results)
    store.check_writable()
    store.check_current()  # records of an older schema: upgraded once, explicitly, not re-run
    check_backbones(specs, regs)
    recovered = store.recover_aside()
    harness = Harness(results, regs=regs, progress=progress, device=device, save_models=save_models,
                      measure_latency=measure_latency, save_predictions=save_predictions)
    return Sweep(specs, store, harness, executor, dict(executor_options or {}), retry_failed, progress, recovered)


def _expand_revisions(regs, revisions: dict[str, str] | None) -> dict[str, str]:
    """{task, suite or "*": revision} with suites expanded to their tasks (unknown names raise)."""
    out: dict[str, str] = {}
    for name, revision in (revisions or {}).items():
        for task in (["*"] if name == "*" else regs.expand_tasks([name])):
            out[task] = revision
    return out


def run(methods: Iterable[str] = DEFAULT_METHODS, tasks: Iterable[str] = ("tweets",),
        densities: Iterable[float] = (0.2,), seeds: Iterable[int] = (1,), backbone: str = DEFAULT_BACKBONE,
        recipe: str = "demo", recipe_options: dict[str, Any] | None = None,
        method_options: dict[str, dict[str, Any]] | None = None, results: str = DEFAULT_RESULTS,
        data_dir: str | None = None, device: str | None = None, executor: str = "local",
        executor_options: dict[str, Any] | None = None, retry_failed: bool = False, save_models: bool = True,
        measure_latency: bool = True, progress: bool = True, data_revisions: dict[str, str] | None = None,
        save_predictions: bool = True):
    """Run the grid methods × tasks × densities × seeds (what is not recorded yet) and return the records of the
    whole grid as a DataFrame, one row per run (see ``load_results`` for the columns).

    The same grid as ``grain-bench run``: ``recipe_options`` is ``-r`` ({"max_steps": 300}), ``method_options`` is
    ``-o`` ({"grain": {"alpha": 0.0}}), ``data_revisions`` is ``--data-revision`` ({"glue": "main"} or {"*": ...}).
    A failed run is a row with ``status == "error"`` and its message."""
    sweep = prepare_sweep(methods, tasks, densities, seeds, backbone, recipe, recipe_options, method_options, results,
                          data_dir, device, executor, executor_options, retry_failed, save_models, measure_latency,
                          progress, data_revisions, save_predictions)
    if progress:
        print(f"grain-bench: {sweep.status()}", file=sys.stderr)
    sweep.execute()
    return load_results(results, run_ids=sweep.run_ids)


def load_results(results: str = DEFAULT_RESULTS, task: str | None = None, run_ids: Iterable[str] | None = None):
    """The latest record of every run in ``results`` (read-only) as a DataFrame, one row per run.

    Columns: ``run_id``, ``status``, ``error``, the spec (``method``, ``options`` as a dict, ``task``,
    ``task_version``, ``data``, ``backbone``, ``target_density``, ``seed``, ``recipe`` name), ``metric`` and
    ``score`` (the task's primary metric), ``score.<metric>``, ``teacher.<metric>`` and ``chance.<metric>`` for every
    metric, ``density`` (kept share of the encoder's parameters, as in tables), ``achieved_density`` (kept share of
    the unit cost, what ``target_density`` asks for), ``encoder_params``, ``flops_speedup`` (predicted), ``speedup``
    (measured, compact vs dense) with ``latency_device``, ``wall_time_s``, ``artifact`` (the saved model),
    ``warnings``, ``nonfinite`` and ``created``. Unreadable lines and malformed records are left out, as in tables."""
    import pandas as pd

    from grain_bench.leaderboard.tables import load_records

    wanted = set(run_ids) if run_ids is not None else None
    records, _ = load_records(results, task, wanted)
    return pd.DataFrame([record_row(r) for r in records])


def record_row(record: RunRecord) -> dict[str, Any]:
    """One DataFrame row of ``load_results``."""
    spec = record.spec
    compact = record.latency_of("compact")
    row: dict[str, Any] = {
        "run_id": record.run_id, "status": record.status, "error": record.error, "method": spec.method,
        "options": dict(spec.method_options), "task": spec.task, "task_version": spec.task_version,
        "data": spec.data, "backbone": spec.backbone, "target_density": spec.target_density, "seed": spec.seed,
        "recipe": spec.recipe.get("name"), "metric": record.primary_metric,
        "score": record.scores.get(record.primary_metric) if record.primary_metric else None,
    }
    for prefix, scores in (("score", record.scores), ("teacher", record.teacher_scores),
                           ("chance", record.chance_scores)):
        row.update({f"{prefix}.{name}": value for name, value in scores.items()})
    row.update({
        "density": record.density.encoder_params, "achieved_density": record.density.achieved,
        "encoder_params": record.params.encoder, "flops_speedup": record.flops.predicted_speedup,
        "speedup": compact.speedup if compact else None, "latency_device": compact.device if compact else None,
        "wall_time_s": record.wall_time_s, "artifact": record.artifact,
        "predictions": record.predictions, "warnings": list(record.warnings), "nonfinite": list(record.nonfinite),
        "created": record.created,
    })
    return row
