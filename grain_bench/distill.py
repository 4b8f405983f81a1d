"""The shared distillation trainer: the only training loop, identical for every method.

Per step (the order of ``distiller.py`` in airaria/GRAIN, the reference code of arXiv 2212.07634): zero grads ->
forward teacher and student -> backward the logit-KD loss (retain graph) -> ``method.observe`` (gradients of the logit
loss only: gradient separation) -> backward the hidden-state MSE (and a method's own loss) -> on pruning steps
``method.masks_for(state, scheduled density)`` and apply -> clip -> optimizer step. After the last pruning step a
method whose masks are final trains in compact form (``grain_bench.compact_training``): the same steps on the compact
student, the same training up to float rounding.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from grain_bench.compact_training import CompactPhase
from grain_bench.compaction import can_compact
from grain_bench.errors import GrainBenchError, TrainingDiverged
from grain_bench.losses import hidden_mse
from grain_bench.masked import MaskedModel, fold_unit_scales
from grain_bench.masks import MaskSpace, UnitMasks
from grain_bench.method import Method, TrainState
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
    model.train()
    bar = tqdm(batches(data.train.features, data.collate, recipe.teacher_batch_size, seed, total), total=total,
               desc=f"teacher {task.name}", disable=not progress)
    for step, batch in enumerate(bar, start=1):
        batch = _to(batch, device)
        loss = task.hard_loss(model(**task.model_inputs(batch)), batch)
        check_finite_loss({"loss": loss}, step, "teacher fine-tuning", f"teacher_lr (now {recipe.teacher_lr:g})")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.clip)
        optimizer.step()
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
    observes_late = type(method).observe is not Method.observe and method.observes_after_pruning
    return (method.prunes and not method.owns_density and not observes_late
            and type(method).gates is Method.gates and type(method).loss is Method.loss)


def distill(method: Method, task, teacher, student, data, recipe: Recipe, target_density: float, seed: int,
            progress: bool = True, teacher_outputs: TeacherOutputs | None = None,
            on_step=None, compact_phase: bool = True) -> DistillResult:
    """Distil ``teacher`` into ``student`` while ``method`` prunes it along the shared cubic schedule.
    ``on_step(step, state)``, when given, is called after every optimizer step (learning curves evaluate there;
    ``state.model`` is the model being trained). With ``compact_phase`` (the default) a method for which
    ``compacts_after_pruning`` holds is trained in compact form after the last pruning step (``CompactPhase``: the
    same training up to float rounding, at the compact model's cost); the returned student is dense either way."""
    start = time.time()
    device = next(student.parameters()).device
    space = MaskSpace.from_config(student.config)
    masked = MaskedModel(student, space)
    total = steps_for(recipe.max_steps, recipe.epochs, len(data.train.features), recipe.batch_size)
    schedule = CubicSchedule(total, target_density, recipe.prune_start, recipe.prune_end)

    pairs = layer_pairs(space.num_layers, recipe.hidden_layer_step) if recipe.hidden_loss else []
    projections = torch.nn.ModuleList()
    for _ in pairs:
        linear = torch.nn.Linear(space.hidden, space.hidden)
        with torch.no_grad():
            linear.weight.copy_(torch.eye(space.hidden))
            linear.bias.zero_()
        projections.append(linear)
    projections.to(device)
    params = list(student.named_parameters()) + [(f"proj.{n}", p) for n, p in projections.named_parameters()]
    optimizer, scheduler = make_optimizer(params, recipe.lr, recipe, total)
    clip_params = [p for _, p in params]

    lr_field = f"lr (now {recipe.lr:g})"
    teacher.eval()
    student.train()
    state = TrainState(step=0, total_steps=total, model=student, space=space, masks=masked.masks, seed=seed,
                       target_density=target_density, prune_start_step=schedule.start,
                       prune_end_step=schedule.end)
    method.setup(state)
    method_optimizers = [adamw(list(group.params), lr=group.lr, weight_decay=group.weight_decay,
                               maximize=group.maximize) for group in method.parameters(state)]
    freeze = method.freeze_step(state) if method.owns_density and method.prunes else None
    # Two backward passes are only needed to show a method the logit loss's gradients alone (or, after the second,
    # the total's); for a method that overrides no ``observe`` one backward of the summed loss gives the optimizer the
    # same gradients at less cost.
    observes = type(method).observe is not Method.observe
    # A score-and-cut method's observations after the schedule's last pruning step feed no mask: from there on one
    # backward of the summed loss gives the same gradients (up to float rounding) for about two thirds of the cost.
    cut_by_schedule = method.prunes and not method.owns_density
    last_observed = schedule.end if cut_by_schedule and not method.observes_after_pruning else total
    compact_from = schedule.end if compact_phase and compacts_after_pruning(method) and can_compact(student) else 0
    phase: CompactPhase | None = None
    net = student  # the model trained: the masked student, then (after compact_from) the compact one
    history = []
    bar = tqdm(batches(data.train.features, data.collate, recipe.batch_size, seed, total), total=total,
               desc=f"{method.name} {task.name} @{target_density:g}", disable=not progress)
    for step, batch in enumerate(bar, start=1):
        batch = _to(batch, device)
        inputs = task.model_inputs(batch)
        optimizer.zero_grad(set_to_none=True)
        for method_optimizer in method_optimizers:
            method_optimizer.zero_grad(set_to_none=True)
        masked.zero_grad()
        state.step, state.masks, state.scheduled_density = step, masked.masks, schedule.density(step)
        masked.set_values(method.gates(state))
        teacher_out = teacher_outputs.get(step) if teacher_outputs is not None else None
        if teacher_out is None:
            with torch.no_grad():
                teacher_out = teacher(**inputs, output_hidden_states=recipe.hidden_loss)
            if teacher_outputs is not None:
                teacher_outputs.put(step, teacher_out, {t for _, t in pairs})
        student_out = net(**inputs, output_hidden_states=recipe.hidden_loss)
        logit_loss = task.kd_loss(student_out, teacher_out, batch, recipe.temperature)
        if recipe.hard_label_weight:
            logit_loss = logit_loss + recipe.hard_label_weight * task.hard_loss(student_out, batch)
        check_finite_loss({"logit loss": logit_loss}, step, "training", lr_field)
        method_loss = method.loss(state)  # backpropagated after observe, with the hidden loss
        observing = observes and step <= last_observed
        if observing:  # gradient separation: the method sees dL/dgate of the logit loss alone
            logit_loss.backward(retain_graph=recipe.hidden_loss or method_loss is not None)
            if method.gradient_source == "logit":
                state.unit_grads, state.loss_name = masked.unit_grads(), "logit"
                method.observe(state)
        hidden_loss = torch.zeros((), device=device)
        rest = [] if observing else [logit_loss]  # nothing observed this step: one backward of the sum
        if recipe.hidden_loss:
            hidden_loss = recipe.hidden_weight * hidden_mse(student_out.hidden_states, teacher_out.hidden_states,
                                                            projections, pairs, inputs["attention_mask"])
            check_finite_loss({"hidden loss": hidden_loss}, step, "training", lr_field)
            rest.append(hidden_loss)
        if method_loss is not None:
            check_finite_loss({f"{method.name} loss": method_loss}, step, "training", lr_field)
            rest.append(method_loss)
        if rest:
            second = rest[0]
            for term in rest[1:]:
                second = second + term
            second.backward()
        if observing and method.gradient_source == "total":
            state.unit_grads, state.loss_name = masked.unit_grads(), "total"
            method.observe(state)
        if cut_by_schedule and schedule.is_pruning_step(step):
            _apply(method, masked, method.masks_for(state, state.scheduled_density), step)
        elif freeze is not None and not state.frozen and step >= freeze:
            final = method.masks_for(state, target_density)
            _check_reaches(method, final, space, target_density)
            _apply(method, masked, final, step, may_grow=True)
            state.frozen, state.masks = True, masked.masks
        torch.nn.utils.clip_grad_norm_(clip_params, recipe.clip)
        optimizer.step()
        scheduler.step()
        for method_optimizer in method_optimizers:
            method_optimizer.step()
        if step == compact_from and step < total and masked.masks.density(space) < 1.0:
            phase = CompactPhase(student, masked.masks, space, optimizer)
            net = state.model = phase.model
            clip_params = [p for p in phase.model.parameters() if p.requires_grad] + list(projections.parameters())
        if on_step is not None:
            on_step(step, state)
        if step % 10 == 0 or step == total:
            record = {"step": step, "logit_loss": logit_loss.item(), "hidden_loss": hidden_loss.item(),
                      "density": masked.masks.density(space)}
            if method_loss is not None:
                record["method_loss"] = method_loss.item()
            history.append(record)
            bar.set_postfix(kd=f"{record['logit_loss']:.3f}", hid=f"{record['hidden_loss']:.3f}",
                            dens=f"{record['density']:.3f}", refresh=False)
    if phase is not None:
        state.model = phase.finish()
    state.masks = masked.masks
    scales = method.unit_scales(state)
    masked.set_values(None)
    if scales is not None:
        fold_unit_scales(student, space, masked.masks, scales)
    student.eval()
    check_finite_weights(student, "training", lr_field)
    return DistillResult(student, masked, masked.masks, space, total, time.time() - start, history)
