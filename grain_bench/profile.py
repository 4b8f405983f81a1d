"""Measured cost models (``grain-bench profile``): compact encoders of many shapes are timed side by side with the
dense one on one device, runtime, batch and length; the coefficients of ``grain_bench.costs.CostModel`` are fitted
to their latencies (non-negative least squares: no unit may make a model faster), and the model reports its own
prediction error on shapes it was not fitted to, and on real masks when given.

The shapes are drawn to span what methods produce: GRAIN-like layers of many narrow heads at unequal widths, a few
whole heads, layers without attention or without FFN, full layers. A cost model is kept under the user's cache
(``grain_bench.costs.cost_model_dir``) by backbone and setting, so a run with a target speedup builds it once.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import statistics
import sys
from dataclasses import asdict, dataclass, replace
from typing import Any

from grain_bench.costs import (
    FEATURES,
    CostModel,
    cost_model_dir,
    features,
    flops_cost,
    load_cost_model,
    parameter_cost,
    save_cost_model,
)
from grain_bench.errors import GrainBenchError, UsageError

#: ``--cost-model`` names of the analytic costs (no profiling, no file): FLOPs at the runs' length (Kwon et al.'s
#: MAC constraint) and the parameter cost (the density)
ANALYTIC = {"flops": flops_cost, "params": lambda space, length: parameter_cost(space)}
#: ``--cost-model runtime:NAME``: the device's measured cost model under the runtime NAME (the one that will serve the
#: pruned model), cached per backbone and length and profiled on first use, as the default eager one is
RUNTIME_PREFIX = "runtime:"


@dataclass(frozen=True)
class ProfileSettings:
    """Where and how to time: device, runtime, batch x length, CPU threads; how many shapes (some held out)."""

    device: str = "cpu"
    runtime: str = "eager"
    batch: int = 32
    seq_len: int = 64
    threads: int = 2  # CPU threads (0 on CUDA)
    shapes: int = 40
    held_out: int = 10
    runs: int = 7
    warmup: int = 1
    calls: int = 1  # CPU: calls of one model back to back per round (``LatencySettings.calls``)
    seed: int = 0

    @property
    def dtype(self) -> str:
        """What runs are timed in on this device (as ``grain_bench.measure.record_settings``): fp16 on CUDA."""
        return "fp16" if self.device.startswith("cuda") else "fp32"

    @classmethod
    def for_runs(cls, device: str, seq_len: int) -> ProfileSettings:
        """The settings of the latency a run's record measures (``grain_bench.measure.record_settings``): the cost
        model a target speedup is predicted with."""
        from grain_bench.measure import record_settings

        timing = record_settings(device, seq_len)
        return cls(device=timing.device, runtime=timing.mode, batch=timing.batch, seq_len=seq_len,
                   threads=timing.threads or 0)

    def check(self) -> None:
        """``UsageError`` for settings that cannot be timed or fitted."""
        if self.threads < (0 if self.device.startswith("cuda") else 1):
            raise UsageError(f"profile: threads must be at least 1 on CPU, got {self.threads}")
        for name in ("batch", "seq_len", "runs", "shapes", "calls"):
            if getattr(self, name) < 1:
                raise UsageError(f"profile: {name} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.held_out < self.shapes or self.shapes - self.held_out < len(FEATURES):
            raise UsageError(f"profile: {self.shapes} shapes with {self.held_out} held out leave fewer than "
                             f"{len(FEATURES)} to fit {len(FEATURES)} coefficients")


def sample_masks(space, count: int, seed: int) -> list:
    """``count`` unit masks of ``space`` spanning the shapes methods produce (see the module docstring)."""
    import torch

    from grain_bench.masks import UnitMasks

    generator = torch.Generator().manual_seed(seed)
    out = []
    for index in range(count):
        masks = UnitMasks.full(space)
        style = ("narrow", "whole", "mixed", "sparse")[index % 4]
        keep = float(torch.rand(1, generator=generator)) * 0.9 + 0.05  # how much of the layer a draw keeps
        for layer in range(space.num_layers):
            _draw_attention(masks, layer, style, keep, generator, space)
            _draw_ffn(masks, layer, style, keep, generator, space)
        out.append(masks)
    return out


def _draw_attention(masks, layer: int, style: str, keep: float, generator, space) -> None:
    import torch

    def uniform(high: int) -> int:
        return int(torch.randint(0, high + 1, (1,), generator=generator))

    if float(torch.rand(1, generator=generator)) < (0.3 if style == "sparse" else 0.1):
        masks.qk[layer], masks.vo[layer] = False, False  # a layer without attention
        return
    heads = torch.rand(space.num_heads, generator=generator) < (keep if style != "narrow" else 0.9)
    for head in range(space.num_heads):
        width = space.head_dim if style == "whole" else max(1, uniform(int(space.head_dim * keep)))
        queries = width if style == "whole" else uniform(width)
        masks.qk[layer, head, queries:] = False
        masks.vo[layer, head, width:] = False
        if not heads[head]:
            masks.qk[layer, head], masks.vo[layer, head] = False, False


def _draw_ffn(masks, layer: int, style: str, keep: float, generator, space) -> None:
    import torch

    if float(torch.rand(1, generator=generator)) < (0.3 if style == "sparse" else 0.1):
        masks.ffn[layer] = False
        return
    width = int(torch.randint(1, max(2, int(space.ffn_dim * keep) + 1), (1,), generator=generator))
    masks.ffn[layer, width:] = False


def profile(backbone: str, settings: ProfileSettings, regs=None, progress: bool = True,
            check: dict[str, Any] | None = None) -> CostModel:
    """Time ``settings.shapes`` compact models of ``backbone`` beside the dense one, fit a cost model on all but
    ``held_out`` of them and report its error on those (and on ``check``: {label: (masks, space)} of real runs)."""
    from grain_bench.masks import MaskSpace, UnitMasks

    settings.check()
    dense = _dense(backbone, regs)
    space = MaskSpace.from_config(dense.config)
    drawn = {f"shape-{i}": masks for i, masks in enumerate(sample_masks(space, settings.shapes, settings.seed))}
    real = {label: masks for label, (masks, real_space) in (check or {}).items() if real_space == space}
    timed = _time(dense, space, {**drawn, **real}, settings, regs, progress)
    labels = list(drawn)  # the dense model is fitted too: budgets are fractions of its cost
    train, held = ["dense"] + labels[:len(labels) - settings.held_out], labels[len(labels) - settings.held_out:]
    shapes = {label: masks.model_shape(space) for label, masks in
              {**drawn, **real, "dense": UnitMasks.full(space)}.items()}
    coefficients = _fit([shapes[label] for label in train], [timed[label] for label in train])
    model = CostModel(_name(settings), "ms per batch", coefficients, _sizes(space),
                      _setting(backbone, settings, timed["dense"]), {})
    fit = {"train": _errors(model, shapes, timed, train), "held_out": _errors(model, shapes, timed, held),
           "dense": {"measured_ms": timed["dense"], "predicted_ms": model.dense_cost(space)}}
    if real:
        fit["real_masks"] = _errors(model, shapes, timed, list(real))
    return CostModel(model.name, model.unit, model.coefficients, model.backbone, model.setting, fit)


def _dense(backbone: str, regs):
    from grain_bench.backbones import load_backbone

    if regs is None:
        from grain_bench.plugins import get_registries

        regs = get_registries()
    return load_backbone(backbone, "sequence", 2, regs=regs)[0].eval()


def _time(dense, space, masks: dict, settings: ProfileSettings, regs, progress: bool) -> dict[str, float]:
    """Median ms per batch of the dense model and every compact model of ``masks``, timed in the same rounds."""
    from tqdm.auto import tqdm

    from grain_bench.compaction import compact
    from grain_bench.measure import LatencySettings, time_models

    models: dict[str, Any] = {"dense": dense}
    for label, unit_masks in tqdm(masks.items(), desc="compacting", disable=not progress, leave=False):
        models[label] = compact(dense, unit_masks, space).eval()
    timing = LatencySettings(device=settings.device, dtype=settings.dtype, batch=settings.batch,
                             seq_len=settings.seq_len, mode=settings.runtime, threads=settings.threads,
                             warmup=settings.warmup, runs=settings.runs, seed=settings.seed, calls=settings.calls)
    if progress:
        print(f"grain-bench: timing {len(models)} models ({settings.runs} rounds of every one)", file=sys.stderr)
    results = time_models(models, timing, regs=regs)
    dense = results["dense"]
    # each model's time as the median of its ratios to the dense model of the same round (a load that comes and goes
    # moves both), in the dense model's median milliseconds
    return {label: dense.median_ms * statistics.median(t / d for t, d in zip(result.times_ms, dense.times_ms))
            for label, result in results.items()}


def real_masks(results_dir: str) -> dict[str, tuple]:
    """{label: (masks, space)} of every finished run of ``results_dir`` that stored its masks (``method[options]@target
    seed S``), for ``profile``'s prediction error on masks training produced."""
    from grain_bench.leaderboard.tables import load_records
    from grain_bench.predictions import load_masks

    if not os.path.isdir(results_dir):
        raise UsageError(f"--check-masks {results_dir!r} is not a results directory")
    records, _ = load_records(results_dir)
    out = {}
    for record in records:
        if record.ok and record.masks:
            options = ",".join(f"{k}={v}" for k, v in sorted(record.spec.method_options.items()))
            label = (f"{os.path.basename(os.path.normpath(results_dir))}/{record.spec.task}/{record.spec.method}"
                     f"{f'[{options}]' if options else ''}@{record.spec.target()} seed {record.spec.seed}")
            out[label] = load_masks(results_dir, record.masks, record)
    return out


