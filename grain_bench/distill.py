"""The shared distillation trainer: the only training loop, identical for every method.

Per step (the order of ``distiller.py`` in airaria/GRAIN, the reference code of arXiv 2212.07634): zero grads ->
forward teacher and student -> backward the logit-KD loss (retain graph) -> ``method.observe`` (gradients of the logit
loss only: gradient separation) -> backward the hidden-state MSE (and a method's own loss) -> on pruning steps
``method.masks_for(state, scheduled density)`` and apply -> clip -> optimizer step. After the last pruning step a
method whose masks are final trains in compact form (``grain_bench.compact_training``): the same steps on the compact
student, the same training up to float rounding.

The loop's parts have names: ``Objective`` computes and checks a step's losses (``StepLosses``);
``separated_backward`` is the gradient-separation rule (and one backward of the sum when nothing is observed); the
pruning policy is chosen once from the method (``pruning_policy``: ``CutOnSchedule`` for score-and-cut methods,
``FreezeAtStep`` for learned-mask methods that own their density, ``NeverPrune``), and so is the last observed step;
``CompactSwitch`` swaps in the compact student.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from grain_bench.compact_training import CompactSwitch
from grain_bench.compaction import can_compact
from grain_bench.errors import GrainBenchError, TrainingDiverged
from grain_bench.losses import hidden_mse
from grain_bench.masked import MaskedModel, fold_unit_scales
from grain_bench.masks import MaskSpace, UnitMasks
from grain_bench.method import Method, TrainState
from grain_bench.precision import MixedPrecision
from grain_bench.schedule import CubicSchedule
from grain_bench.types import Recipe


def set_seed(seed: int) -> None:
    """Seed python, numpy and torch."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def adamw(groups, **options) -> torch.optim.AdamW:
    """``torch.optim.AdamW`` with the fused kernel where torch has one for every parameter's device (CPU, CUDA): the
    default per-tensor loop took 0.17 s a step on MiniLM-L6 on one CPU thread against 0.03 s fused, 15% of a training
    job (the updates agree to float rounding)."""
    params = [p for group in groups for p in (group["params"] if isinstance(group, dict) else [group])]
    fused = bool(params) and all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    return torch.optim.AdamW(groups, fused=fused or None, **options)


def make_optimizer(parameters, lr: float, recipe: Recipe, total_steps: int):
    """AdamW (no decay on biases and LayerNorm) with linear warm-up and linear decay."""
    from transformers import get_linear_schedule_with_warmup

    decay: list[torch.Tensor] = []
    no_decay: list[torch.Tensor] = []
    for name, param in parameters:
        if not param.requires_grad:
            continue
        (no_decay if name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name else decay).append(param)
    optimizer = adamw([{"params": decay, "weight_decay": recipe.weight_decay},
                       {"params": no_decay, "weight_decay": 0.0}], lr=lr, eps=recipe.adam_eps)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(recipe.warmup * total_steps), total_steps)
    return optimizer, scheduler


def batches(features, collate, batch_size: int, seed: int, total_steps: int):
    """``total_steps`` shuffled batches, cycling over epochs (a seeded generator: same order for every method)."""
    generator = torch.Generator().manual_seed(seed)
    step = 0
    while True:
        loader = DataLoader(features, batch_size=batch_size, shuffle=True, collate_fn=collate, generator=generator,
                            drop_last=len(features) >= batch_size)
        for batch in loader:
            if step >= total_steps:
                return
            step += 1
            yield batch


def steps_for(recipe_steps: int | None, epochs: float, n_examples: int, batch_size: int) -> int:
    """Training steps: the explicit count, or epochs over the data."""
    if recipe_steps:
        return int(recipe_steps)
    return max(1, math.ceil(epochs * n_examples / batch_size))


def _to(batch: dict[str, Any], device) -> dict[str, Any]:
    return {k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items()}


