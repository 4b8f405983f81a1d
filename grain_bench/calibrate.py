"""Calibration-only runs: prune the fine-tuned teacher itself from a sample of the training split, with no optimizer
step (Kwon et al. 2022, "A Fast Post-Training Pruning Framework for Transformers"), and optionally distil the pruned
model afterwards with the shared trainer.

The same task adapters, scoring, compaction and measurement as every other run: ``calibrate`` returns a
``DistillResult`` like ``distill`` does, with ``steps`` 0 and the phase ``calibration`` in its ``phases``. What a
calibration-only method sees is in ``grain_bench.method`` (``calibrates``).

The layer captures (``LayerCapture``) are what mask tuning needs: for one encoder layer, the attention context and the
residual entering its output projection, and the FFN activations and the residual entering ``W_2``, over the non-pad
tokens of a batch, with the forward stopped right after the capture.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from grain_bench.arch import encoder_layers, get_arch, resolve
from grain_bench.distill import DistillResult, check_finite_loss, check_finite_weights, distill
from grain_bench.errors import GrainBenchError
from grain_bench.masked import MaskedModel, fold_unit_scales
from grain_bench.masks import MaskSpace, UnitMasks
from grain_bench.method import Method, TrainState
from grain_bench.types import Recipe


@dataclass
class Calibration:
    """What a calibration-only method's ``unit_scales`` may use: the calibration batches (on the model's device), the
    fine-tuned teacher (untouched: the student is a copy), the task, and the masked student."""

    task: Any
    teacher: Any
    batches: list[dict[str, Any]]
    masked: MaskedModel
    #: the task scores the first token's representation only (sequence classification and regression): Kwon's
    #: ``classification_task``, under which the last layer's FFN is fitted on that token alone
    first_token_only: bool = False
    info: dict[str, Any] = field(default_factory=dict)

    def inputs(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The model inputs of ``batch``."""
        return self.task.model_inputs(batch)

    def loss(self, values=None) -> float:
        """The task loss over the calibration batches (per example) of the masked student, with its gates times
        ``values`` (``UnitTensors`` of unit scales; None: the 0/1 masks alone)."""
        self.masked.set_values(values)
        try:
            with torch.no_grad():
                total = sum(self.task.hard_loss(self.masked.model(**self.inputs(batch)), batch).item()
                            * len(batch["labels"]) for batch in self.batches)
        finally:
            self.masked.set_values(None)
        return total / sum(len(batch["labels"]) for batch in self.batches)


