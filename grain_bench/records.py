"""The run record (``records.jsonl``, schema 3): what one run found, in typed parts.

A ``RunRecord`` holds its ``RunSpec`` and typed parts (``Density``, ``ParamCounts``, ``Flops``, ``LatencyEntry``
per timed model, ``RecordShape``, ``Provenance``, ``Quality``, ``Speed`` for a run pruned to a speed); metric -> value
maps, the environment, the versions and the method's own ``method_info`` stay maps. ``to_dict``/``from_dict`` are
derived from the fields' types (``grain_bench.stored``), so a field added to a part is stored and checked without a
second table of types. Reading a record is a pure read: nothing is looked up in the plugin registry or in data files.
Records of an older schema are brought up to this one once, by ``grain-bench leaderboard upgrade``
(``grain_bench.migrations``); a store that still holds them says so instead of being read in part.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from grain_bench.stored import finite_or_none, read, to_jsonable
from grain_bench.types import RunSpec

#: version of the stored record (3: typed parts, the spec as a ``RunSpec``; 2: metric directions and the
#: encoder-parameter density; 1: the first). ``grain_bench.migrations`` upgrades older records one version at a time.
SCHEMA_VERSION = 3
STATUSES = ("ok", "error")


@dataclass(frozen=True)
class Density:
    """The densities of a run: what it asked for and what it kept."""

    target: float | None = None
    achieved: float | None = None  # kept unit cost / total unit cost (what ``target`` asks for)
    encoder_params: float | None = None  # kept encoder parameters / the dense encoder's
    #: learned-mask methods with an expected density (CoFi): the expected density of the gates at the freeze step,
    #: and its gap to the target (expected - target); None for the others and for records from before the field
    expected_at_freeze: float | None = None
    gap_at_freeze: float | None = None


@dataclass(frozen=True)
class ParamCounts:
    """Parameters of the compact model (``encoder``, its linear part, ``embeddings``, the task ``head`` with the
    pooler, their ``total``) and of the dense encoder it came from."""

    total: int | None = None
    encoder: int | None = None
    encoder_linear: int | None = None
    embeddings: int | None = None
    dense_encoder: int | None = None
    head: int | None = None


@dataclass(frozen=True)
class Flops:
    """FLOPs per sequence of ``seq_len`` tokens, compact and dense, and the speedup they predict."""

    seq_len: int | None = None
    encoder: float | None = None
    total: float | None = None
    dense_encoder: float | None = None
    dense_total: float | None = None
    predicted_speedup: float | None = None


@dataclass(frozen=True)
class LatencyEntry:
    """One timed model (``label``: ``dense`` or ``compact``) under one setting; times in milliseconds per batch."""

    label: str
    device: str
    dtype: str
    batch: int
    seq_len: int
    mode: str
    threads: int | None
    median_ms: float | None
    iqr_ms: float | None
    runs: int
    warmup: int
    min_ms: float | None = None  # on a shared machine the least-disturbed call; medians carry the load
    speedup: float | None = None  # over the dense model of the same rounds
    flops_predicted_speedup: float | None = None
    calls_per_round: int | None = None  # calls back to back per round (CPU), when more than one
    source: str | None = None  # "grain-bench measure" for a quiet re-timing; None for the run's own figure
    runtime: str | None = None  # under mode "best": the runtime that was fastest for this model

    @property
    def noisy(self) -> bool:
        """Whether the rounds spread wider than their median (interquartile range > median): a figure tables flag."""
        return self.iqr_ms is not None and self.median_ms is not None and self.iqr_ms > self.median_ms


@dataclass(frozen=True)
class Speed:
    """A run pruned to a speed: the ``target`` speedup, the ``predicted`` one of its final masks under the cost model
    it was pruned with (``cost_model``: its key, ``cost_model_file``: where the results directory keeps it), and the
    ``measured`` one of the run's own timing (the compact entry of ``latency``), when it was timed."""

    target: float | None = None
    predicted: float | None = None
    measured: float | None = None
    cost_model: str | None = None
    cost_model_file: str | None = None


@dataclass(frozen=True)
class DenseShape:
    """The dense encoder's per-layer widths the compact shape is measured against."""

    num_heads: int
    head_dim: int
    ffn_dim: int


@dataclass(frozen=True)
class RecordShape:
    """The compact encoder: per layer the heads kept, the summed query/key and value widths, the FFN width, and
    every kept head's [query, value] width; the units kept of each kind."""

    heads: tuple[int, ...] = ()
    qk: tuple[int, ...] = ()
    vo: tuple[int, ...] = ()
    ffn: tuple[int, ...] = ()
    heads_kept: int | None = None
    units: dict[str, int] = field(default_factory=dict)
    head_widths: tuple[tuple[tuple[int, ...], ...], ...] = ()
    dense: DenseShape | None = None


@dataclass(frozen=True)
class Provenance:
    """Where the run's data came from: its identity ``key`` (as in ``RunSpec.data``), the folder, file or hub
    repository read, the hub commit, each local file's SHA-256, and ``--data-dir``."""

    key: str | None = None
    source: str | None = None
    revision: str | None = None
    files: dict[str, str] = field(default_factory=dict)
    data_dir: str | None = None