# ---- teacher ------------------------------------------------------------------------------------------------------
def finetune(model, task, data, recipe: Recipe, seed: int, progress: bool = True, on_step=None) -> float:
    """Fine-tune ``model`` on the task's gold labels (the teacher); returns wall seconds. ``on_step(step, model)``,
    when given, is called after every optimizer step (learning curves evaluate there)."""
    start = time.time()
    total = steps_for(recipe.teacher_max_steps, recipe.teacher_epochs, len(data.train.features),
                      recipe.teacher_batch_size)
    optimizer, scheduler = make_optimizer(model.named_parameters(), recipe.teacher_lr, recipe, total)
    device = next(model.parameters()).device
    precision = MixedPrecision(recipe.precision, device)
    model.train()
    bar = tqdm(batches(data.train.features, data.collate, recipe.teacher_batch_size, seed, total), total=total,
               desc=f"teacher {task.name}", disable=not progress)
    with precision.matmul():
        for step, batch in enumerate(bar, start=1):
            batch = _to(batch, device)
            with precision.autocast():
                output = model(**task.model_inputs(batch))
            loss = task.hard_loss(precision.outputs(output), batch)
            check_finite_loss({"loss": loss}, step, "teacher fine-tuning", f"teacher_lr (now {recipe.teacher_lr:g})")
            precision.scale(loss).backward()
            precision.step([optimizer], list(model.parameters()), recipe.clip)
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
            if on_step is not None:
                on_step(step, model)
    model.eval()
    check_finite_weights(model, "teacher fine-tuning", f"teacher_lr (now {recipe.teacher_lr:g})")
    return time.time() - start


def check_finite_loss(losses: dict[str, torch.Tensor], step: int, what: str, lr_field: str) -> None:
    """Raise ``TrainingDiverged`` when a loss is NaN or infinite (checked before it is backpropagated)."""
    for name, value in losses.items():
        if not bool(torch.isfinite(value.detach()).all()):
            raise TrainingDiverged(f"{what} diverged at step {step} ({name} {float(value.detach()):g}); lower the "
                                   f"learning rate: -r {lr_field}")


def check_finite_weights(model, what: str, lr_field: str | None = None) -> None:
    """Raise ``TrainingDiverged`` when a parameter of ``model`` holds NaN or infinite values."""
    for name, param in model.named_parameters():
        if not bool(torch.isfinite(param.detach()).all()):
            advice = f"; lower the learning rate: -r {lr_field}" if lr_field else ""
            raise TrainingDiverged(f"{what} diverged: parameter {name} holds non-finite values{advice}")


# ---- student ------------------------------------------------------------------------------------------------------
@dataclass
class DistillResult:
    """The distilled student (gates still installed) and what happened."""

    model: Any
    masked: MaskedModel
    masks: UnitMasks
    space: MaskSpace
    steps: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    #: compute seconds by phase ("calibration", "distillation") and the training examples each phase saw (the
    #: record's ``cost`` part; a calibration-only run has no distillation)
    phases: dict[str, float] = field(default_factory=dict)
    examples: dict[str, int] = field(default_factory=dict)
    #: a mixed-precision run's ``MixedPrecision.describe()`` (empty for fp32: records of fp32 runs are unchanged)
    precision: dict[str, Any] = field(default_factory=dict)
    #: what a learned-mask method's ``expected_density`` gave at the freeze step (None for the others)
    expected_at_freeze: float | None = None


def layer_pairs(num_layers: int, step: int) -> list[tuple[int, int]]:
    """(student, teacher) hidden-state indices matched: 0, step, 2*step, ... and always the last layer."""
    pairs = [(i, i) for i in range(0, num_layers + 1, step)]
    if pairs[-1][0] != num_layers:
        pairs.append((num_layers, num_layers))
    return pairs


class TeacherOutputs:
    """Teacher outputs per step, shared by every student distilled with the same teacher, seed and batches.

    The batch stream depends only on the seed and the recipe, and the teacher is frozen in eval mode, so its outputs
    at step t are the same for every method; caching them skips a quarter of each step. Only the hidden states the
    layer map uses are kept, and nothing is cached past ``max_bytes``.
    """

    def __init__(self, max_bytes: int = 2 << 30):
        self.max_bytes = max_bytes
        self.bytes = 0
        self.steps: dict[int, Any] = {}

    def get(self, step: int):
        """The cached output of ``step`` or None."""
        return self.steps.get(step)

    def put(self, step: int, output, keep_hidden: set[int]) -> None:
        """Keep ``output`` (detached; hidden states outside ``keep_hidden`` dropped) while the budget allows."""
        if output.get("hidden_states") is not None:
            output["hidden_states"] = tuple(h if i in keep_hidden else None for i, h in enumerate(output.hidden_states))
        size = sum(t.numel() * t.element_size() for t in _tensors(output))
        if self.bytes + size <= self.max_bytes:
            self.steps[step] = output
            self.bytes += size


def _tensors(output):
    for value in output.values():
        if isinstance(value, torch.Tensor):
            yield value
        elif isinstance(value, tuple):
            yield from (v for v in value if isinstance(v, torch.Tensor))