def _fit(shapes, latencies) -> dict[str, float]:
    """Non-negative least squares of latency on the shapes' features, in relative error (each row divided by its
    latency: a small model's 10% counts as much as a large one's), columns scaled for the solver."""
    import numpy as np
    from scipy.optimize import nnls

    matrix = np.array([[features(shape)[name] for name in FEATURES] for shape in shapes], dtype=float)
    latency = np.asarray(latencies, dtype=float)
    scale = np.maximum(matrix.max(axis=0), 1.0)
    solution, _ = nnls(matrix / scale / latency[:, None], np.ones_like(latency))
    return {name: float(value) for name, value in zip(FEATURES, solution / scale)}


def _errors(model: CostModel, shapes, timed, labels) -> dict[str, Any]:
    """Relative prediction errors |predicted - measured| / measured over ``labels``: median, worst, per label."""
    import numpy as np

    errors = {label: abs(model.cost(shapes[label]) - timed[label]) / timed[label] for label in labels}
    values = np.array(list(errors.values())) if errors else np.zeros(0)
    dense = model.cost(shapes["dense"])
    return {"count": len(errors), "median": float(np.median(values)) if errors else None,
            "worst": float(values.max()) if errors else None,
            "per_label": {label: {"error": round(value, 4), "measured_speedup": round(timed["dense"] / timed[label], 3),
                                  "predicted_speedup": round(dense / model.cost(shapes[label]), 3)}
                          for label, value in errors.items()}}


