"""The interface every pruning method implements (built-in or third-party).

Two kinds of method share the trainer (``grain_bench.distill``):

**Score-and-cut** methods (GRAIN, heads, magnitude, movement) see the training through two callbacks:

- ``observe(state)`` every step, right after the backward pass of the logit-KD loss (gradient separation), or after
  the backward of the summed loss when the method sets ``gradient_source = "total"``; ``state.unit_grads`` holds
  dL/dgate of every unit for that loss. A method with ``observes_after_pruning = False`` is observed only up to the
  schedule's last pruning step (its later scores would feed no mask);
- ``masks_for(state, density)`` on pruning steps, with the trainer's scheduled density; it returns ``UnitMasks`` that
  keep no more than ``density`` of the unit cost and never re-grow a pruned unit.

**Learned-mask** methods (CoFi) also use:

- ``parameters(state)``: trainable tensors the method owns (gate logits, Lagrange multipliers), as ``ParamGroup``s
  with their own learning rate; a group with ``maximize=True`` is trained by gradient ascent;
- ``gates(state)``: before each forward pass, real-valued (sampled or deterministic) gate values the forward
  multiplies every unit by, on top of the 0/1 masks; gradients reach the method's parameters through them;
- ``loss(state)``: a term added to the student objective, backpropagated with the hidden-state loss, after
  ``observe`` (so gradient separation is unchanged);
- ``owns_density = True``: the trainer's cubic schedule does not cut; ``state.scheduled_density`` still shows it.
  At ``freeze_step(state)`` (default: where the schedule reaches the target) the trainer calls
  ``masks_for(state, state.target_density)`` once: 0/1 masks at the run's target within one unit's cost. Units may
  come back before that; from then on the structure is fixed and masks only shrink;
- ``unit_scales(state)``: after training, one real scale per kept unit, folded into the weights before compaction
  (CoFi's deterministic gate values);
- ``expected_density(state)``: for a method whose constraint holds in expectation (L0 gates), the expected density
  its gate distributions give now. The trainer asks at the freeze step, before ``masks_for``; the record keeps it
  (``density.expected_at_freeze``) with its gap to the target, and tables flag a row whose gap is over
  ``grain_bench.quality.CONVERGENCE_TOLERANCE`` "not converged": its gates did not learn the target, and the
  masks are the landing rule's, not the method's.

**Calibration-only** methods (``calibrates = True``, e.g. kwon, Kwon et al. 2022) take no optimizer step: the student
is a copy of the fine-tuned teacher, and the harness (``grain_bench.calibrate``) shows them a sample of the training
split (recipe ``calibration_examples`` in batches of ``calibration_batch_size``) in eval mode:

- ``observe(state)`` after the backward pass of each calibration batch's loss (``calibration_loss``: "task", the
  task's loss on the gold labels, which is what Fisher information needs; logit KD would have zero gradient while the
  student equals the teacher); ``state.step`` counts batches and ``state.unit_grads`` holds that batch's dL/dgate;
- ``masks_for(state, target)`` once after the last batch: masks within the target under ``state.cost_model``;
- ``unit_scales(state)`` with those masks applied, ``state.calibration`` holding the batches and the teacher: one
  scale per kept unit (mask tuning), folded into the weights;
- ``retraining_steps()``: when above 0, the pruned student is then distilled with the shared trainer for that many
  steps, its masks fixed (the record's cost then has both phases).

This module imports no torch, so listing methods stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from grain_bench.options import Options

if TYPE_CHECKING:  # types only: importing them here would import torch for every method listing
    import torch

    from grain_bench.masks import MaskSpace, UnitMasks, UnitTensors


@dataclass(frozen=True)
class MethodOptions(Options):
    """Base class of a method's options (frozen dataclass; unknown keys are rejected)."""