def _apply(method: Method, masked: MaskedModel, new_masks, step: int, may_grow: bool = False) -> None:
    """Set the method's masks after checking them (masks only shrink, unless the structure is being fixed)."""
    if not isinstance(new_masks, UnitMasks):
        raise GrainBenchError(f"method {method.name!r}: masks_for must return UnitMasks, "
                              f"got {type(new_masks).__name__}")
    if not may_grow and not new_masks.is_subset_of(masked.masks):
        raise GrainBenchError(f"method {method.name!r} re-grew pruned units at step {step}; masks may only shrink")
    masked.apply(new_masks)


def _check_reaches(method: Method, masks, space: MaskSpace, target: float) -> None:
    """A learned-mask method's final masks must keep the run's target density within one unit's cost."""
    if not isinstance(masks, UnitMasks):
        raise GrainBenchError(f"method {method.name!r}: masks_for must return UnitMasks, got {type(masks).__name__}")
    one_unit = max(space.unit_costs.values()) / space.total_cost()
    if abs(masks.density(space) - target) > one_unit + 1e-12:
        raise GrainBenchError(f"method {method.name!r} fixed its structure at density {masks.density(space):.4f}, "
                              f"not the run's target {target:g} (within one unit, {one_unit:.2g})")


def compacts_after_pruning(method: Method) -> bool:
    """Whether the trainer may train ``method``'s student in compact form after the schedule's last pruning step:
    the schedule cuts its masks, and from there on it observes nothing and sets no gates and no loss."""
    observes_late = _observes(method) and method.observes_after_pruning
    return (method.prunes and not method.owns_density and not observes_late
            and type(method).gates is Method.gates and type(method).loss is Method.loss)


def _observes(method: Method) -> bool:
    return type(method).observe is not Method.observe


# ---- the losses of a step and their backward passes -----------------------------------------------------------------
@dataclass
class StepLosses:
    """One step's losses: ``logit`` (KD, plus the hard-label term), ``method`` (the method's own, or None) and
    ``hidden`` (the hidden-state MSE, or None; ``Objective.rest`` sets it after the logit loss's backward)."""

    logit: torch.Tensor
    method: torch.Tensor | None
    hidden: torch.Tensor | None = None


class Objective:
    """How the student's losses are computed, each checked finite before it is backpropagated (the message names the
    loss and the learning rate to lower): logit KD at the recipe's temperature (plus ``hard_label_weight`` times the
    task's hard-label loss), the hidden-state MSE through the projections and the method's own loss."""

    def __init__(self, task, recipe: Recipe, projections: torch.nn.ModuleList, pairs, method_name: str):
        self.task, self.recipe, self.projections, self.pairs = task, recipe, projections, pairs
        self.method_name = method_name
        self.lr_field = f"lr (now {recipe.lr:g})"

    def logit(self, student_out, teacher_out, batch, step: int) -> torch.Tensor:
        """The logit loss: KD, plus the hard-label term when the recipe weights one (checked)."""
        recipe = self.recipe
        loss = self.task.kd_loss(student_out, teacher_out, batch, recipe.temperature)
        if recipe.hard_label_weight:
            loss = loss + recipe.hard_label_weight * self.task.hard_loss(student_out, batch)
        check_finite_loss({"logit loss": loss}, step, "training", self.lr_field)
        return loss

    def follow(self, losses: StepLosses) -> bool:
        """Whether terms follow the logit loss (its backward must then keep the graph)."""
        return bool(self.recipe.hidden_loss) or losses.method is not None

    def rest(self, losses: StepLosses, student_out, teacher_out, attention_mask, step: int) -> list[torch.Tensor]:
        """The terms after the logit loss, in order (the hidden-state loss, then the method's), each checked."""
        terms = []
        if self.recipe.hidden_loss:
            losses.hidden = self.recipe.hidden_weight * hidden_mse(student_out.hidden_states, teacher_out.hidden_states,
                                                                   self.projections, self.pairs, attention_mask)
            check_finite_loss({"hidden loss": losses.hidden}, step, "training", self.lr_field)
            terms.append(losses.hidden)
        if losses.method is not None:
            check_finite_loss({f"{self.method_name} loss": losses.method}, step, "training", self.lr_field)
            terms.append(losses.method)
        return terms


def _sum(terms: list[torch.Tensor]) -> torch.Tensor:
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total


def _unscaled(loss: torch.Tensor) -> torch.Tensor:
    return loss