@dataclass(frozen=True)
class Quality:
    """A collapse verdict (``grain_bench.quality``): whether the predictions are degenerate, why, and the evidence."""

    collapsed: bool = False
    reasons: tuple[str, ...] = ()
    summary: dict[str, Any] = field(default_factory=dict)  # a class histogram, or the spread of the predictions
    vs_chance: dict[str, Any] = field(default_factory=dict)  # the paired interval against a trivial predictor


@dataclass(frozen=True)
class RunRecord:
    """The outcome of one run, as stored in ``records.jsonl``.

    Non-finite numbers (NaN, infinities) anywhere in a record are replaced by ``None`` when the record is made, and
    their places are listed in ``nonfinite`` (e.g. ``scores.pearson``): stored JSON stays strict and no table ranks
    such a value. ``warnings`` says what a reader of an ``ok`` record should know (a teacher not cached, a model
    not saved). ``scores``/``teacher_scores``/``chance_scores`` map metric -> value, ``higher_is_better`` metric ->
    direction (from the task)."""

    run_id: str
    spec: RunSpec
    status: str  # "ok" or "error"
    error: str | None = None
    scores: dict[str, float | None] = field(default_factory=dict)
    #: per metric, the bootstrap standard error over the scored examples (records from before it: empty)
    standard_errors: dict[str, float | None] = field(default_factory=dict)
    primary_metric: str | None = None
    teacher_scores: dict[str, float | None] = field(default_factory=dict)
    chance_scores: dict[str, float | None] = field(default_factory=dict)  # a trivial predictor on the scored split
    higher_is_better: dict[str, bool] = field(default_factory=dict)
    density: Density = Density()
    params: ParamCounts = ParamCounts()
    flops: Flops = Flops()
    latency: tuple[LatencyEntry, ...] = ()
    shape: RecordShape = RecordShape()
    data: Provenance = Provenance()
    quality: Quality = Quality()
    teacher_quality: Quality = Quality()
    speed: Speed | None = None  # runs with a target speedup
    method_info: dict[str, Any] = field(default_factory=dict)
    wall_time_s: float = 0.0
    versions: dict[str, str] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    artifact: str | None = None  # the saved compact model, relative to the results directory (older records: absolute)
    predictions: str | None = None  # per-example predictions, relative to the results directory
    masks: str | None = None  # the final unit masks, relative to the results directory
    created: str = ""
    warnings: tuple[str, ...] = ()
    nonfinite: tuple[str, ...] = ()
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self):
        for name in ("latency", "warnings", "nonfinite"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        found = list(self.nonfinite)
        for f in dataclasses.fields(self):
            if f.name != "nonfinite":
                object.__setattr__(self, f.name, finite_or_none(getattr(self, f.name), f.name, found))
        object.__setattr__(self, "nonfinite", tuple(sorted(set(found))))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        return to_jsonable(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRecord:
        """Inverse of ``to_dict``; ``ValueError`` naming the first field that is missing or of the wrong type, or a
        record of another schema version (``grain-bench leaderboard upgrade`` brings older ones up to this one)."""
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise SchemaMismatch(version)
        record = read(cls, data)
        if record.status not in STATUSES:
            raise ValueError(f"field status is {record.status!r}, expected 'ok' or 'error'")
        if not record.run_id:
            raise ValueError("field run_id is empty")
        return record

    @property
    def ok(self) -> bool:
        """True when the run finished."""
        return self.status == "ok"

    def latency_of(self, label: str) -> LatencyEntry | None:
        """The latency entry of the model ``label`` (``compact`` or ``dense``), or None when it was not timed."""
        return next((entry for entry in self.latency if entry.label == label), None)


class SchemaMismatch(ValueError):
    """A record of another schema version than this grain-bench writes: older ones need ``leaderboard upgrade``."""

    def __init__(self, version: Any):
        self.version = version
        if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
            message = f"schema version {version} is newer than this grain-bench ({SCHEMA_VERSION}); upgrade grain-bench"
        elif isinstance(version, int) and not isinstance(version, bool):
            message = (f"schema version {version} is older than this grain-bench reads ({SCHEMA_VERSION}); run "
                       f"`grain-bench leaderboard upgrade` on the results directory")
        else:
            message = f"field schema_version is {type(version).__name__} {version!r}, expected an integer"
        super().__init__(message)

    @property
    def older(self) -> bool:
        """True for a record that ``leaderboard upgrade`` can bring up to this schema."""
        return isinstance(self.version, int) and not isinstance(self.version, bool) and self.version < SCHEMA_VERSION


def latency_entry(values: dict[str, Any]) -> LatencyEntry:
    """A ``LatencyEntry`` from a timing's dict (``LatencyResult.to_dict`` plus speedups), checked like a stored one."""
    return read(LatencyEntry, values)


def quality_of(values: dict[str, Any] | None) -> Quality:
    """A ``Quality`` from ``grain_bench.quality.assess``'s dict (or a cached teacher's); {} or None is no verdict."""
    return read(Quality, values or {})
