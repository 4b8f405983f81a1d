"""Small per-run files stored beside a run's record: its per-example predictions and its final masks.

- ``RESULTS/predictions/<run_id>.json.gz``: the run's predictions on the scored split (class ids, regression values,
  word tags or answer texts), each example's id (``ids``: the data's own, else its position) and gold answer
  (``gold``), and the per-example statistics of the task's primary metric (``grain_bench.significance``), from which
  the leaderboard computes paired confidence intervals between methods (``grain-bench leaderboard samples`` prints
  or exports them; files written before ids were stored have no ``ids`` and ``gold``);
- ``RESULTS/masks/<run_id>.json.gz``: the final 0/1 unit masks (a few kilobytes), from which ``grain-bench measure``
  and ``benchmarks/bench_latency.py`` rebuild the compact model's shape to time the masks training really produced.

A run recorded again (``--rerun``, ``--retry-failed``) writes ``<run_id>.2.json.gz`` and so on (``free_path``): every
record keeps the files it names, so a superseded record's masks and predictions are never overwritten.

Imports no torch at import time.
"""

from __future__ import annotations

import gzip
import json
import os
import zlib
from typing import Any

import numpy as np

FOLDER = "predictions"
FORMAT = "grain-bench-predictions"
FORMAT_VERSION = 1


def relative_path(run_id: str) -> str:
    """Where a run's first predictions live, relative to the results directory."""
    return os.path.join(FOLDER, f"{run_id}.json.gz")


def free_path(results_dir: str, folder: str, run_id: str) -> str:
    """The first of ``folder/<run_id>.json.gz``, ``folder/<run_id>.2.json.gz``, ... that does not exist in
    ``results_dir`` (relative to it): a run recorded again never overwrites the files an earlier record names."""
    relative, attempt = os.path.join(folder, f"{run_id}.json.gz"), 1
    while os.path.lexists(os.path.join(results_dir, relative)):
        attempt += 1
        relative = os.path.join(folder, f"{run_id}.{attempt}.json.gz")
    return relative


def save_predictions(results_dir: str, run_id: str, task, encoded, predictions) -> str:
    """Write the predictions of ``task.predict`` on ``encoded`` (atomically); returns the path relative to
    ``results_dir``. Storage errors propagate (``OSError``)."""
    from grain_bench.files import write_atomically

    stats = task.example_stats(predictions, encoded)
    values = task.prediction_values(predictions, encoded)
    doc: dict[str, Any] = {"format": FORMAT, "format_version": FORMAT_VERSION, "run_id": run_id, "task": task.name,
                           "split": encoded.name, "metric": task.primary_metric, "predictions": values}
    for key, column in (("ids", task.example_ids(encoded)), ("gold", task.gold_values(encoded))):
        if len(column) == len(values):  # one per prediction, else left out rather than misaligned
            doc[key] = column
    if stats is not None:
        kind, rows = stats
        doc.update(stat_kind=kind, stats=np.asarray(rows, dtype=float).tolist())
    relative = free_path(results_dir, FOLDER, run_id)
    folder = os.path.join(results_dir, FOLDER)
    os.makedirs(folder, exist_ok=True)
    write_atomically(os.path.join(results_dir, relative),
                     json.dumps(doc, allow_nan=False, default=_plain).encode(), compress=True)
    return relative


def _plain(value):
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


#: columns of the per-example statistics of each kind (``grain_bench.significance``)
STAT_COLUMNS = {"mean": 2, "f1": 3, "mcc": 4, "pearson": 6}


def load_predictions(results_dir: str, relative: str, record=None, problems: list[str] | None = None
                     ) -> dict[str, Any] | None:
    """The predictions document of a run (``stats`` as a numpy array), or None when the file is missing or
    malformed: not gzip, cut short, not JSON, another format, another run's (given its ``record``), or statistics
    of an unknown kind, of the wrong width, not finite or not one row per prediction. A malformed file (not a missing
    one) adds a line to ``problems``, for the caller's notes."""
    path = os.path.join(results_dir, relative)
    if not os.path.lexists(path):
        return None
    try:
        with gzip.open(path, "rb") as handle:
            doc = json.loads(handle.read())
        return _checked_predictions(doc, record)
    except (OSError, ValueError, EOFError, zlib.error) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
        if problems is not None:
            problems.append(f"skipped the malformed predictions file {path} ({reason}); run the run again to "
                            f"store it again")
        return None


