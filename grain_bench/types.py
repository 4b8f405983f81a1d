"""Stored value types: the distillation recipe, the run spec (content-hashed) and the run record."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

from grain_bench.errors import UsageError
from grain_bench.options import Options, option

#: version of the stored record; older records are brought up to it on read (``leaderboard.store.current_form``)
SCHEMA_VERSION = 2
#: version of the run spec: part of every run id, so it changes only when ids must change
SPEC_SCHEMA_VERSION = 1
#: The shortest ``max_length`` a recipe accepts: a sentence pair's special tokens alone take three positions.
MIN_MAX_LENGTH = 16


@dataclass(frozen=True)
class Recipe(Options):
    """Every hyper-parameter of teacher fine-tuning and distillation; identical for every method in a comparison."""

    owner = "recipe"

    name: str = "custom"
    # distillation losses
    temperature: float = option(8.0, gt=0)
    hard_label_weight: float = option(0.0, ge=0)
    hidden_loss: bool = True
    hidden_layer_step: int = option(2, ge=1)
    hidden_weight: float = option(1.0, ge=0)
    # student optimisation
    lr: float = option(3e-5, gt=0)
    adam_eps: float = option(1e-6, gt=0)
    weight_decay: float = option(0.01, ge=0)
    warmup: float = option(0.1, ge=0, le=1)  # fraction of training
    clip: float = option(1.0, gt=0)  # max gradient norm
    batch_size: int = option(32, ge=1)
    epochs: float = option(20.0, gt=0)
    max_steps: int | None = option(None, ge=1, hint="or none to train for `epochs`")
    max_length: int = option(128, ge=MIN_MAX_LENGTH, hint="shorter inputs leave no room for text beside the special "
                                                           "tokens; the backbone's positions bound it from above")
    # density schedule (fractions of training)
    prune_start: float = option(0.2, ge=0, le=1)
    prune_end: float = option(0.4, ge=0, le=1)
    # teacher fine-tuning
    teacher_lr: float = option(2e-5, gt=0)
    teacher_epochs: float = option(3.0, gt=0)
    teacher_max_steps: int | None = option(None, ge=1, hint="or none to train for `teacher_epochs`")
    teacher_batch_size: int = option(32, ge=1)
    # data and evaluation
    max_train_examples: int | None = option(None, ge=1, hint="or none for the whole split")
    max_eval_examples: int | None = option(None, ge=1, hint="or none for the whole split")
    eval_batch_size: int = option(64, ge=1)

    def validate(self) -> None:
        """Relations between fields (single-field ranges are declared above and checked first)."""
        if not self.prune_start <= self.prune_end:
            raise UsageError(f"recipe: need 0 <= prune_start <= prune_end <= 1, got {self.prune_start}, "
                             f"{self.prune_end}")

    def teacher_dict(self) -> dict[str, Any]:
        """The fields that define the fine-tuned teacher (its cache key)."""
        keys = ("teacher_lr", "teacher_epochs", "teacher_max_steps", "teacher_batch_size", "max_length",
                "max_train_examples", "adam_eps", "weight_decay", "warmup", "clip")
        return {k: getattr(self, k) for k in keys}

    def caption(self) -> str:
        """One line describing the recipe, for table captions."""
        steps = f"{self.max_steps} steps" if self.max_steps else f"{self.epochs:g} epochs"
        hidden = f"hidden MSE every {self.hidden_layer_step} layers" if self.hidden_loss else "no hidden loss"
        return (f"recipe {self.name}: logit KD T={self.temperature:g}, {hidden}, AdamW lr {self.lr:g}, batch "
                f"{self.batch_size}, {steps}, max length {self.max_length}, "
                f"prune {self.prune_start:g}-{self.prune_end:g}"
                f" (cubic); teacher lr {self.teacher_lr:g}, "
                + (f"{self.teacher_max_steps} steps" if self.teacher_max_steps else f"{self.teacher_epochs:g} epochs"))


def canonical_json(obj: Any) -> str:
    """Deterministic JSON (sorted keys, no spaces) used for hashing."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


