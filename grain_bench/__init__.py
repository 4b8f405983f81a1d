"""grain-bench: a pluggable benchmark for structured pruning of pre-trained transformer encoders."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "compact", "load_pruned", "run", "hookimpl"]

from grain_bench.hookspecs import hookimpl


def __getattr__(name: str):
    # Heavy entry points are imported lazily so ``grain-bench --help`` does not import torch.
    if name in ("compact", "load_pruned"):
        from grain_bench import compact as _compact

        return getattr(_compact, name)
    if name == "run":
        from grain_bench.harness import run_sweep

        return run_sweep
    raise AttributeError(f"module 'grain_bench' has no attribute {name!r}")
