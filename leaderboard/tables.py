"""The ``leaderboard show`` table: read a results directory and render the comparison."""

from __future__ import annotations

import os

from grain_bench.errors import GrainBenchError
from grain_bench.leaderboard.compare import summary
from grain_bench.leaderboard.render import FORMATS, render
from grain_bench.leaderboard.store import RecordStore
from grain_bench.types import Recipe


def caption_for(records) -> str:
    """Recipe, backbone and environment of the records, for the table caption."""
    recipes = {tuple(sorted(r.spec["recipe"].items())) for r in records if r.ok}
    backbones = sorted({r.spec["backbone"] for r in records if r.ok})
    parts = []
    if len(recipes) == 1:
        parts.append(Recipe.parse(dict(next(iter(recipes)))).caption())
    elif recipes:
        parts.append(f"{len(recipes)} different recipes (rows are not comparable)")
    if backbones:
        parts.append(f"backbone {', '.join(backbones)}")
    envs = sorted({r.environment.get("device", "?") + " / " + str(r.environment.get("torch_threads", "?")) + " threads"
                   for r in records if r.ok})
    if envs:
        parts.append("measured on " + "; ".join(envs))
    return "; ".join(parts)


def show_table(results_dir: str, fmt: str = "markdown", task: str | None = None, run_ids=None) -> str:
    """Render the comparison of ``results_dir`` (optionally one task, or only ``run_ids``)."""
    if fmt not in FORMATS:
        raise GrainBenchError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    store = RecordStore(results_dir)
    if not os.path.exists(store.path):
        raise GrainBenchError(f"no records in {results_dir!r} (expected {store.path}); run `grain-bench run` first")
    records = [r for r in store.latest().values() if run_ids is None or r.run_id in run_ids]
    notes = [f"skipped unreadable {p}" for p in store.problems]
    if task is not None:
        records = [r for r in records if r.spec.get("task") == task]
    errors = [r for r in records if not r.ok]
    table = summary(records)
    if table.empty:
        text = "(no successful runs" + (f" for task {task}" if task else "") + ")\n"
    else:
        text = render(table, fmt, caption_for(records))
    if errors:
        notes.append(f"{len(errors)} run(s) ended in error (see records.jsonl)")
    return text + "".join(f"note: {n}\n" for n in notes)