def _checked_predictions(doc: Any, record) -> dict[str, Any]:
    """A parsed predictions document with ``stats`` as a numpy array; ``ValueError`` saying what is wrong."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"not a {FORMAT} file")
    if doc.get("format_version", FORMAT_VERSION) != FORMAT_VERSION:
        raise ValueError(f"format version {doc.get('format_version')!r}; this grain-bench reads {FORMAT_VERSION}")
    if record is not None and doc.get("run_id") not in (record.run_id, record.method_info.get("previous_run_id")):
        raise ValueError(f"the predictions of run {doc.get('run_id')!r}, not of run {record.run_id}")
    predictions = doc.get("predictions")
    if not isinstance(predictions, list):
        raise ValueError("no list of predictions")
    if "stats" not in doc:
        return doc
    kind = doc.get("stat_kind")
    if kind not in STAT_COLUMNS:
        raise ValueError(f"statistics of unknown kind {kind!r}")
    stats = np.asarray(doc["stats"], dtype=float)  # ValueError when ragged or not numbers
    if stats.ndim != 2 or stats.shape[1] != STAT_COLUMNS[kind] or len(stats) != len(predictions):
        raise ValueError(f"statistics of shape {stats.shape}, expected ({len(predictions)}, {STAT_COLUMNS[kind]}): "
                         f"one row of {kind} statistics per prediction")
    if not np.isfinite(stats).all():
        raise ValueError("non-finite statistics")
    doc["stats"] = stats
    return doc


MASKS_FOLDER = "masks"
MASKS_FORMAT = "grain-bench-masks"
MASKS_FORMAT_VERSION = 1
#: how far a masks file's density may be from its record's ``density.achieved`` (both are the same float when written)
DENSITY_TOLERANCE = 1e-9


def _masks_digest(doc: dict[str, Any]) -> str:
    """SHA-256 of a masks document's content (run id, space and masks as canonical JSON)."""
    import hashlib

    content = {key: doc.get(key) for key in ("run_id", "space", "masks")}
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def save_masks(results_dir: str, run_id: str, masks, space) -> str:
    """Write a run's final masks with its mask space and a SHA-256 of that content (atomically); returns the path
    relative to ``results_dir``."""
    from grain_bench.files import write_atomically

    relative = free_path(results_dir, MASKS_FOLDER, run_id)
    folder = os.path.join(results_dir, MASKS_FOLDER)
    os.makedirs(folder, exist_ok=True)
    doc: dict[str, Any] = {"format": MASKS_FORMAT, "format_version": MASKS_FORMAT_VERSION, "run_id": run_id,
                           "space": space.to_dict(), "masks": masks.to_dict()}
    doc["sha256"] = _masks_digest(doc)
    write_atomically(os.path.join(results_dir, relative), json.dumps(doc, separators=(",", ":")).encode(),
                     compress=True)
    return relative


def load_masks(results_dir: str, relative: str, record=None, expected=None):
    """(UnitMasks, MaskSpace) of a stored masks file, checked: its format, its SHA-256 (files written before it was
    stored have none and are checked on the rest), a mask space of the ``expected`` one's shapes (the backbone's,
    when given), 0/1 masks of its shapes, a density in (0, 1] and, given the run's ``record``, its run id and the
    record's density. ``GrainBenchError`` naming the file otherwise."""
    from grain_bench.errors import GrainBenchError

    path = os.path.join(results_dir, relative)
    try:
        with gzip.open(path, "rb") as handle:
            doc = json.loads(handle.read())
    except (OSError, ValueError, EOFError, zlib.error) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
        raise GrainBenchError(f"cannot read the masks {path}: {reason}; re-run the run to store them again") from None
    try:
        masks, space = _checked_masks(doc, record, expected)
    except ValueError as exc:
        raise GrainBenchError(f"the masks {path} {exc}; re-run the run to store them again") from None
    return masks, space