@dataclass(frozen=True)
class RunSpec:
    """Everything that defines one run; its ``run_id`` is a hash of this content."""

    method: str
    task: str
    backbone: str
    target_density: float
    seed: int
    recipe: dict[str, Any]
    method_options: dict[str, Any] = field(default_factory=dict)
    task_version: str = "0"
    data: str = "default"  # what the data is: "sha256:<hash>" of the files read, or "hub:<repo>@<commit>"
    schema_version: int = SPEC_SCHEMA_VERSION
    data_dir: str | None = None  # where the files were found: stored, but not part of the run id

    @property
    def run_id(self) -> str:
        """Content hash of the spec (first 16 hex digits of SHA-256); the data's location is left out, so the same
        data reached through two paths is one run."""
        content = self.to_dict()
        del content["data_dir"]
        return hashlib.sha256(canonical_json(content).encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSpec:
        """Inverse of ``to_dict``; unknown keys are ignored for forward compatibility."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def label(self) -> str:
        """Short human label."""
        opts = ",".join(f"{k}={v}" for k, v in sorted(self.method_options.items()))
        options = f"[{opts}]" if opts else ""
        return f"{self.method}{options} on {self.task} @ {self.target_density:g} seed {self.seed}"


@dataclass(frozen=True)
class RunRecord:
    """The outcome of one run, as stored in ``records.jsonl``.

    Non-finite numbers (NaN, infinities) anywhere in a record are replaced by ``None`` when the record is made, and
    their places are listed in ``nonfinite`` (e.g. ``scores.pearson``): stored JSON stays strict and no table ranks
    such a value. ``warnings`` says what a reader of an ``ok`` record should know (a teacher not cached, a model
    not saved).

    The parts (schema 2): ``scores``/``teacher_scores``/``chance_scores`` map metric -> value and
    ``higher_is_better`` metric -> direction (from the task); ``density`` has ``target``, ``achieved`` (kept unit
    cost) and ``encoder_params`` (kept encoder parameters), read through ``Density``; ``params`` ``total``,
    ``encoder``, ``encoder_linear``, ``embeddings``, ``dense_encoder``, ``head``; ``flops`` ``seq_len``, ``encoder``,
    ``total``, ``dense_encoder``, ``dense_total``, ``predicted_speedup``; ``latency`` one entry per timed model."""

    run_id: str
    spec: dict[str, Any]
    status: str  # "ok" or "error"
    error: str | None = None
    scores: dict[str, float] = field(default_factory=dict)
    primary_metric: str | None = None
    teacher_scores: dict[str, float] = field(default_factory=dict)
    density: dict[str, float] = field(default_factory=dict)
    params: dict[str, int] = field(default_factory=dict)
    flops: dict[str, float] = field(default_factory=dict)
    latency: list[dict[str, Any]] = field(default_factory=list)
    shape: dict[str, Any] = field(default_factory=dict)
    method_info: dict[str, Any] = field(default_factory=dict)
    wall_time_s: float = 0.0
    versions: dict[str, str] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    artifact: str | None = None
    predictions: str | None = None  # per-example predictions, relative to the results directory
    masks: str | None = None  # the final unit masks, relative to the results directory
    created: str = ""
    schema_version: int = SCHEMA_VERSION
    chance_scores: dict[str, float] = field(default_factory=dict)  # a trivial predictor on the scored split
    higher_is_better: dict[str, bool] = field(default_factory=dict)  # each metric's direction, from the task
    data: dict[str, Any] = field(default_factory=dict)  # provenance: identity key, source, hub commit, file hashes
    quality: dict[str, Any] = field(default_factory=dict)  # collapse verdict and evidence (grain_bench.quality)
    teacher_quality: dict[str, Any] = field(default_factory=dict)  # the same for the run's teacher
    warnings: list[str] = field(default_factory=list)
    nonfinite: list[str] = field(default_factory=list)

    def __post_init__(self):
        found = list(self.nonfinite or [])
        for f in dataclasses.fields(self):
            if f.name != "nonfinite":
                object.__setattr__(self, f.name, _finite_or_none(getattr(self, f.name), f.name, found))
        object.__setattr__(self, "nonfinite", sorted(set(found)))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRecord:
        """Inverse of ``to_dict``; raises ``ValueError`` when a required key is missing or a field has a wrong type."""
        names = {f.name for f in dataclasses.fields(cls)}
        missing = [k for k in ("run_id", "spec", "status") if k not in data]
        if missing:
            raise ValueError(f"record lacks {', '.join(missing)}")
        values = {k: v for k, v in data.items() if k in names}
        for name, value in values.items():
            expected = _RECORD_TYPES[name]
            if not _has_type(value, expected):
                raise ValueError(f"field {name} is {type(value).__name__} {_short(value)}, expected "
                                 f"{' or '.join(_TYPE_NAMES[t] for t in expected)}")
        if values["status"] not in ("ok", "error"):
            raise ValueError(f"field status is {_short(values['status'])}, expected 'ok' or 'error'")
        if not values["run_id"]:
            raise ValueError("field run_id is empty")
        for name in ("scores", "teacher_scores", "chance_scores"):
            for key, score in values.get(name, {}).items():
                if score is not None and not _has_type(score, (float,)):
                    raise ValueError(f"{name}.{key} is {type(score).__name__} {_short(score)}, expected a number")
        return cls(**values)

    @property
    def ok(self) -> bool:
        """True when the run finished."""
        return self.status == "ok"


_NUMBER = float  # in the table below: an int or a float, never a bool
_RECORD_TYPES: dict[str, tuple[type, ...]] = {
    "run_id": (str,), "spec": (dict,), "status": (str,), "error": (str, type(None)), "scores": (dict,),
    "primary_metric": (str, type(None)), "teacher_scores": (dict,), "density": (dict,), "params": (dict,),
    "flops": (dict,), "latency": (list,), "shape": (dict,), "method_info": (dict,), "wall_time_s": (_NUMBER,),
    "versions": (dict,), "environment": (dict,), "artifact": (str, type(None)), "created": (str,),
    "predictions": (str, type(None)), "masks": (str, type(None)), "quality": (dict,), "teacher_quality": (dict,),
    "schema_version": (int,), "chance_scores": (dict,), "higher_is_better": (dict,), "warnings": (list,),
    "nonfinite": (list,), "data": (dict,),
}
_TYPE_NAMES = {str: "a string", dict: "an object", list: "a list", float: "a number", int: "an integer",
               type(None): "null"}


def _has_type(value: Any, expected: tuple[type, ...]) -> bool:
    if isinstance(value, bool):  # JSON true/false is no number
        return False
    return any(isinstance(value, (int, float)) if t is float else isinstance(value, t) for t in expected)


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def _finite_or_none(value: Any, path: str, found: list[str]) -> Any:
    """``value`` with every non-finite float replaced by None (its path appended to ``found``)."""
    if isinstance(value, float) and not math.isfinite(value):
        found.append(path)
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v, f"{path}.{k}", found) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_none(v, f"{path}[{i}]", found) for i, v in enumerate(value)]
    return value


@dataclass(frozen=True)
class Density:
    """The densities of a record (``RunRecord.density``), typed; a field the record lacks is None."""

    target: float | None = None
    achieved: float | None = None  # kept unit cost / total unit cost (what ``target`` asks for)
    encoder_params: float | None = None  # kept encoder parameters / the dense encoder's

    @classmethod
    def of(cls, record: RunRecord) -> Density:
        """The density part of ``record``; numbers only (anything else reads as None)."""
        def number(key: str) -> float | None:
            value = record.density.get(key)
            return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

        return cls(number("target"), number("achieved"), number("encoder_params"))