def separated_backward(logit_loss: torch.Tensor, rest: Callable[[], list[torch.Tensor]], keep_graph: bool,
                       observe: Callable[[str], None] | None, gradient_source: str = "logit",
                       scale: Callable[[torch.Tensor], torch.Tensor] = _unscaled) -> None:
    """Backpropagate a step's losses so that the method sees the gradients it asks for (gradient separation).

    With ``observe`` (the method observes this step): backward the logit loss (keeping the graph when ``keep_graph``:
    terms follow), ``observe("logit")`` when ``gradient_source`` is "logit" (dL/dgate of the logit loss alone), then
    backward the sum of ``rest()`` (computed only now), then ``observe("total")`` when it is "total". Without: one
    backward of the logit loss plus ``rest()``, which gives the optimizer the same gradients at less cost. ``scale``:
    what each backward pass starts from (a loss scaler's ``scale`` under fp16, ``grain_bench.precision``)."""
    if observe is None:
        scale(_sum([logit_loss, *rest()])).backward()
        return
    scale(logit_loss).backward(retain_graph=keep_graph)
    if gradient_source == "logit":
        observe("logit")
    terms = rest()
    if terms:
        scale(_sum(terms)).backward()
    if gradient_source == "total":
        observe("total")


# ---- when the masks change: one policy per run, chosen from the method ---------------------------------------------
class CutOnSchedule:
    """Score-and-cut methods: ``masks_for(state, scheduled density)`` on the schedule's pruning steps (masks only
    shrink). With ``observes_after_pruning = False`` the method is observed up to the last pruning step only."""

    def __init__(self, method: Method, masked: MaskedModel, schedule: CubicSchedule):
        self.method, self.masked, self.schedule = method, masked, schedule

    def last_observed(self, total: int) -> int:
        """The last step whose gradients the method is shown."""
        # Observations after the last pruning step would feed no mask: from there on one backward of the summed loss
        # gives the same gradients (up to float rounding) for about two thirds of the cost.
        return total if self.method.observes_after_pruning else self.schedule.end

    def after_backward(self, state: TrainState) -> None:
        """Cut on a pruning step."""
        if self.schedule.is_pruning_step(state.step):
            _apply(self.method, self.masked, self.method.masks_for(state, state.scheduled_density), state.step)


class FreezeAtStep:
    """Learned-mask methods that own their density: at ``freeze_step`` the trainer calls ``masks_for(state, target)``
    once; the masks must reach the target within one unit and may re-grow units; from then on they are frozen."""

    def __init__(self, method: Method, masked: MaskedModel, space: MaskSpace, freeze_step: int, target: float):
        self.method, self.masked, self.space = method, masked, space
        self.freeze_step, self.target = freeze_step, target

    def last_observed(self, total: int) -> int:
        """The last step whose gradients the method is shown: every step."""
        return total

    def after_backward(self, state: TrainState) -> None:
        """Fix the structure at the freeze step."""
        if not state.frozen and state.step >= self.freeze_step:
            state.expected_at_freeze = self.method.expected_density(state)
            final = self.method.masks_for(state, self.target)
            _check_reaches(self.method, final, self.space, self.target)
            _apply(self.method, self.masked, final, state.step, may_grow=True)
            state.frozen, state.masks = True, self.masked.masks


class NeverPrune:
    """Methods with ``prunes = False``: the masks stay full."""

    def last_observed(self, total: int) -> int:
        """The last step whose gradients the method is shown: every step."""
        return total

    def after_backward(self, state: TrainState) -> None:
        """Nothing to cut."""


def pruning_policy(method: Method, state: TrainState, masked: MaskedModel, schedule: CubicSchedule):
    """The run's pruning policy, chosen once (after ``method.setup``: ``freeze_step`` may read what it set)."""
    if not method.prunes:
        return NeverPrune()
    if method.owns_density:
        return FreezeAtStep(method, masked, state.space, method.freeze_step(state), state.target_density)
    return CutOnSchedule(method, masked, schedule)


# ---- the loop -----------------------------------------------------------------------------------------------------
def _projections(count: int, hidden: int, device) -> torch.nn.ModuleList:
    """One hidden-state projection per matched layer pair, initialised to the identity."""
    projections = torch.nn.ModuleList()
    for _ in range(count):
        linear = torch.nn.Linear(hidden, hidden)
        with torch.no_grad():
            linear.weight.copy_(torch.eye(hidden))
            linear.bias.zero_()
        projections.append(linear)
    return projections.to(device)


