"""Checks that run before a sweep trains or writes anything: the device and the backbones of the grid (each resolved
once: it exists, is a BERT-family encoder with a tokenizer that knows words, and is long enough for every task's
recipe). The grid's names, options and recipe values are checked where they are parsed (``harness.build_specs``,
``Options.parse``) and the results location by ``RecordStore.check_writable``. Every failure raises a
``GrainBenchError`` with what was wrong and what is expected: one line and exit code 2 from the CLI.
"""

from __future__ import annotations

import json

from grain_bench.errors import UsageError
from grain_bench.types import Recipe, RunSpec


def check_device(device: str | None) -> None:
    """Raise ``UsageError`` unless ``device`` is None (automatic), ``cpu``, or a CUDA device this machine has."""
    if device is None:
        return
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise UsageError(f"--device {device!r} is not a device name: expected cpu, cuda or cuda:N") from None
    if parsed.type == "cpu":
        return
    if parsed.type != "cuda":
        raise UsageError(f"--device {device!r}: grain-bench trains and times on cpu or cuda (cuda:N), "
                         f"not {parsed.type}")
    if not torch.cuda.is_available():
        raise UsageError(f"--device {device!r}: no CUDA device is available on this machine; use --device cpu")
    if parsed.index is not None and parsed.index >= torch.cuda.device_count():
        raise UsageError(f"--device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                         f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")


def check_backbones(specs: list[RunSpec], regs, pm=None, cost_models=None) -> None:
    """Resolve and check every backbone of ``specs`` once: every task's ``max_length`` against it, every method's
    options (``Method.check_backbone``: e.g. a granularity that divides its head width) and the given cost model
    (``cost_models``: the sweep's ``SweepCostModels``, for another backbone or device is refused)."""
    from grain_bench.backbones import check_max_length, inspect_backbone
    from grain_bench.masks import MaskSpace

    lengths: dict[str, set[int]] = {}
    for spec in specs:
        lengths.setdefault(spec.backbone, set()).add(Recipe.parse(spec.recipe).max_length)
    for backbone, wanted in lengths.items():
        info = inspect_backbone(backbone, pm=pm, regs=regs)
        for max_length in sorted(wanted, reverse=True):
            check_max_length(backbone, info.config, max_length)
        space = MaskSpace.from_config(info.config)
        for method, options in {(s.method, json.dumps(s.method_options, sort_keys=True)) for s in specs
                                if s.backbone == backbone}:
            regs.methods.get(method).check_backbone(json.loads(options), space)
        if cost_models is not None and any(s.target_speedup for s in specs if s.backbone == backbone):
            cost_models.check(backbone, space)
