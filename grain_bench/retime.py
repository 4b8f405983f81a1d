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
    ``regs``: where tasks and backbones are looked up (default: the process-wide registries)."""
    from tqdm.auto import tqdm

    from grain_bench.backbones import auto_class, load_backbone
    from grain_bench.compaction import compact
    from grain_bench.environment import environment
    from grain_bench.leaderboard.store import append_line, measurements_path
    from grain_bench.leaderboard.tables import load_records
    from grain_bench.masked import MaskedModel
    from grain_bench.measure import (
        LatencySettings,
        check_equivalence,
        speedup_entries,
        synthetic_inputs,
        time_models,
    )
    from grain_bench.plugins import get_registries
    from grain_bench.predictions import load_masks
    from grain_bench.types import Recipe

    regs = regs or get_registries()
    records, _ = load_records(results_dir, task)
    runs = [r for r in records if r.ok and r.masks]
    if not runs:
        raise GrainBenchError(f"no run in {results_dir!r} stored its masks (runs from grain-bench 0.1.0 before "
                              f"masks were stored cannot be re-timed; run them again)")
    groups: dict[tuple, list] = {}
    for record in runs:
        task = regs.tasks.get(record.spec.task) if record.spec.task in regs.tasks else None
        head, num_labels = (task.head, task.num_labels) if task is not None else ("sequence", 2)
        seq_len = settings.seq_len or Recipe.parse(record.spec.recipe).max_length
        groups.setdefault((record.spec.backbone, head, num_labels, seq_len), []).append(record)
    out = []
    for (backbone, head, num_labels, seq_len), members in tqdm(groups.items(), desc="re-timing", disable=not progress):
        dense, _ = load_backbone(backbone, head, num_labels, regs=regs)
        dense = dense.eval()
        models: dict[str, Any] = {"dense": dense}
        predicted: dict[str, float] = {"dense": 1.0}
        shapes: dict[str, Any] = {}
        for record in members:
            masks, space = load_masks(results_dir, record.masks)
            fresh = auto_class(head).from_config(dense.config)
            fresh.load_state_dict(dense.state_dict())
            masked = MaskedModel(fresh, space)
            masked.apply(masks)
            small = compact(fresh, masks, space).eval()
            inputs = synthetic_inputs(dense.config, 4, min(seq_len, 32), "cpu")
            check_equivalence(fresh, small, inputs)  # a wrong model is never timed
            masked.remove()
            shape = masks.model_shape(space)
            dense_shape = type(masks).full(space).model_shape(space)
            models[record.run_id] = small
            predicted[record.run_id] = dense_shape.total_flops(seq_len) / shape.total_flops(seq_len)
            shapes[record.run_id] = shape
        timing = LatencySettings(device=settings.device, dtype=settings.dtype, batch=settings.batch, seq_len=seq_len,
                                 mode=settings.mode, threads=settings.threads, warmup=settings.warmup,
                                 runs=settings.runs)
        results = time_models(models, timing)
        entries = {e["label"]: e for e in speedup_entries(results, "dense", predicted)}
        env = {**environment(settings.device), "torch_threads": settings.threads}
        for record in members:
            shape = shapes[record.run_id]
            entry = {"run_id": record.run_id, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(
                timespec="seconds"), "environment": env, "settings": timing.__dict__, "command": command,
                     "dense": {**entries["dense"], "label": "dense"},
                     "compact": {**entries[record.run_id], "label": "compact"},
                     "heads": sum(len(layer.heads) for layer in shape.layers),
                     "distinct_head_widths": len({h for layer in shape.layers for h in layer.heads})}
            append_line(measurements_path(results_dir), (json.dumps(entry, sort_keys=True) + "\n").encode())
            out.append(entry)
        print(f"grain-bench: re-timed {len(members)} run(s) of {backbone} ({head}, length {seq_len}) against "
              f"dense {entries['dense']['median_ms']:.1f} ms", file=sys.stderr)
    return out

