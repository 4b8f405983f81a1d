"""grain-bench: a pluggable benchmark for structured pruning of pre-trained transformer encoders.

The Python API (imported lazily, so ``grain-bench --help`` does not import torch):

- ``run(methods=..., tasks=..., ...)`` runs a grid and returns its records as a pandas DataFrame;
  ``load_results(results)`` reads any results directory into the same frame;
- ``evaluate(model=path_or_module, tasks=...)`` scores a model the suite did not train (a saved compact model, a
  checkpoint, an in-memory module) on a task and records it;
- ``compact(model, masks)``, ``save_pruned(model, path)``, ``load_pruned(path)``: physically pruned models;
- ``hookimpl``: the marker for plugin hooks.
"""

from __future__ import annotations

import importlib

from grain_bench.layout import map_checkout_folders

map_checkout_folders()  # a source checkout imported directly: methods/, tasks/ and leaderboard/ sit beside it

from grain_bench.hookspecs import hookimpl  # noqa: E402
from grain_bench.version import __version__  # noqa: E402

__all__ = ["__version__", "compact", "evaluate", "hookimpl", "load_pruned", "load_results", "run", "save_pruned"]

# public name -> module that defines it (imported on first use)
_LAZY = {"compact": "grain_bench.compaction", "save_pruned": "grain_bench.compaction",
         "load_pruned": "grain_bench.compaction", "run": "grain_bench.api", "load_results": "grain_bench.api",
         "evaluate": "grain_bench.evaluation"}


def __getattr__(name: str):
    if name in _LAZY:
        # import_module, not ``from grain_bench import ...``: the latter would call this function again
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'grain_bench' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