def _checked_masks(doc: Any, record, expected):
    """(UnitMasks, MaskSpace) of a parsed masks document; ``ValueError`` saying what is wrong with it."""
    from grain_bench.masks import MaskSpace

    if not isinstance(doc, dict) or doc.get("format") != MASKS_FORMAT:
        raise ValueError(f"are not a grain-bench masks file (format {MASKS_FORMAT!r} expected)")
    if doc.get("format_version") != MASKS_FORMAT_VERSION:
        raise ValueError(f"are in format version {doc.get('format_version')!r}; this grain-bench reads "
                         f"{MASKS_FORMAT_VERSION}")
    if "sha256" in doc and doc["sha256"] != _masks_digest(doc):
        raise ValueError("do not match the SHA-256 stored with them (damaged or edited)")
    if record is not None and doc.get("run_id") not in (record.run_id, record.method_info.get("previous_run_id")):
        raise ValueError(f"belong to run {doc.get('run_id')!r}, not to run {record.run_id}")
    values = doc.get("space")
    if not isinstance(values, dict) or not all(type(v) is int and v >= 0 for v in values.values()):
        raise ValueError("hold no valid mask space")
    try:
        space = MaskSpace(**values)
    except TypeError:
        raise ValueError(f"hold a mask space with unknown fields {sorted(values)}") from None
    if space.total_cost() <= 0:
        raise ValueError(f"hold an empty mask space {space.shapes()}")
    if expected is not None and (space.shapes(), space.hidden) != (expected.shapes(), expected.hidden):
        raise ValueError(f"are over a mask space {space.shapes()} (hidden {space.hidden}), not the model's "
                         f"{expected.shapes()} (hidden {expected.hidden})")
    masks = _mask_tensors(doc.get("masks"), space)
    _check_density(masks.density(space), record)
    return masks, space


def _mask_tensors(data: Any, space):
    """UnitMasks from a document's 0/1 lists, each of its kind's shape in ``space``; ``ValueError`` otherwise."""
    import torch

    from grain_bench.masks import HIDDEN, KINDS, UnitMasks

    if not isinstance(data, dict):
        raise ValueError("hold no masks")
    tensors = []
    for kind in KINDS:
        try:
            values = torch.tensor(data[kind], dtype=torch.int64)
        except (KeyError, TypeError, ValueError, RuntimeError):
            raise ValueError(f"hold no valid {kind} masks (nested lists of 0 and 1)") from None
        if tuple(values.shape) != space.shapes()[kind]:
            raise ValueError(f"hold {kind} masks of shape {tuple(values.shape)}, not the {space.shapes()[kind]} of "
                             f"their mask space")
        if not bool(((values == 0) | (values == 1)).all()):
            raise ValueError(f"hold {kind} masks with values other than 0 and 1")
        tensors.append(values.bool())
    hidden = data.get(HIDDEN)
    if hidden is not None:  # the optional kind: a list of 0/1 of the hidden size
        try:
            values = torch.tensor(hidden, dtype=torch.int64)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError("hold no valid hidden masks (a list of 0 and 1)") from None
        if tuple(values.shape) != (space.hidden,) or not bool(((values == 0) | (values == 1)).all()):
            raise ValueError(f"hold hidden masks that are not {space.hidden} values of 0 or 1 (the hidden size of "
                             f"their mask space)")
        if not bool(values.any()):
            raise ValueError("hold hidden masks that keep no dimension")
        tensors.append(values.bool())
    return UnitMasks(*tensors)


def _check_density(density: float, record) -> None:
    if not 0.0 < density <= 1.0:
        raise ValueError(f"keep a density of {density:g}; a run's masks keep some units (density in (0, 1])")
    achieved = record.density.achieved if record is not None else None
    if achieved is not None and abs(density - achieved) > DENSITY_TOLERANCE:
        raise ValueError(f"keep a density of {density:.6g}, but the run's record says {achieved:.6g} (edited, or "
                         f"another run's masks)")
