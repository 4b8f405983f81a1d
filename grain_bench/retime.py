"""Quiet re-timing: ``grain-bench measure --results DIR`` times every run's compact model again, side by side with its
dense backbone in one process, and stores the measurements linked to their runs (``RESULTS/measurements.jsonl``).

A run's own latency entry is a short timing taken while other runs may be training on the same machine; the
re-timing is meant for a quiet machine and uses the masks the run stored (``RESULTS/masks/<run_id>.json.gz``): the
compact model is rebuilt from the backbone's weights with those masks (timing does not depend on the weight values)
and checked against the masked model before it is timed. Every model of one backbone, head and length is timed in
the same rounds, in a shuffled order, with the dense model as the baseline of each. Tables prefer the latest
re-timing of a run over its in-run figure and say which one they show.
"""

from __future__ import annotations

import datetime as _dt
import json
import sys
from dataclasses import dataclass
from typing import Any

from grain_bench.errors import GrainBenchError


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


def retime(results_dir: str, settings: RetimeSettings, task: str | None = None, progress: bool = True,
           command: str = "", regs=None) -> list[dict[str, Any]]:
    """Re-time every ``ok`` run of ``results_dir`` that stored its masks; append and return the measurements.
    ``regs``: where tasks, backbones and runtimes are looked up (default: the process-wide registries)."""
    from tqdm.auto import tqdm

    from grain_bench.leaderboard.tables import load_records
    from grain_bench.plugins import get_registries

    regs = regs or get_registries()
    records, _ = load_records(results_dir, task)
    runs = [r for r in records if r.ok and r.masks]
    if not runs:
        raise GrainBenchError(f"no run in {results_dir!r} stored its masks (runs from grain-bench 0.1.0 before "
                              f"masks were stored cannot be re-timed; run them again)")
    out: list[dict[str, Any]] = []
    for setup, members in tqdm(_setups(runs, settings, regs).items(), desc="re-timing", disable=not progress):
        out += _retime_setup(results_dir, setup, members, settings, command, regs)
    return out


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


def _compact_models(results_dir: str, dense, head: str, members, seq_len: int):
    """({label: model}, {label: FLOPs-predicted speedup}, {run id: shape}): the dense model and every run's compact
    model rebuilt from its stored masks, each checked against its masked model first."""
    from grain_bench.backbones import auto_class
    from grain_bench.compaction import compact
    from grain_bench.masked import MaskedModel
    from grain_bench.measure import check_equivalence, synthetic_inputs
    from grain_bench.predictions import load_masks

    models: dict[str, Any] = {"dense": dense}
    predicted: dict[str, float | None] = {"dense": 1.0}
    shapes: dict[str, Any] = {}
    for record in members:
        masks, space = load_masks(results_dir, record.masks)
        fresh = auto_class(head).from_config(dense.config)
        fresh.load_state_dict(dense.state_dict())
        masked = MaskedModel(fresh, space)
        masked.apply(masks)
        small = compact(fresh, masks, space).eval()
        # a wrong model is never timed
        check_equivalence(fresh, small, synthetic_inputs(dense.config, 4, min(seq_len, 32), "cpu"))
        masked.remove()
        shapes[record.run_id] = shape = masks.model_shape(space)
        models[record.run_id] = small
        predicted[record.run_id] = type(masks).full(space).model_shape(space).total_flops(seq_len) / \
            shape.total_flops(seq_len)
    return models, predicted, shapes


def _retime_setup(results_dir: str, setup: tuple, members, settings: RetimeSettings, command: str, regs) -> list:
    """Time one group's compact models beside their dense model and append a measurement per run."""
    from grain_bench.backbones import load_backbone
    from grain_bench.environment import environment
    from grain_bench.leaderboard.store import append_line, measurements_path
    from grain_bench.measure import LatencySettings, speedup_entries, time_models

    backbone, head, num_labels, seq_len = setup
    dense = load_backbone(backbone, head, num_labels, regs=regs)[0].eval()
    models, predicted, shapes = _compact_models(results_dir, dense, head, members, seq_len)
    timing = LatencySettings(device=settings.device, dtype=settings.dtype, batch=settings.batch, seq_len=seq_len,
                             mode=settings.mode, threads=settings.threads, warmup=settings.warmup, runs=settings.runs)
    entries = {e["label"]: e for e in speedup_entries(time_models(models, timing, regs=regs), "dense", predicted)}
    env = {**environment(settings.device), "torch_threads": settings.threads}
    created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    out = []
    for record in members:
        shape = shapes[record.run_id]
        entry = {"run_id": record.run_id, "created": created, "environment": env, "settings": timing.__dict__,
                 "command": command, "dense": {**entries["dense"], "label": "dense"},
                 "compact": {**entries[record.run_id], "label": "compact"},
                 "heads": sum(len(layer.heads) for layer in shape.layers),
                 "distinct_head_widths": len({h for layer in shape.layers for h in layer.heads})}
        append_line(measurements_path(results_dir), (json.dumps(entry, sort_keys=True) + "\n").encode())
        out.append(entry)
    print(f"grain-bench: re-timed {len(members)} run(s) of {backbone} ({head}, length {seq_len}) against "
          f"dense {entries['dense']['median_ms']:.1f} ms", file=sys.stderr)
    return out