@dataclass
class TrainState:
    """What the trainer shows a method at each callback. (It no longer has ``dev_eval``: the trainer never set it; a
    method that selects on the dev split lists option sets in ``variants()`` and the harness compares them.)"""

    step: int  # 1-based global step
    total_steps: int
    model: torch.nn.Module  # the student (a transformers model with gates installed)
    space: MaskSpace
    masks: UnitMasks  # the current 0/1 masks
    unit_grads: UnitTensors | None = None  # dL/dgate of every unit, None before the first backward
    loss_name: str = "logit"  # which loss produced unit_grads: "logit" or "total"
    seed: int = 0
    target_density: float = 1.0  # the run's target (a fraction of the dense model's cost under ``cost_model``)
    scheduled_density: float = 1.0  # the trainer's cubic schedule at this step (what score-and-cut methods cut to)
    prune_start_step: int = 0  # the schedule's first and last pruning steps (1-based)
    prune_end_step: int = 0
    frozen: bool = False  # True once a learned-mask method's structure is fixed
    #: for learned-mask methods with ``expected_density``: what it gave at the freeze step (set by the trainer)
    expected_at_freeze: float | None = None
    #: what budgets are fractions of (``grain_bench.costs``): None is the parameter cost (the density); a measured
    #: latency model for a run with a target speedup. Score-and-cut methods pass it to ``grain_bench.allocate``.
    cost_model: Any = None
    #: for calibration-only methods: the ``grain_bench.calibrate.Calibration`` (batches, teacher, task); else None
    calibration: Any = None
    #: this step's model inputs on the device (``input_ids``, ``attention_mask``, ``token_type_ids``...; no labels),
    #: set before ``gates`` and ``observe`` of every training and calibration step: what an activation-based method
    #: needs without hooks. ``attention_mask`` says which tokens are padding. Forward hooks on ``model`` stop firing
    #: when the compact phase replaces it (after the last pruning step, for a method that observes no more:
    #: ``model`` then names the compact student): register them again when ``model`` is another object, or use
    #: ``batch``.
    batch: dict[str, Any] | None = None

    @property
    def attention_mask(self):
        """``batch["attention_mask"]`` (1 for a real token, 0 for padding), or None before the first step."""
        return None if self.batch is None else self.batch.get("attention_mask")


@dataclass
class ParamGroup:
    """Trainable tensors a method owns and how the trainer optimises them (AdamW in its own optimizer, constant lr)."""

    params: list[torch.Tensor] = field(default_factory=list)
    lr: float = 0.01
    maximize: bool = False  # gradient ascent, e.g. for Lagrange multipliers
    weight_decay: float = 0.0
    name: str = ""


