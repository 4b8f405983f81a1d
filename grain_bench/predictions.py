"""Small per-run files stored beside a run's record: its per-example predictions and its final masks.

- ``RESULTS/predictions/<run_id>.json.gz``: the run's predictions on the scored split (class ids, regression values,
  word tags or answer texts) and the per-example statistics of the task's primary metric
  (``grain_bench.significance``), from which the leaderboard computes paired confidence intervals between methods;
- ``RESULTS/masks/<run_id>.json.gz``: the final 0/1 unit masks (a few kilobytes), from which ``grain-bench measure``
  and ``benchmarks/bench_latency.py`` rebuild the compact model's shape to time the masks training really produced.

Imports no torch at import time.
"""

from __future__ import annotations

import gzip
import json
import os
from typing import Any

import numpy as np

FOLDER = "predictions"
FORMAT = "grain-bench-predictions"
FORMAT_VERSION = 1


def relative_path(run_id: str) -> str:
    """Where a run's predictions live, relative to the results directory."""
    return os.path.join(FOLDER, f"{run_id}.json.gz")


def save_predictions(results_dir: str, run_id: str, task, encoded, predictions) -> str:
    """Write the predictions of ``task.predict`` on ``encoded`` (atomically); returns the path relative to
    ``results_dir``. Storage errors propagate (``OSError``)."""
    from grain_bench.files import write_atomically

    stats = task.example_stats(predictions, encoded)
    doc: dict[str, Any] = {"format": FORMAT, "format_version": FORMAT_VERSION, "run_id": run_id, "task": task.name,
                           "split": encoded.name, "metric": task.primary_metric,
                           "predictions": task.prediction_values(predictions, encoded)}
    if stats is not None:
        kind, rows = stats
        doc.update(stat_kind=kind, stats=np.asarray(rows, dtype=float).tolist())
    relative = relative_path(run_id)
    folder = os.path.join(results_dir, FOLDER)
    os.makedirs(folder, exist_ok=True)
    write_atomically(os.path.join(results_dir, relative),
                     json.dumps(doc, allow_nan=False, default=_plain).encode(), compress=True)
    return relative


def _plain(value):
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def load_predictions(results_dir: str, relative: str) -> dict[str, Any] | None:
    """The predictions document of a run (``stats`` as a numpy array), or None when the file is missing or unreadable
    (the caller says so in a note)."""
    path = os.path.join(results_dir, relative)
    try:
        with gzip.open(path, "rb") as handle:
            doc = json.loads(handle.read())
    except (OSError, ValueError, EOFError):
        return None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        return None
    if "stats" in doc:
        doc["stats"] = np.asarray(doc["stats"], dtype=float)
    return doc


MASKS_FOLDER = "masks"


def save_masks(results_dir: str, run_id: str, masks, space) -> str:
    """Write a run's final masks with its mask space (atomically); returns the path relative to ``results_dir``."""
    from grain_bench.files import write_atomically

    relative = os.path.join(MASKS_FOLDER, f"{run_id}.json.gz")
    folder = os.path.join(results_dir, MASKS_FOLDER)
    os.makedirs(folder, exist_ok=True)
    doc = {"format": "grain-bench-masks", "format_version": 1, "run_id": run_id, "space": space.to_dict(),
           "masks": masks.to_dict()}
    write_atomically(os.path.join(results_dir, relative), json.dumps(doc, separators=(",", ":")).encode(),
                     compress=True)
    return relative


def load_masks(results_dir: str, relative: str):
    """(UnitMasks, MaskSpace) of a stored masks file; ``GrainBenchError`` when it is missing or unreadable."""
    from grain_bench.errors import GrainBenchError
    from grain_bench.masks import MaskSpace, UnitMasks

    path = os.path.join(results_dir, relative)
    try:
        with gzip.open(path, "rb") as handle:
            doc = json.loads(handle.read())
        return UnitMasks.from_dict(doc["masks"]), MaskSpace(**doc["space"])
    except (OSError, ValueError, KeyError, TypeError, EOFError) as exc:
        raise GrainBenchError(f"cannot read the masks {path}: {exc}") from None
