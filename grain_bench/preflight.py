"""Checks that run before a sweep trains or writes anything: the environment variables it reads later
(``check_environment``), the device and the backbones of the grid (each resolved once: it exists, is a BERT-family
encoder with a tokenizer that knows words, and is long enough for every task's recipe). The grid's names, options and
recipe values are checked where they are parsed (``harness.build_specs``, ``Options.parse``) and the results location
by ``RecordStore.check_writable``. Every failure raises a ``GrainBenchError`` with what was wrong and what is
expected: one line and exit code 2 from the CLI.
"""

from __future__ import annotations

import json
import os

from grain_bench.errors import UsageError
from grain_bench.types import Recipe, RunSpec


def check_environment() -> None:
    """The environment variables a sweep reads only later, each in its valid form, before anything trains:
    ``GRAIN_BENCH_LOCK_TIMEOUT`` (seconds >= 0; read at every append), ``GRAIN_BENCH_HOME`` (``check_home``) and
    ``GRAIN_BENCH_KERNEL_CACHE`` (its form only: a sweep's runs time eager models; the ragged runtime checks the
    folder itself before it is used)."""
    from grain_bench.kernel_cache import check_kernel_cache_setting
    from grain_bench.leaderboard.store import lock_timeout

    lock_timeout()  # raises UsageError naming the variable
    check_home()
    check_kernel_cache_setting(need_kernel=False)


def check_home() -> None:
    """Raise ``UsageError`` unless grain-bench's own folder (``GRAIN_BENCH_HOME``, where cost models, teachers and
    records that could not be stored are kept) is a folder or a path that can be created as one."""
    from grain_bench.files import HOME_ENV, grain_bench_home

    home = os.path.abspath(grain_bench_home())
    named = f"{HOME_ENV}={os.environ[HOME_ENV]!r}" if os.environ.get(HOME_ENV) else f"grain-bench's folder {home!r}"
    check_folder(home, named, f"point {HOME_ENV} at a folder (or a path that can be created)")


def check_teacher_cache(given: str | None) -> None:
    """Raise ``UsageError`` unless the teacher cache (``--teacher-cache``, else the user's) can be a folder."""
    from grain_bench.teachers import teacher_folder

    if given is None:
        check_home()
        return
    check_folder(teacher_folder(given), f"--teacher-cache {given!r}", "give a folder (or a path that can be created)")


def check_folder(path: str, named: str, fix: str) -> None:
    """Raise ``UsageError`` (``named``, then ``fix``) unless ``path`` is a folder or a path that can be created."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"{named} is a file, not a folder: {fix}, or move the file away")
    parent = path
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise UsageError(f"{named} cannot be created: {parent!r} is a file, not a folder; {fix}")


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
