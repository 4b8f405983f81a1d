"""Stored value types: the distillation recipe and the run spec (content-hashed). The run record that holds a spec is
``grain_bench.records.RunRecord``."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from grain_bench.errors import UsageError
from grain_bench.options import Options, option
from grain_bench.stored import read, to_jsonable

#: version of the run spec: part of every run id, so it changes only when ids must change
SPEC_SCHEMA_VERSION = 1
#: spec fields added after the first spec schema: left out of the run id while unset (None)
UNSET_LEFT_OUT = ("target_speedup", "cost_model")
#: recipe fields added after the first recipes, with their defaults: left out of a spec's recipe (and so of its run
#: id) while they hold the default, so a spec written before them keeps the id it always had
RECIPE_ADDED_LATER = {"calibration_examples": 2048, "calibration_batch_size": 32, "precision": "fp32"}
#: what a recipe's training may compute in (``grain_bench.precision``)
PrecisionName = Literal["auto", "fp32", "tf32", "bf16", "fp16"]
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
    # calibration-only runs (methods with ``calibrates``, e.g. kwon): a sample of the training split, no optimizer
    # step; the defaults are Kwon et al.'s (2,048 examples, batches of 32)
    calibration_examples: int = option(2048, ge=1)
    calibration_batch_size: int = option(32, ge=1)
    # what training computes in (``grain_bench.precision``): "auto" is the device's default, which a sweep resolves
    # before the run's id is taken (bf16 on a CUDA device that supports it, else fp32)
    precision: PrecisionName = "fp32"

    def to_dict(self) -> dict[str, Any]:
        """Every field, but the ones of ``RECIPE_ADDED_LATER`` only where they differ from their defaults (what a
        spec stores: run ids of recipes written before those fields stay as they were)."""
        out = super().to_dict()
        for name, default in RECIPE_ADDED_LATER.items():
            if out[name] == default:
                del out[name]
        return out

    def validate(self) -> None:
        """Relations between fields (single-field ranges are declared above and checked first)."""
        if not self.prune_start <= self.prune_end:
            raise UsageError(f"recipe: need 0 <= prune_start <= prune_end <= 1, got {self.prune_start}, "
                             f"{self.prune_end}")

    def teacher_dict(self) -> dict[str, Any]:
        """The fields that define the fine-tuned teacher (its cache key)."""
        keys = ("teacher_lr", "teacher_epochs", "teacher_max_steps", "teacher_batch_size", "max_length",
                "max_train_examples", "adam_eps", "weight_decay", "warmup", "clip")
        out = {k: getattr(self, k) for k in keys}
        if self.precision != RECIPE_ADDED_LATER["precision"]:  # teachers cached before precisions keep their keys
            out["precision"] = self.precision
        return out

    def caption(self) -> str:
        """One line describing the recipe, for table captions."""
        steps = f"{self.max_steps} steps" if self.max_steps else f"{self.epochs:g} epochs"
        hidden = f"hidden MSE every {self.hidden_layer_step} layers" if self.hidden_loss else "no hidden loss"
        return (f"recipe {self.name}: logit KD T={self.temperature:g}, {hidden}, AdamW lr {self.lr:g}, batch "
                f"{self.batch_size}, {steps}, max length {self.max_length}, "
                f"prune {self.prune_start:g}-{self.prune_end:g}"
                f" (cubic); teacher lr {self.teacher_lr:g}, "
                + (f"{self.teacher_max_steps} steps" if self.teacher_max_steps else f"{self.teacher_epochs:g} epochs")
                + (f"; {self.precision} training" if self.precision != "fp32" else ""))


def target_text(density: float, speedup: float | None, cost_kind: str = "") -> str:
    """A target as tables show it: a density (``0.05``), a speedup (``8x``) or, under the FLOPs cost (``cost_kind``
    "flops"), a FLOPs ratio (``0.3 FLOPs``)."""
    if not speedup:
        return f"{density:g}"
    return f"{1 / speedup:.3g} FLOPs" if cost_kind == "flops" else f"{speedup:g}x"


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
    #: a speed target: the run prunes to ``1 / target_speedup`` of the dense model's predicted latency (then
    #: ``target_density`` is that fraction) under the cost model whose key is ``cost_model`` (``grain_bench.costs``)
    target_speedup: float | None = None
    cost_model: str | None = None

    @property
    def run_id(self) -> str:
        """Content hash of the spec (first 16 hex digits of SHA-256); the data's location is left out, so the same
        data reached through two paths is one run, and so are the fields added since (``target_speedup``,
        ``cost_model``) while they are unset, so a spec without them keeps the id it always had."""
        content = self.to_dict()
        del content["data_dir"]
        for name in UNSET_LEFT_OUT:
            if content[name] is None:
                del content[name]
        return hashlib.sha256(canonical_json(content).encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        return to_jsonable(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSpec:
        """Inverse of ``to_dict``, each field checked against its type (``ValueError`` naming it); unknown keys are
        ignored for forward compatibility."""
        return read(cls, data)

    def label(self) -> str:
        """Short human label."""
        opts = ",".join(f"{k}={v}" for k, v in sorted(self.method_options.items()))
        options = f"[{opts}]" if opts else ""
        return f"{self.method}{options} on {self.task} @ {self.target()} seed {self.seed}"

    def target(self) -> str:
        """The target as tables show it: a density (``0.05``), a speedup (``8x``) or, under the FLOPs cost, a FLOPs
        ratio (``0.3 FLOPs``: Kwon et al.'s constraint)."""
        return target_text(self.target_density, self.target_speedup, (self.cost_model or "").partition(":")[0])
