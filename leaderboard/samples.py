"""``grain-bench leaderboard samples RUN_ID``: a run's per-example predictions with each example's id and gold answer,
printed or exported (``markdown``, ``jsonl``, ``csv``, and for SQuAD the official ``{question id: answer}`` form the
v1.1 evaluation script reads). Reads the results directory only; imports no torch.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from grain_bench.errors import GrainBenchError, UsageError

SAMPLE_FORMATS = ("markdown", "jsonl", "csv", "squad")


def find_run(results: str, run_id: str):
    """The latest record of the run ``run_id`` (a whole id or a unique prefix of one) in ``results``."""
    from grain_bench.leaderboard.tables import load_records

    records, _ = load_records(results)
    matches = [r for r in records if r.run_id == run_id] or [r for r in records if r.run_id.startswith(run_id)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        known = ", ".join(sorted(r.run_id for r in records)[:5])
        raise UsageError(f"no run {run_id!r} in {results!r}; its run ids look like {known}"
                         f"{' ...' if len(records) > 5 else ''} (grain-bench leaderboard show lists the runs)")
    raise UsageError(f"{run_id!r} is the start of {len(matches)} run ids in {results!r} "
                     f"({', '.join(sorted(r.run_id for r in matches))}); give more of it")


def samples(results: str, run_id: str) -> tuple[Any, list[dict[str, Any]]]:
    """(record, rows) of a run: per scored example ``id``, ``prediction``, ``gold`` and, where the task has them,
    ``score`` (the example's statistic of the primary metric: 1/0 for accuracy, F1 for SQuAD). Predictions stored
    before ids were have positions for ids and no gold."""
    from grain_bench.predictions import load_predictions

    record = find_run(results, run_id)
    if not record.predictions:
        raise GrainBenchError(f"run {record.run_id} stored no predictions ({record.status}"
                              f"{': ' + record.error if record.error else ''}); run it again without "
                              f"--no-predictions to have them")
    problems: list[str] = []
    doc = load_predictions(results, record.predictions, record, problems)
    if doc is None:
        raise GrainBenchError(problems[0] if problems else
                              f"the predictions file of run {record.run_id} ({record.predictions}) is missing")
    predictions = doc["predictions"]
    ids = doc.get("ids") or list(range(len(predictions)))
    gold = doc.get("gold") or [None] * len(predictions)
    stats = doc.get("stats")
    rows = []
    for index, (example, predicted, answer) in enumerate(zip(ids, predictions, gold)):
        row: dict[str, Any] = {"id": example, "prediction": predicted, "gold": answer}
        if stats is not None and doc.get("stat_kind") == "mean":
            row["score"] = float(stats[index][0] / stats[index][1]) if stats[index][1] else None
        rows.append(row)
    return record, rows


def render_samples(record, rows: list[dict[str, Any]], fmt: str, limit: int | None = None) -> str:
    """The rows in ``fmt`` (one of ``SAMPLE_FORMATS``); ``limit`` keeps the first rows (``markdown``'s default 20)."""
    if fmt not in SAMPLE_FORMATS:
        raise UsageError(f"unknown samples format {fmt!r}; expected one of {', '.join(SAMPLE_FORMATS)}")
    if fmt == "squad":
        if record.spec.task != "squad":
            raise UsageError(f"--format squad is SQuAD's {{question id: answer}} file; run {record.run_id} is "
                             f"{record.spec.task} (use jsonl or csv)")
        return json.dumps({str(row["id"]): row["prediction"] for row in rows}, ensure_ascii=False) + "\n"
    shown = rows[:limit] if limit is not None else rows
    if fmt == "jsonl":
        return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in shown)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(shown[0]) if shown else ["id", "prediction", "gold"])
        writer.writeheader()
        writer.writerows({k: _cell(v) for k, v in row.items()} for row in shown)
        return out.getvalue()
    return _markdown(record, rows, 20 if limit is None else limit)


def _cell(value: Any) -> Any:
    """A CSV cell: lists (word tags, reference answers) as JSON, the rest as it is."""
    return json.dumps(value, ensure_ascii=False) if isinstance(value, (list, dict)) else value


def _markdown(record, rows: list[dict[str, Any]], limit: int) -> str:
    from tabulate import tabulate

    shown = rows[:limit]
    table = tabulate([{k: _short(_cell(v)) for k, v in row.items()} for row in shown], headers="keys",
                     tablefmt="github")
    more = f"\n\n{len(rows) - len(shown)} more; --limit N shows more, --format jsonl or csv all" \
        if len(rows) > len(shown) else ""
    return (f"run {record.run_id}: {record.spec.method} on {record.spec.task} @ {record.spec.target_density:g} seed "
            f"{record.spec.seed}, {len(rows)} scored examples\n\n{table}{more}\n")


def _short(value: Any, width: int = 60) -> Any:
    text = value if isinstance(value, str) else None
    return text[:width - 3] + "..." if text is not None and len(text) > width else value
