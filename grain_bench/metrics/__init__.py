"""Local ``evaluate`` metric modules (the ``evaluate`` wheel ships no metric code): ``load_metric("accuracy")``."""

from __future__ import annotations

import os

from grain_bench.errors import UsageError

METRICS_DIR = os.path.dirname(os.path.abspath(__file__))


def available_metrics() -> list[str]:
    """Names of the metric modules shipped with grain-bench."""
    return sorted(n for n in os.listdir(METRICS_DIR) if os.path.isfile(os.path.join(METRICS_DIR, n, f"{n}.py")))


def metric_module(name: str):
    """The Python module of a local metric, imported from its file (for its helper functions; not cached by
    ``evaluate``)."""
    import importlib.util
    import sys

    if name not in available_metrics():
        raise UsageError(f"unknown metric {name!r}; available: {', '.join(available_metrics())}")
    qualified = f"grain_bench.metrics._{name}"
    if qualified not in sys.modules:
        spec = importlib.util.spec_from_file_location(qualified, os.path.join(METRICS_DIR, name, f"{name}.py"))
        if spec is None or spec.loader is None:
            raise UsageError(f"metric module {name!r} cannot be imported from {METRICS_DIR}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[qualified] = module
    return sys.modules[qualified]


def load_metric(name: str):
    """The ``evaluate.Metric`` for ``name``, loaded from grain-bench's local module (no network)."""
    import evaluate

    if name not in available_metrics():
        raise UsageError(f"unknown metric {name!r}; available: {', '.join(available_metrics())}")
    return evaluate.load(os.path.join(METRICS_DIR, name))