class _Run:
    """The parts of one distillation run, built in the order the trainer has always built them (the projections'
    initialisation draws random numbers): the masked student, the schedule, the objective, the optimizers, the
    method's state, its pruning policy and observation window, and the compact switch."""

    def __init__(self, method: Method, task, teacher, student, data, recipe: Recipe, target_density: float,
                 seed: int, teacher_outputs: TeacherOutputs | None, compact_phase: bool, cost_model=None,
                 fixed_masks: UnitMasks | None = None):
        self.method, self.task, self.teacher, self.recipe = method, task, teacher, recipe
        self.teacher_outputs = teacher_outputs
        self.device = next(student.parameters()).device
        self.precision = MixedPrecision(recipe.precision, self.device)
        self.space = space = MaskSpace.from_config(student.config)
        self.masked = MaskedModel(student, space)
        if fixed_masks is not None:  # a pruned student retrained (a calibration-only run's): masks fixed from step 1
            self.masked.apply(fixed_masks)
        self.total = steps_for(recipe.max_steps, recipe.epochs, len(data.train.features), recipe.batch_size)
        self.schedule = CubicSchedule(self.total, target_density, recipe.prune_start, recipe.prune_end)
        self.pairs = layer_pairs(space.num_layers, recipe.hidden_layer_step) if recipe.hidden_loss else []
        projections = _projections(len(self.pairs), space.hidden, self.device)
        params = list(student.named_parameters()) + [(f"proj.{n}", p) for n, p in projections.named_parameters()]
        self.optimizer, self.scheduler = make_optimizer(params, recipe.lr, recipe, self.total)
        self.objective = Objective(task, recipe, projections, self.pairs, method.name)
        teacher.eval()
        student.train()
        self.state = TrainState(step=0, total_steps=self.total, model=student, space=space, masks=self.masked.masks,
                                seed=seed, target_density=target_density, prune_start_step=self.schedule.start,
                                prune_end_step=self.schedule.end, cost_model=cost_model)
        method.setup(self.state)
        self.method_optimizers = [adamw(list(group.params), lr=group.lr, weight_decay=group.weight_decay,
                                        maximize=group.maximize) for group in method.parameters(self.state)]
        self.pruning = pruning_policy(method, self.state, self.masked, self.schedule)
        # Two backward passes are only needed to show a method the logit loss's gradients alone (or, after the
        # second, the total's): a method that overrides no ``observe`` is never observed, one backward a step.
        self.last_observed = self.pruning.last_observed(self.total) if _observes(method) else 0
        compact_from = (self.schedule.end if compact_phase and compacts_after_pruning(method) and can_compact(student)
                        else 0)
        if fixed_masks is not None:
            compact_from = 1 if compact_phase and can_compact(student) else 0
        self.switch = CompactSwitch(student, self.masked, space, self.optimizer, [p for _, p in params],
                                    list(projections.parameters()), compact_from, self.total)

    def _teacher(self, step: int, inputs):
        """The teacher's outputs at ``step``: from the shared cache, else computed (and cached)."""
        cache = self.teacher_outputs
        output = cache.get(step) if cache is not None else None
        if output is None:
            with torch.no_grad(), self.precision.autocast():
                output = self.teacher(**inputs, output_hidden_states=self.recipe.hidden_loss)
            output = self.precision.outputs(output)
            if cache is not None:
                cache.put(step, output, {t for _, t in self.pairs})
        return output

    def _zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        for method_optimizer in self.method_optimizers:
            method_optimizer.zero_grad(set_to_none=True)
        self.masked.zero_grad()

    def _observe(self, loss_name: str) -> None:
        grads = self.masked.unit_grads()
        unscaled = self.precision.unscaled(grads)
        if grads is not None and unscaled is None:  # fp16 gradients that overflowed: the scaler skips this step
            return
        self.state.unit_grads, self.state.loss_name = unscaled, loss_name
        self.method.observe(self.state)

    def step(self, step: int, batch) -> StepLosses:
        """One training step; returns its losses."""
        batch, state = _to(batch, self.device), self.state
        inputs = self.task.model_inputs(batch)
        self._zero_grad()
        state.step, state.masks, state.scheduled_density = step, self.masked.masks, self.schedule.density(step)
        state.batch = inputs
        self.masked.set_values(self.method.gates(state))
        teacher_out = self._teacher(step, inputs)
        with self.precision.autocast():
            student_out = self.switch.model(**inputs, output_hidden_states=self.recipe.hidden_loss)
        student_out = self.precision.outputs(student_out)
        # The method's loss is asked for once the logit loss is checked; it is checked and backpropagated after the
        # observation, with the hidden-state loss.
        losses = StepLosses(self.objective.logit(student_out, teacher_out, batch, step), self.method.loss(state))
        observe = self._observe if step <= self.last_observed else None
        separated_backward(losses.logit, lambda: self.objective.rest(losses, student_out, teacher_out,
                                                                     inputs["attention_mask"], step),
                           self.objective.follow(losses), observe, self.method.gradient_source, self.precision.scale)
        self.pruning.after_backward(state)
        # the method's optimizers touch none of the main optimizer's parameters: stepping them before the learning-rate
        # schedule's step is the order of before, in effect
        self.precision.step([self.optimizer, *self.method_optimizers], self.switch.clip_params, self.recipe.clip)
        self.scheduler.step()
        if self.switch.after_step(step):
            state.model = self.switch.model
        return losses

    def record(self, step: int, losses: StepLosses) -> dict[str, float]:
        """The history entry of ``step``."""
        record = {"step": step, "logit_loss": losses.logit.item(),
                  "hidden_loss": losses.hidden.item() if losses.hidden is not None else 0.0,
                  "density": self.masked.masks.density(self.space)}
        if losses.method is not None:
            record["method_loss"] = losses.method.item()
        return record

    def finish(self, student) -> None:
        """Back to the dense student, the method's unit scales folded in, gates removed, checked finite."""
        state = self.state
        if self.switch.finish():
            state.model = self.switch.model
        state.masks = self.masked.masks
        scales = self.method.unit_scales(state)
        self.masked.set_values(None)
        if scales is not None:
            fold_unit_scales(student, self.space, self.masked.masks, scales)
        student.eval()
        check_finite_weights(student, "training", self.objective.lr_field)


