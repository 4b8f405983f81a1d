"""The hooks a grain-bench plugin can implement. All hooks are called with keyword arguments."""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("grain_bench")
hookimpl = pluggy.HookimplMarker("grain_bench")


@hookspec
def register_methods(register):
    """Register pruning methods: ``register(MethodClass, aliases=())``."""


@hookspec
def register_tasks(register):
    """Register task adapters: ``register(TaskClass, aliases=(), suites=())``."""


@hookspec
def register_backbones(register):
    """Register named backbones: ``register(name, loader, description="")``; ``loader(head, num_labels)``."""


@hookspec(firstresult=True)
def load_backbone(model_id, head, num_labels):
    """Load ``model_id`` for ``head`` before the default hub/path loader; return ``(model, tokenizer)`` or None."""


@hookspec
def register_executors(register):
    """Register sweep executors: ``register(name, factory, description="")``; ``factory(**options)``."""


@hookspec
def register_exporters(register):
    """Register table formats: ``register(name, exporter, description="")``; ``exporter(summary, caption, notes,
    extra)`` returns the text of the comparison table (``summary``: the leaderboard's DataFrame)."""


@hookspec
def register_runtimes(register):
    """Register inference runtimes: ``register(runtime, aliases=())``, a ``grain_bench.runtimes.Runtime`` instance
    (``prepare(model, inputs, threads)`` on the ``devices`` it names); ``grain-bench measure --mode`` and
    ``load_pruned(runtime=...)`` take its name."""


@hookspec
def register_commands(cli):
    """Add subcommands: ``cli`` is the argparse subparsers object of ``grain-bench``."""


@hookspec
def run_finished(record):
    """Called after every run (ok or error) with its ``RunRecord``."""