def calibration_sample(n_examples: int, size: int, seed: int) -> list[int]:
    """Indices of the calibration sample: ``size`` distinct examples of ``n_examples`` (all when there are fewer),
    drawn with a generator seeded by ``seed`` (every method and run of a seed sees the same sample)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(n_examples, generator=generator)[:min(size, n_examples)].tolist()


def calibration_batches(data, recipe: Recipe, seed: int, device) -> list[dict[str, Any]]:
    """The calibration sample of the training split in batches of ``recipe.calibration_batch_size``, collated and on
    ``device`` (in sample order: the reference's loader does not shuffle)."""
    features = data.train.features
    indices = calibration_sample(len(features), recipe.calibration_examples, seed)
    size = recipe.calibration_batch_size
    return [{k: v.to(device) if hasattr(v, "to") else v
             for k, v in data.collate([features[i] for i in indices[start:start + size]]).items()}
            for start in range(0, len(indices), size)]


def calibration_loss(method: Method, task, outputs, batch) -> torch.Tensor:
    """The loss a calibration-only method is observed after (``Method.calibration_loss``)."""
    if method.calibration_loss != "task":
        raise GrainBenchError(f"method {method.name!r}: calibration_loss {method.calibration_loss!r} is not known "
                              f"(calibration-only runs observe the task loss, 'task')")
    return task.hard_loss(outputs, batch)


def calibrate(method: Method, task, teacher, data, recipe: Recipe, target_density: float, seed: int,
              progress: bool = True, cost_model=None) -> DistillResult:
    """Prune a copy of ``teacher`` with calibration-only ``method``: observe each calibration batch's task-loss
    gradients (eval mode, weights frozen), take ``masks_for(state, target)`` once, fold the method's
    ``unit_scales`` (mask tuning) into the kept units; then, when ``method.retraining_steps()`` is above 0, distil
    the pruned student that many steps with its masks fixed. ``teacher`` is left as it was."""
    from tqdm.auto import tqdm

    start = time.perf_counter()
    student = copy.deepcopy(teacher)
    device = next(student.parameters()).device
    space = MaskSpace.from_config(student.config)
    masked = MaskedModel(student, space)
    batches = calibration_batches(data, recipe, seed, device)
    calibration = Calibration(task, teacher, batches, masked, first_token_only=task.head in ("sequence", "regression"))
    state = TrainState(step=0, total_steps=len(batches), model=student, space=space, masks=masked.masks, seed=seed,
                       target_density=target_density, scheduled_density=target_density, cost_model=cost_model,
                       calibration=calibration)
    method.setup(state)
    student.eval()
    trainable = [p for p in student.parameters() if p.requires_grad]
    for param in trainable:  # only the gates' gradients are needed
        param.requires_grad_(False)
    bar = tqdm(batches, desc=f"{method.name} {task.name} calibration", disable=not progress)
    losses = [_observe_batch(method, task, state, step, batch) for step, batch in enumerate(bar, start=1)]
    _prune_and_tune(method, state, target_density, cost_model)
    for param in trainable:
        param.requires_grad_(True)
    check_finite_weights(student, "calibration")
    seconds = time.perf_counter() - start
    history = [{"step": 0, "calibration_loss": sum(losses) / max(len(losses), 1),
                "density": masked.masks.density(space)}]
    result = DistillResult(student, masked, masked.masks, space, 0, seconds, history, phases={"calibration": seconds},
                           examples={"calibration": sum(len(b["labels"]) for b in batches)})
    steps = method.retraining_steps()
    if steps:
        return _retrain(result, method, task, teacher, data, recipe, steps, seed, progress)
    return result


def _prune_and_tune(method: Method, state: TrainState, target: float, cost_model) -> None:
    """The method's masks (checked within the target) applied, then its unit scales folded into the weights."""
    masked = state.calibration.masked
    masks = method.masks_for(state, target)
    _check_within(method, masks, state.space, target, cost_model)
    masked.apply(masks)
    state.masks = masked.masks
    scales = method.unit_scales(state)
    masked.set_values(None)
    if scales is not None:
        fold_unit_scales(state.model, state.space, masked.masks, scales)


def _observe_batch(method: Method, task, state: TrainState, step: int, batch) -> float:
    """One calibration batch: the loss's backward pass to the gates, then ``method.observe``; returns the loss."""
    masked = state.calibration.masked
    masked.zero_grad()
    inputs = state.batch = task.model_inputs(batch)
    loss = calibration_loss(method, task, state.model(**inputs), batch)
    check_finite_loss({"calibration loss": loss}, step, "calibration", "the teacher's lr")
    loss.backward()
    state.step, state.unit_grads, state.loss_name = step, masked.unit_grads(), "task"
    method.observe(state)
    return loss.item()


def _check_within(method: Method, masks, space: MaskSpace, target: float, cost_model) -> None:
    """A calibration-only method's masks must be ``UnitMasks`` within the target under the run's cost."""
    from grain_bench.costs import parameter_cost

    if not isinstance(masks, UnitMasks):
        raise GrainBenchError(f"method {method.name!r}: masks_for must return UnitMasks, got {type(masks).__name__}")
    cost = cost_model or parameter_cost(space)
    if cost.fraction(masks, space) > target + 1e-9:
        raise GrainBenchError(f"method {method.name!r} kept {cost.fraction(masks, space):.4f} of the dense cost "
                              f"({cost.name}), above the run's target {target:g}")


class _FixedMasks(Method):
    """The method a calibrated student is retrained under: its masks stay as calibration left them."""

    name = "retraining"
    prunes = False


def _retrain(result: DistillResult, method: Method, task, teacher, data, recipe: Recipe, steps: int, seed: int,
             progress: bool) -> DistillResult:
    """Distil the calibrated student ``steps`` steps with the shared trainer, its masks fixed (compact from the
    second step, as every method trains after its last pruning step)."""
    import dataclasses

    result.masked.remove()
    retrain_recipe = dataclasses.replace(recipe, max_steps=steps)
    density = result.masks.density(result.space)
    trained = distill(_FixedMasks(), task, teacher, result.model, data, retrain_recipe, density, seed, progress,
                      fixed_masks=result.masks)
    return dataclasses.replace(trained, seconds=result.seconds + trained.seconds,
                               history=result.history + trained.history,
                               phases={**result.phases, **trained.phases},
                               examples={**result.examples, **trained.examples})


# ---- layer captures for mask tuning ----------------------------------------------------------------------------------
class _Stop(Exception):
    """Raised by a capture hook to end a forward pass once the layer's tensors are captured."""


@dataclass
class AttentionCapture:
    """One layer's attention output stage over a batch's non-pad tokens: ``context`` (tokens, heads * head_dim)
    entering ``W_O`` before any gate, ``residual`` (tokens, hidden) added after it, ``output`` (tokens, hidden) the
    gated ``W_O`` projection with its bias."""

    context: torch.Tensor
    residual: torch.Tensor
    output: torch.Tensor


@dataclass
class FFNCapture:
    """One layer's FFN output stage over a batch's tokens: ``activations`` (tokens, ffn) entering ``W_2`` before any
    gate and ``residual`` (tokens, hidden) added after it."""

    activations: torch.Tensor
    residual: torch.Tensor


@dataclass
class LayerTensors:
    """What one pass of a layer captured (None: a stage not asked for): its attention and FFN output stages and its
    whole output (batch, seq, hidden), the next layer's input."""

    attention: AttentionCapture | None = None
    ffn: FFNCapture | None = None
    output: torch.Tensor | None = None


STAGES = ("attention", "ffn", "output")


class LayerCapture:
    """Captures one encoder layer's tensors during forward passes of ``model`` (hooks on the attention output, the
    FFN output and the layer; the forward stops after the last stage asked for), keeping the tokens a ``keep`` mask
    marks.

    Given ``hidden``, the layer's input for the batch (a previous pass's ``output``), the pass runs this layer alone
    on it: the encoder's layer list holds only this layer for the pass, so the layers before it are not run again.
    Layer by layer, that turns a sweep over all layers from quadratic in depth into linear, with the same arithmetic
    (the model still embeds the batch and builds its attention mask)."""

    def __init__(self, model, layer: int):
        arch = get_arch(model.config)
        self.model = model
        owner, _, self.list_name = arch.layers.rpartition(".")
        self.owner_module = resolve(model.base_model, owner) if owner else model.base_model
        self.block = encoder_layers(model, arch)[layer]
        self.attention_out = resolve(self.block, arch.attn_out.rpartition(".")[0])  # BertSelfOutput
        self.w_o = resolve(self.block, arch.attn_out)
        self.ffn_out = resolve(self.block, arch.ffn_out.rpartition(".")[0])  # BertOutput: (activations, residual)
        self.w_2 = resolve(self.block, arch.ffn_out)

    def capture(self, inputs: dict[str, Any], keep: torch.Tensor, stages=STAGES, hidden=None,
                ffn_keep: torch.Tensor | None = None) -> LayerTensors:
        """The ``stages`` (of ``STAGES``) of one pass, the FFN's tokens by ``ffn_keep`` when given (else ``keep``);
        the forward stops after the last stage asked for."""
        unknown = set(stages) - set(STAGES)
        if unknown or not stages:
            raise GrainBenchError(f"layer capture stages must be some of {STAGES}, got {tuple(stages)}")
        found = LayerTensors()
        handles = self._hooks(found, tuple(stages), keep, keep if ffn_keep is None else ffn_keep)
        self._run(inputs, handles, hidden)
        return found

    def _hooks(self, found: LayerTensors, stages: tuple[str, ...], keep: torch.Tensor, ffn_keep: torch.Tensor):
        """The hooks that fill ``found`` with ``stages``, the last of them ending the forward."""
        last = max(STAGES.index(stage) for stage in stages)
        parts: dict[str, torch.Tensor] = {}

        def attention_in(module, args, kwargs):
            parts["context"], parts["residual"] = (tensor[keep] for tensor in _two(args, kwargs))

        def attention_done(module, args, output):
            found.attention = AttentionCapture(parts["context"], parts["residual"], output[keep])
            if last == 0:
                raise _Stop

        def ffn_in(module, args, kwargs):
            found.ffn = FFNCapture(*(tensor[ffn_keep] for tensor in _two(args, kwargs)))
            if last == 1:
                raise _Stop

        def layer_done(module, args, output):
            found.output = output[0] if isinstance(output, tuple) else output
            raise _Stop

        handles = []
        if "attention" in stages:
            handles += [self.attention_out.register_forward_pre_hook(attention_in, with_kwargs=True),
                        self.w_o.register_forward_hook(attention_done)]
        if "ffn" in stages:
            handles.append(self.ffn_out.register_forward_pre_hook(ffn_in, with_kwargs=True))
        if "output" in stages:
            handles.append(self.block.register_forward_hook(layer_done))
        return handles

    def _run(self, inputs, handles, hidden) -> None:
        layers = getattr(self.owner_module, self.list_name)
        if hidden is not None:
            handles.append(self.block.register_forward_pre_hook(_replace_hidden(hidden), with_kwargs=True))
            setattr(self.owner_module, self.list_name, torch.nn.ModuleList([self.block]))
        try:
            with torch.no_grad():
                self.model(**inputs)
        except _Stop:
            pass
        else:
            raise GrainBenchError("the layer capture saw no forward pass through its layer")
        finally:
            setattr(self.owner_module, self.list_name, layers)
            for handle in handles:
                handle.remove()


def _replace_hidden(hidden: torch.Tensor):
    """A forward pre-hook that hands a layer ``hidden`` in place of the hidden states it was called with."""
    def hook(module, args, kwargs):
        if "hidden_states" in kwargs:
            return args, {**kwargs, "hidden_states": hidden}
        return (hidden, *args[1:]), kwargs
    return hook


def _two(args, kwargs):
    """The (hidden_states, input_tensor) arguments of a BERT output module, positional or by name."""
    values = list(args) + [kwargs[name] for name in ("hidden_states", "input_tensor") if name in kwargs]
    return values[0], values[1]