class Method:
    """Base class of a pruning method. Subclasses set ``name`` and may override ``Options`` and the callbacks."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Options: ClassVar[type[MethodOptions]] = MethodOptions
    #: "logit": observe after the logit-KD backward only; "total": after the logit + hidden-state backward.
    gradient_source: str = "logit"
    #: False for methods that never prune (the trainer then skips the schedule).
    prunes: ClassVar[bool] = True
    #: True for learned-mask methods that reach the target themselves (see the module docstring).
    owns_density: ClassVar[bool] = False
    #: False when ``observe`` after the schedule's last pruning step changes nothing (score-and-cut methods whose
    #: scores only feed ``masks_for``): the trainer then stops calling it there and takes one backward of the summed
    #: loss instead of two. True (the default) keeps every step's observation, e.g. for a method that reports them.
    observes_after_pruning: ClassVar[bool] = True
    #: True for methods whose ``masks_for`` reads its budget as a fraction of ``state.cost_model``'s cost (through
    #: ``grain_bench.allocate``): they take a target speedup (``--target-speedup``); others are refused one.
    prunes_to_cost: ClassVar[bool] = False
    #: True for calibration-only methods (see the module docstring): no training, the student is the teacher.
    calibrates: ClassVar[bool] = False
    #: the loss a calibration-only method is observed after: "task" (the gold labels') is the only one so far.
    calibration_loss: ClassVar[str] = "task"

    def __init__(self, options: MethodOptions | None = None, seed: int = 0):
        self.options = options if options is not None else self.Options()
        self.seed = seed
        self.info: dict[str, Any] = {}  # stored in the run record (e.g. what an auto mode chose)

    @classmethod
    def from_options(cls, values: dict[str, Any] | None = None, seed: int = 0) -> Method:
        """Build with options parsed from ``values`` (strings are converted; unknown keys raise)."""
        options_cls = cls.Options
        options_cls.owner = f"method {cls.name!r}"
        return cls(options_cls.parse(values), seed=seed)

    @classmethod
    def from_spec(cls, values: dict[str, Any] | None = None, seed: int = 0) -> Method:
        """Build from a stored option set (a run spec's ``method_options``, the ``canonical_options`` form): an option
        it does not hold has its default, or its ``absent`` value where it declares one (``grain_bench.options``)."""
        return cls.from_options({**cls.Options.absent_values(), **dict(values or {})}, seed=seed)

    @classmethod
    def canonical_options(cls, values: dict[str, Any] | None = None) -> dict[str, Any]:
        """The one stored form of an option set: parsed (validated, typed) and without the values that equal the
        defaults, so ``-o grain.alpha=0.3`` (the default) and no ``-o`` name the same run. An option that declares
        an ``absent`` value is left out only when it has that value (``from_spec`` reads it back)."""
        options = cls.from_options(values).options
        baseline = {f: getattr(type(options)(), f) for f in options.to_dict()}
        baseline.update(type(options).absent_values())
        return without_defaults(options.to_dict(), baseline)

    def setup(self, state: TrainState) -> None:
        """Called once before the first step."""

    def observe(self, state: TrainState) -> None:
        """Called every step with the gradients of the observed loss."""

    def masks_for(self, state: TrainState, density: float):
        """Masks for the scheduled ``density``; the default keeps everything."""
        return state.masks

    def parameters(self, state: TrainState) -> list[ParamGroup]:
        """Trainable tensors the method owns, called once after ``setup`` (default: none)."""
        return []

    def gates(self, state: TrainState):
        """Real gate values (``UnitTensors``) for this step's forward pass, or None for the 0/1 masks alone."""
        return None

    def loss(self, state: TrainState):
        """A term added to the student loss this step (a scalar tensor), or None."""
        return None

    def freeze_step(self, state: TrainState) -> int:
        """For ``owns_density`` methods: the step at which the structure is fixed (default: the schedule's end)."""
        return state.prune_end_step

    def unit_scales(self, state: TrainState):
        """After training: one scale per unit (``UnitTensors``) to fold into the kept units' weights, or None."""
        return None

    def expected_density(self, state: TrainState) -> float | None:
        """For ``owns_density`` methods whose constraint holds in expectation (L0 gates): the expected density of
        their gates now; None (the default) for methods with no such expectation."""
        return None

    def finalize(self, model) -> dict[str, Any]:
        """Called once after training (masks fixed); returns extra ``ModelShape`` fields (e.g. embedding_rank)."""
        return {}

    def retraining_steps(self) -> int:
        """For calibration-only methods: distillation steps after calibration, with the masks fixed (default 0)."""
        return 0

    def variants(self) -> list[dict[str, Any]]:
        """Option sets to try and select among on the dev split (``[]`` = just this one)."""
        return []

    @classmethod
    def check_backbone(cls, options: dict[str, Any], space) -> None:
        """Raise ``UsageError`` when ``options`` cannot apply to a backbone of mask space ``space`` (checked before
        anything runs; e.g. a block size that does not divide the head width). Default: anything goes."""


def without_defaults(options: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """``options`` minus the entries that equal their default (a stored list equals a default tuple)."""
    def same(value, default):
        return value == default or (isinstance(value, list) and isinstance(default, tuple) and tuple(value) == default)

    return {k: v for k, v in options.items() if not (k in defaults and same(v, defaults[k]))}
