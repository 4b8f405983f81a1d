"""Stored value types: the distillation recipe, the run spec (content-hashed) and the run record."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from grain_bench.errors import UsageError
from grain_bench.options import Options

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Recipe(Options):
    """Every hyper-parameter of teacher fine-tuning and distillation; identical for every method in a comparison."""

    owner = "recipe"

    name: str = "custom"
    # distillation losses
    temperature: float = 8.0
    hard_label_weight: float = 0.0
    hidden_loss: bool = True
    hidden_layer_step: int = 2
    hidden_weight: float = 1.0
    # student optimisation
    lr: float = 3e-5
    adam_eps: float = 1e-6
    weight_decay: float = 0.01
    warmup: float = 0.1
    clip: float = 1.0
    batch_size: int = 32
    epochs: float = 20.0
    max_steps: int | None = None
    max_length: int = 128
    # density schedule (fractions of training)
    prune_start: float = 0.2
    prune_end: float = 0.4
    # teacher fine-tuning
    teacher_lr: float = 2e-5
    teacher_epochs: float = 3.0
    teacher_max_steps: int | None = None
    teacher_batch_size: int = 32
    # data and evaluation
    max_train_examples: int | None = None
    max_eval_examples: int | None = None
    eval_batch_size: int = 64

    def validate(self) -> None:
        """Reject values that make no sense."""
        if not 0 <= self.prune_start <= self.prune_end <= 1:
            raise UsageError(f"recipe: need 0 <= prune_start <= prune_end <= 1, got {self.prune_start}, {self.prune_end}")
        if self.temperature <= 0:
            raise UsageError(f"recipe: temperature must be > 0, got {self.temperature}")
        for key in ("lr", "teacher_lr", "batch_size", "teacher_batch_size", "max_length", "eval_batch_size"):
            if getattr(self, key) <= 0:
                raise UsageError(f"recipe: {key} must be > 0, got {getattr(self, key)}")
        if self.hidden_layer_step < 1:
            raise UsageError(f"recipe: hidden_layer_step must be >= 1, got {self.hidden_layer_step}")

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
                f"{self.batch_size}, {steps}, max length {self.max_length}, prune {self.prune_start:g}-{self.prune_end:g}"
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
    data: str = "default"
    schema_version: int = SCHEMA_VERSION

    @property
    def run_id(self) -> str:
        """Content hash of the spec (first 16 hex digits of SHA-256)."""
        return hashlib.sha256(canonical_json(self.to_dict()).encode()).hexdigest()[:16]

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
        return f"{self.method}{'[' + opts + ']' if opts else ''} on {self.task} @ {self.target_density:g} seed {self.seed}"


@dataclass(frozen=True)
class RunRecord:
    """The outcome of one run, as stored in ``records.jsonl``."""

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
    created: str = ""
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRecord:
        """Inverse of ``to_dict``; raises ``ValueError`` when required keys are missing."""
        names = {f.name for f in dataclasses.fields(cls)}
        missing = [k for k in ("run_id", "spec", "status") if k not in data]
        if missing:
            raise ValueError(f"record lacks {', '.join(missing)}")
        return cls(**{k: v for k, v in data.items() if k in names})

    @property
    def ok(self) -> bool:
        """True when the run finished."""
        return self.status == "ok"
