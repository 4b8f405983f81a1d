"""Quiet re-timing: ``grain-bench measure --results DIR`` times every run's compact model again, side by side with its
dense backbone in one process, and stores the measurements linked to their runs (``RESULTS/measurements.jsonl``).

A run's own latency entry is a short timing taken while other runs may be training on the same machine; the
re-timing is meant for a quiet machine and uses the masks the run stored (``RESULTS/masks/<run_id>.json.gz``): the
compact model is rebuilt from the backbone's weights with those masks (timing does not depend on the weight values)
and checked against the masked model before it is timed. Every model of one backbone, head and length is timed in
the same rounds, in a shuffled order, with the dense model as the baseline of each. Tables prefer the latest
re-timing of a run over its in-run figure and say which one they show.

Before anything is timed, the location (a writable results directory, ``measurements.jsonl`` a file), ``--task``,
the runs (a store of only failed runs says so), every backbone's positions against the length and every run's masks
file (``grain_bench.predictions.load_masks``: format, hash, shapes against the backbone's mask space, density against
the record) are checked. A run whose masks fail is reported in one line and left out; the other runs are still
re-timed and stored.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Any

from grain_bench.errors import GrainBenchError, UsageError


@dataclass(frozen=True)
class RetimeSettings:
    """How to re-time: batch, length (None: each run's recipe length), threads, device, dtype, mode, rounds."""

    batch: int = 32
    seq_len: int | None = None
    threads: int = 2
    device: str = "cpu"
    dtype: str = "fp32"
    mode: str = "eager"
    runs: int = 15
    warmup: int = 2


@dataclass
class RetimeOutcome:
    """What a re-timing did: the measurements it stored, one line per run it could not re-time, and the task it was
    restricted to (canonical name, or None)."""

    measurements: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    task: str | None = None


def retime(results_dir: str, settings: RetimeSettings, task: str | None = None, progress: bool = True,
           command: str = "", regs=None, methods: list[str] | None = None) -> RetimeOutcome:
    """Re-time every ``ok`` run of ``results_dir`` that stored its masks (of ``task`` and of ``methods``, when
    given); append the measurements and return them with the runs that could not be re-timed. ``regs``: where tasks,
    backbones and runtimes are looked up (default: the process-wide registries). Everything is checked before the
    first model is timed."""
    from tqdm.auto import tqdm

    from grain_bench.plugins import get_registries

    regs = regs or get_registries()
    check_location(results_dir)
    task, runs = _runs_to_retime(results_dir, task, regs, methods)
    outcome = RetimeOutcome(task=task)
    setups = _setups(runs, settings, regs)
    checked = _checked_masks(results_dir, setups, regs, outcome.failures)
    for setup, members in tqdm(setups.items(), desc="re-timing", disable=not progress):
        members = [r for r in members if r.run_id in checked]
        if members:
            outcome.measurements += _retime_setup(results_dir, setup, members, settings, command, regs, checked,
                                                  outcome.failures)
    return outcome


def check_location(results_dir: str) -> None:
    """``UsageError`` unless measurements can be appended in ``results_dir``: an existing directory, writable,
    ``measurements.jsonl`` a regular file (or absent) that can be appended to, and its lock obtainable."""
    from filelock import FileLock, Timeout

    from grain_bench.leaderboard.store import lock_timeout, measurements_path

    if not os.path.isdir(results_dir):
        raise UsageError(f"--results {results_dir!r} is not a results directory; pass the --results of a "
                         f"`grain-bench run`")
    path = measurements_path(results_dir)
    if os.path.lexists(path) and not os.path.isfile(path):
        raise UsageError(f"{path} is not a regular file (a directory?); the re-timings are appended to it: move it "
                         f"away and run `grain-bench measure` again")
    try:
        with tempfile.NamedTemporaryFile(dir=results_dir, prefix=".grain-bench-probe-"):
            pass
        if os.path.exists(path):
            os.close(os.open(path, os.O_WRONLY | os.O_APPEND))
        with FileLock(path + ".lock", timeout=min(lock_timeout(), 10.0)):
            pass
    except OSError as exc:
        raise UsageError(f"cannot store re-timings in {results_dir!r} ({path}): {exc.strerror or exc}; make it "
                         f"writable or copy the results directory somewhere writable") from None
    except Timeout:
        raise UsageError(f"the lock {path}.lock is held by another process; wait for it (or stop it) and run "
                         f"`grain-bench measure` again") from None


def _runs_to_retime(results_dir: str, task: str | None, regs, methods: list[str] | None = None
                    ) -> tuple[str | None, list]:
    """(the canonical ``task``, the ``ok`` runs with stored masks, of ``methods`` when given); ``GrainBenchError``
    saying why there are none."""
    from grain_bench.leaderboard.tables import load_records

    records, _ = load_records(results_dir)
    if methods:
        stored = {r.spec.method for r in records}
        missing = [m for m in methods if m not in stored]
        if missing:
            raise UsageError(f"no runs of method(s) {', '.join(missing)} in {results_dir!r} (its runs are of "
                             f"{', '.join(sorted(stored)) or 'no method'}); pass some of those to --methods")
        records = [r for r in records if r.spec.method in methods]
    if task is not None:
        stored = {r.spec.task for r in records}
        task = task if task in stored or task not in regs.tasks else regs.tasks.entry(task).name
        if task not in stored:
            regs.tasks.entry(task)  # an unknown name: did-you-mean and the choices
            raise UsageError(f"no runs of task {task!r} in {results_dir!r} (its runs are of "
                             f"{', '.join(sorted(stored)) or 'no task'}); pass one of those to --task")
        records = [r for r in records if r.spec.task == task]
    ok = [r for r in records if r.ok]
    if not records:
        raise GrainBenchError(f"no readable records in {results_dir!r}: nothing to re-time; run `grain-bench run` "
                              f"first")
    if not ok:
        raise GrainBenchError(f"all {len(records)} run(s) in {results_dir!r}{f' of task {task}' if task else ''} "
                              f"failed (status error): there is nothing to re-time; see `grain-bench leaderboard "
                              f"show --results {results_dir}` and re-run them with `grain-bench run --retry-failed`")
    runs = [r for r in ok if r.masks]
    if not runs:
        raise GrainBenchError(f"no run in {results_dir!r} stored its masks (runs from grain-bench 0.1.0 before "
                              f"masks were stored cannot be re-timed; run them again)")
    return task, runs


def _setups(runs, settings: RetimeSettings, regs) -> dict[tuple, list]:
    """The runs by (backbone, head, label count, length): each group is timed in the same rounds as one dense model."""
    from grain_bench.types import Recipe

    groups: dict[tuple, list] = {}
    for record in runs:
        task = regs.tasks.get(record.spec.task) if record.spec.task in regs.tasks else None
        head, num_labels = (task.head, task.num_labels) if task is not None else ("sequence", 2)
        seq_len = settings.seq_len or Recipe.parse(record.spec.recipe).max_length
        groups.setdefault((record.spec.backbone, head, num_labels, seq_len), []).append(record)
    return groups


def _checked_masks(results_dir: str, setups: dict[tuple, list], regs, failures: list[str]) -> dict[str, tuple]:
    """{run id: (masks, space)} of every run whose masks file passes its checks and fits its backbone's mask space,
    after each backbone's positions are checked against its groups' lengths (``UsageError``); a run whose masks
    fail adds one line to ``failures``."""
    from grain_bench.backbones import inspect_backbone
    from grain_bench.masks import MaskSpace
    from grain_bench.predictions import load_masks

    spaces: dict[str, MaskSpace] = {}
    for backbone, _, _, seq_len in setups:
        if backbone not in spaces:
            config = inspect_backbone(backbone, regs=regs).config
            spaces[backbone] = MaskSpace.from_config(config)
        positions = spaces[backbone].max_positions
        if positions and seq_len > positions:
            raise UsageError(f"--seq-len {seq_len} is longer than backbone {backbone!r} allows ({positions} "
                             f"positions); give --seq-len {positions} or less")
    checked: dict[str, tuple] = {}
    for (backbone, *_), members in setups.items():
        for record in members:
            try:
                checked[record.run_id] = load_masks(results_dir, record.masks, record, spaces[backbone])
            except GrainBenchError as exc:
                failures.append(f"run {record.run_id} not re-timed: {exc}")
    return checked


def _compact_models(dense, head: str, members, seq_len: int, checked: dict[str, tuple], failures: list[str]):
    """({label: model}, {label: FLOPs-predicted speedup}, {run id: shape}): the dense model and every run's compact
    model rebuilt from its checked masks, each checked against its masked model first (a run that fails is left out,
    with a line in ``failures``)."""
    from grain_bench.backbones import auto_class
    from grain_bench.compaction import compact
    from grain_bench.masked import MaskedModel
    from grain_bench.measure import check_equivalence, synthetic_inputs

    models: dict[str, Any] = {"dense": dense}
    predicted: dict[str, float | None] = {"dense": 1.0}
    shapes: dict[str, Any] = {}
    for record in members:
        masks, space = checked[record.run_id]
        fresh = auto_class(head).from_config(dense.config)
        fresh.load_state_dict(dense.state_dict())
        masked = MaskedModel(fresh, space)
        masked.apply(masks)
        small = compact(fresh, masks, space).eval()
        try:  # a wrong model is never timed
            check_equivalence(fresh, small, synthetic_inputs(dense.config, 4, min(seq_len, 32), "cpu"))
        except GrainBenchError as exc:
            failures.append(f"run {record.run_id} not re-timed: {exc}")
            continue
        finally:
            masked.remove()
        shapes[record.run_id] = shape = masks.model_shape(space)
        models[record.run_id] = small
        predicted[record.run_id] = type(masks).full(space).model_shape(space).total_flops(seq_len) / \
            shape.total_flops(seq_len)
    return models, predicted, shapes


def _timed_shape(shape, record) -> dict[str, Any]:
    """What a re-timing timed: a later record of another shape under the same run id (a rerun) is not given it. The
    kept hidden width is part of it for masks that prune hidden dimensions."""
    out: dict[str, Any] = {"head_widths": [[list(head) for head in layer.heads] for layer in shape.layers],
                           "ffn": [layer.ffn_dim for layer in shape.layers],
                           "heads": sum(len(layer.heads) for layer in shape.layers),
                           "distinct_head_widths": len({h for layer in shape.layers for h in layer.heads})}
    if "hidden" in record.shape.units:
        out["hidden"] = shape.hidden
    return out


def _retime_setup(results_dir: str, setup: tuple, members, settings: RetimeSettings, command: str, regs,
                  checked: dict[str, tuple], failures: list[str]) -> list:
    """Time one group's compact models beside their dense model and append a measurement per run."""
    from grain_bench.backbones import load_backbone
    from grain_bench.environment import environment
    from grain_bench.leaderboard.store import append_line, measurements_path
    from grain_bench.measure import LatencySettings, speedup_entries, time_models

    backbone, head, num_labels, seq_len = setup
    dense = load_backbone(backbone, head, num_labels, regs=regs)[0].eval()
    models, predicted, shapes = _compact_models(dense, head, members, seq_len, checked, failures)
    members = [r for r in members if r.run_id in shapes]
    if not members:
        return []
    timing = LatencySettings(device=settings.device, dtype=settings.dtype, batch=settings.batch, seq_len=seq_len,
                             mode=settings.mode, threads=settings.threads, warmup=settings.warmup, runs=settings.runs)
    entries = {e["label"]: e for e in speedup_entries(time_models(models, timing, regs=regs), "dense", predicted)}
    env = {**environment(settings.device), "torch_threads": settings.threads}
    created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    out: list[dict[str, Any]] = []
    for record in members:
        entry = {"run_id": record.run_id, "created": created, "environment": env, "settings": timing.__dict__,
                 "command": command, "dense": {**entries["dense"], "label": "dense"},
                 "compact": {**entries[record.run_id], "label": "compact"},
                 **_timed_shape(shapes[record.run_id], record)}
        try:
            append_line(measurements_path(results_dir), (json.dumps(entry, sort_keys=True) + "\n").encode())
        except OSError as exc:
            raise GrainBenchError(f"cannot append a re-timing to {measurements_path(results_dir)}: "
                                  f"{exc.strerror or exc}; {len(out)} of this group's were stored: free space or "
                                  f"make it writable and run `grain-bench measure` again") from None
        out.append(entry)
    print(f"grain-bench: re-timed {len(members)} run(s) of {backbone} ({head}, length {seq_len}) against "
          f"dense {entries['dense']['median_ms']:.1f} ms", file=sys.stderr)
    return out