def distill(method: Method, task, teacher, student, data, recipe: Recipe, target_density: float, seed: int,
            progress: bool = True, teacher_outputs: TeacherOutputs | None = None, on_step=None,
            compact_phase: bool = True, cost_model=None, fixed_masks: UnitMasks | None = None) -> DistillResult:
    """Distil ``teacher`` into ``student`` while ``method`` prunes it along the shared cubic schedule.
    ``on_step(step, state)``, when given, is called after every optimizer step (learning curves evaluate there;
    ``state.model`` is the model being trained). With ``compact_phase`` (the default) a method for which
    ``compacts_after_pruning`` holds is trained in compact form after the last pruning step (``CompactPhase``: the
    same training up to float rounding, at the compact model's cost); the returned student is dense either way.
    ``cost_model`` (``grain_bench.costs``; default the parameter cost) is what ``target_density`` and the scheduled
    budgets are fractions of: a measured latency model prunes to a speed (``TrainState.cost_model``).
    ``fixed_masks``: the student is already pruned (a calibration-only run retrained, ``grain_bench.calibrate``):
    those masks apply from the first step and never change (pass a method with ``prunes = False``)."""
    if method.calibrates:
        raise GrainBenchError(f"method {method.name!r} is calibration-only: run it with grain_bench.calibrate, not the "
                              f"trainer")
    start = time.time()
    run = _Run(method, task, teacher, student, data, recipe, target_density, seed, teacher_outputs, compact_phase,
               cost_model, fixed_masks)
    history = []
    bar = tqdm(batches(data.train.features, data.collate, recipe.batch_size, seed, run.total), total=run.total,
               desc=f"{method.name} {task.name} @{target_density:g}", disable=not progress)
    with run.precision.matmul():
        for step, batch in enumerate(bar, start=1):
            losses = run.step(step, batch)
            if on_step is not None:
                on_step(step, run.state)
            if step % 10 == 0 or step == run.total:
                history.append(run.record(step, losses))
                bar.set_postfix(kd=f"{history[-1]['logit_loss']:.3f}", hid=f"{history[-1]['hidden_loss']:.3f}",
                                dens=f"{history[-1]['density']:.3f}", refresh=False)
    run.finish(student)
    seconds = time.time() - start
    return DistillResult(student, run.masked, run.masked.masks, run.space, run.total, seconds, history,
                         phases={"distillation": seconds}, examples={"distillation": run.total * recipe.batch_size},
                         precision=run.precision.describe() if run.precision.mixed else {},
                         expected_at_freeze=run.state.expected_at_freeze)