def _sizes(space) -> dict[str, int]:
    return {"num_layers": space.num_layers, "num_heads": space.num_heads, "head_dim": space.head_dim,
            "ffn_dim": space.ffn_dim, "hidden": space.hidden}


def _name(settings: ProfileSettings) -> str:
    return f"latency-{settings.device.split(':')[0]}-{settings.runtime}-b{settings.batch}x{settings.seq_len}"


def _setting(backbone: str, settings: ProfileSettings, dense_ms: float) -> dict[str, Any]:
    import platform

    import torch

    from grain_bench.environment import environment

    return {**asdict(settings), "device_type": settings.device.split(":")[0], "backbone_id": backbone,
            "torch": torch.__version__, "machine": environment(settings.device).get("processor") or platform.machine(),
            "dense_ms": dense_ms, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}


def cached_path(backbone: str, settings: ProfileSettings) -> str:
    """Where the cost model of ``backbone`` under ``settings`` is kept."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", backbone)
    return os.path.join(cost_model_dir(), f"{safe}-{_name(settings)}-t{settings.threads}.json")


def cost_model_for(backbone: str, settings: ProfileSettings, regs=None, progress: bool = True) -> CostModel:
    """The cost model of ``backbone`` under ``settings``: the cached one, or profiled now (about a minute) and
    cached."""
    path = cached_path(backbone, settings)
    if os.path.isfile(path):
        return load_cost_model(path)
    if progress:
        print(f"grain-bench: no cost model of {backbone} for {_name(settings)} yet: profiling one (about a minute; "
              f"kept in {path})", file=sys.stderr)
    model = profile(backbone, settings, regs, progress)
    save_cost_model(model, path)
    return model


class SweepCostModels:
    """The cost models of a sweep's target-speedup runs: the one given (``--cost-model``), checked against each
    backbone and the device runs are timed on, or per backbone and recipe length the cached one of that device
    (``ProfileSettings.for_runs``; under another runtime with ``runtime:NAME``), profiled on first use. ``of(spec)``
    is the model of one spec."""

    def __init__(self, path: str | None, device: str, regs=None, progress: bool = True, profile: bool = True):
        #: ``--cost-model flops`` or ``params``: an analytic cost of each backbone at the runs' length, no file
        self.analytic = path if path in ANALYTIC else None
        #: ``--cost-model runtime:NAME``: the device's measured model under that runtime (default: the runs' eager)
        self.runtime = path[len(RUNTIME_PREFIX):] if path and path.startswith(RUNTIME_PREFIX) else None
        self.given = load_cost_model(path) if path and not self.analytic and self.runtime is None else None
        self.device, self.regs, self.progress = device, regs, progress
        self.profile = profile  # False (a dry run): a device model not cached yet is None, not profiled
        self._models: dict[tuple, CostModel] = {}
        self._noted: set[int] = set()
        self._spaces: dict[str, Any] = {}

    def check(self, backbone: str, space) -> None:
        """``UsageError`` unless the given model fits ``backbone`` (its space) and the timing device, or the runtime
        named is one of that device (and has what it needs)."""
        self._spaces[backbone] = space
        if self.runtime is not None:
            from grain_bench.runtimes import get_runtime

            get_runtime(self.runtime, self.device, self.regs, what="--cost-model runtime:").check()
        if self.given is None:
            return
        self.given.check_space(space, f"--cost-model {self.given.key}")
        measured_on = str(self.given.setting.get("device_type", "?"))
        if measured_on != self.device.split(":")[0]:
            raise UsageError(f"--cost-model {self.given.key} was measured on {measured_on}, but runs are timed on "
                             f"{self.device}: profile that device (grain-bench profile --device {self.device})")

    def of(self, spec) -> CostModel | None:
        """The cost model of ``spec`` (a target-speedup spec); None when it is not cached and ``profile`` is off."""
        from grain_bench.types import Recipe

        length = Recipe.parse(spec.recipe).max_length
        if self.analytic:
            if spec.backbone not in self._spaces:
                raise GrainBenchError(f"the cost of {spec.backbone} was asked for before its backbone was checked")
            return ANALYTIC[self.analytic](self._spaces[spec.backbone], length)
        if self.given is not None:
            self._note_length(length, spec.task)
            return self.given
        settings = ProfileSettings.for_runs(self.device, length)
        if self.runtime is not None:
            settings = replace(settings, runtime=self.runtime)
        key = (spec.backbone, settings)
        if key not in self._models:
            if not self.profile and not os.path.isfile(cached_path(spec.backbone, settings)):
                return None
            self._models[key] = cost_model_for(spec.backbone, settings, self.regs, self.progress)
        return self._models[key]


    def _note_length(self, length: int, task: str) -> None:
        """Say once per length when the given model was profiled at another sequence length than runs use: its
        predictions are of another workload (a note, not a refusal: the budgets stay consistent within the grid)."""
        if self.given is None:
            return
        profiled = self.given.setting.get("seq_len")
        if profiled and profiled != length and length not in self._noted:
            self._noted.add(length)
            print(f"grain-bench: note: --cost-model {self.given.key} was profiled at length {profiled}, but runs of "
                  f"{task} use length {length}: its predicted speedups are of another workload (profile one with "
                  f"grain-bench profile --seq-len {length})", file=sys.stderr)


def report(model: CostModel, path: str) -> str:
    """What ``grain-bench profile`` prints: where the model is, its coefficients and how well it predicts."""
    lines = [f"cost model {model.key} ({model.unit}) written to {path}",
             "coefficients: " + ", ".join(f"{name} {model.coefficients.get(name, 0.0):.4g}" for name in FEATURES)]
    for part in ("train", "held_out", "real_masks"):
        errors = model.fit.get(part)
        if errors and errors.get("count"):
            lines.append(f"{part.replace('_', ' ')}: {errors['count']} shapes, relative error median "
                         f"{errors['median']:.1%}, worst {errors['worst']:.1%}")
    dense = model.fit.get("dense") or {}
    if dense:
        lines.append(f"dense: measured {dense['measured_ms']:.2f} ms, predicted {dense['predicted_ms']:.2f} ms")
    return "\n".join(lines)
