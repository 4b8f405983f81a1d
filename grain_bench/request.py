"""One sweep, as asked for: ``SweepRequest`` holds every choice of a ``grain-bench run`` (the grid, the recipe, where
results go, how runs are run and where), each with its default declared here and nowhere else.

The command line builds one from its flags (their help texts read the defaults from here: ``help_text``), the Python
API from its keywords (``grain_bench.run(**choices)``), and the harness and the executors take and ship it as it is
(``to_dict``/``from_dict``: a Ray worker rebuilds the same request). Adding a run option is adding a field here, its
flag in ``cli.py`` and its use: nothing passes it along by position.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from grain_bench.backbones import DEFAULT_BACKBONE
from grain_bench.errors import UsageError
from grain_bench.options import Options, Range

DEFAULT_RESULTS = "grain-bench-results"
#: the grid's densities when neither densities nor target speedups are given
DEFAULT_DENSITIES = (0.2,)


def _field(default: Any, help: str, valid: Range | None = None) -> Any:  # noqa: A002 - argparse's word for it
    """A field with its help text (and a declared valid range, checked by ``Options.parse``)."""
    metadata = {"help": help, **({"range": valid} if valid else {})}
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class SweepRequest(Options):
    """Everything one sweep asks for. ``SweepRequest.parse({...})`` checks the names and types of its values (strings
    and comma lists are converted, unknown keys refused with a did-you-mean); ``grain_bench.api.prepare_sweep``
    validates it against the registries, the backbones and the results location before anything runs."""

    owner = "run"

    # ---- the grid ----------------------------------------------------------------------------------------------
    methods: tuple[str, ...] = _field(("dense", "random", "magnitude", "grain", "heads"), "comma list of methods")
    tasks: tuple[str, ...] = _field(("tweets",), "comma list of tasks or suites, e.g. glue")
    densities: tuple[float, ...] | None = _field(None, "target encoder densities in (0, 1]",
                                                 Range(gt=0, le=1, hint="give fractions such as 0.05,0.1"))
    target_speedups: tuple[float, ...] = _field((), "target speedups over the dense model, each > 1, predicted by "
                                                    "the cost model of the device runs are timed on",
                                                Range(gt=1, hint="give speedups such as 4,8,12"))
    cost_model: str | None = _field(None, "cost model for the target speedups: a JSON file (grain-bench profile), "
                                      "flops, params, or runtime:NAME (the device's model under that runtime, "
                                      "profiled on first use; default: eager)")
    seeds: tuple[int, ...] = _field((1,), "comma list of seeds")
    backbone: str = _field(DEFAULT_BACKBONE, "named backbone, hub id or local path")
    method_options: dict[str, dict[str, Any]] = _field({}, "method options by method: {'grain': {'alpha': 0.1}}")
    # ---- the recipe --------------------------------------------------------------------------------------------
    recipe: str = _field("demo", "distillation recipe: demo, quick, paper, test")
    recipe_options: dict[str, Any] = _field({}, "recipe fields to override: {'max_steps': 300}")
    # ---- the data ----------------------------------------------------------------------------------------------
    data_dir: str | None = _field(None, "local task files in the task's canonical format (default: hub/package)")
    data_revisions: dict[str, str] = _field({}, "hub data revisions by task, suite or '*' (default: each task's "
                                                "pinned ref, resolved to its commit when the grid is planned)")
    # ---- where results go and how runs are run -----------------------------------------------------------------
    results: str = _field(DEFAULT_RESULTS, "results directory")
    teacher_cache: str | None = _field(None, "folder of cached fine-tuned teachers, shared by every results folder; "
                                             "on a cluster, one that every node reads")
    device: str | None = _field(None, "torch device (default: cuda when available, else cpu)")
    save_models: bool = _field(True, "write the compact model of each run")
    measure_latency: bool = _field(True, "time each compact model against the dense one")
    save_predictions: bool = _field(True, "store per-example predictions (for paired confidence intervals)")
    progress: bool = _field(True, "show progress bars")
    # ---- where runs execute ------------------------------------------------------------------------------------
    executor: str = _field("local", "where runs execute: local, ray, or a plugin's executor")
    executor_options: dict[str, Any] = _field({}, "executor options: {'max_retries': 2}")
    retry_failed: bool = _field(False, "re-run specs whose last record is an error")
    rerun: bool = _field(False, "re-run every spec of the grid, recorded ones too: each new record supersedes the "
                                "earlier one in every table (the store keeps both)")

    def __post_init__(self) -> None:
        """However it is built (``parse``, keywords, ``SweepRequest(...)``, ``replace``), a request holds values of
        its fields' types within their ranges, or raises ``UsageError`` naming the field: no raw ``TypeError`` later."""
        self.coerce_fields()
        self.check_ranges()
        self.validate()

    def validate(self) -> None:
        """What the field types alone do not say: the maps hold what they should."""
        for name, what in (("method_options", "a dict of option dicts by method name"),
                           ("recipe_options", "a dict of recipe field -> value"),
                           ("data_revisions", "a dict of task -> revision"),
                           ("executor_options", "a dict of option -> value")):
            value = getattr(self, name)
            if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
                raise UsageError(f"{self.owner}: {name} must be {what}, got {type(value).__name__} {value!r}")
        bad = [k for k, v in self.method_options.items() if not isinstance(v, dict)]
        if bad:
            raise UsageError(f"{self.owner}: method_options[{bad[0]!r}] must be a dict of option -> value, e.g. "
                             f"{{'grain': {{'alpha': 0.1}}}}")
        bad = [k for k, v in self.data_revisions.items() if not isinstance(v, str)]
        if bad:
            raise UsageError(f"{self.owner}: data_revisions[{bad[0]!r}] must be a branch, tag or commit as a string, "
                             f"got {self.data_revisions[bad[0]]!r}")

    def grid_densities(self) -> tuple[float, ...]:
        """The densities of the grid: the ones given, else ``DEFAULT_DENSITIES`` unless target speedups are given."""
        if self.densities is not None:
            return self.densities
        return () if self.target_speedups else DEFAULT_DENSITIES

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SweepRequest:
        """Inverse of ``to_dict`` (what an executor ships to a worker)."""
        return cls.parse(data)

    def harness_fields(self) -> dict[str, Any]:
        """The fields that decide how one run is run and stored (the rest plans the grid and where it executes)."""
        return {name: getattr(self, name) for name in ("results", "teacher_cache", "device", "save_models",
                                                       "measure_latency", "save_predictions", "progress")}

    def replace(self, **changes: Any) -> SweepRequest:
        """A copy with ``changes`` applied and checked like any other value."""
        return type(self).parse({**self.to_dict(), **changes})


def default(name: str) -> Any:
    """The declared default of a ``SweepRequest`` field."""
    spec = {f.name: f for f in dataclasses.fields(SweepRequest)}[name]
    return spec.default_factory() if spec.default_factory is not dataclasses.MISSING else spec.default


def help_text(name: str, shown: str | None = None) -> str:
    """A flag's help: the field's description and its declared default (``shown`` overrides how it reads)."""
    value = default(name)
    if shown is None:
        shown = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
    return f"{dataclasses.fields(SweepRequest)[_index(name)].metadata['help']} (default: {shown})"


def _index(name: str) -> int:
    return [f.name for f in dataclasses.fields(SweepRequest)].index(name)
