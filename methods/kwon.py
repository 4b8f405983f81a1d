"""Retraining-free pruning (Kwon et al., "A Fast Post-Training Pruning Framework for Transformers", NeurIPS 2022),
following its code (WoosukKwon/retraining-free-pruning: ``prune/fisher.py``, ``prune/search.py``,
``prune/rearrange.py``, ``prune/rescale.py``, ``main.py``). A calibration-only method (``grain_bench.calibrate``):
the fine-tuned teacher is pruned from 2,048 training examples in minutes, with no optimizer step.

1. **Fisher information** of the head and FFN-neuron masks: per calibration batch, the gradient of the task loss with
   respect to each head's mask (the sum of its value-unit gates' gradients: a head mask scales the head's context) and
   each neuron's; the importance is the sum of the squared batch gradients.
2. **Mask search** under the run's cost (the reference's ``search_mac``): heads and neurons ranked globally by
   importance; for every number of heads, the best heads and then as many of the best neurons as the budget leaves;
   the split with the largest total importance wins. The budget is a fraction of the dense model's cost under the
   run's cost model: the parameter cost for a density target, FLOPs (``--cost-model flops``) for the reference's MAC
   constraint, a measured latency model for a speed target.
3. **Mask rearrangement** within each layer (``greedy_rearrange``): the same number of heads (neurons) kept, the pruned
   set chosen greedily to minimise the squared norm of the summed gradients of what is pruned (the block-diagonal
   Fisher approximation).
4. **Mask tuning** (``rescale_mask``): layer by layer, one scale per kept head and neuron by least squares, so the
   pruned layer's output matches that of the model under the masks searched at the square root of the budget, on the
   calibration tokens; the scales are folded into the weights (``unit_scales``).

Where this departs from the reference, and why (``docs/kwon.md`` has the checks):

- the calibration sample is drawn without replacement (the reference's ``np.random.choice`` draws with replacement:
  repeated examples only re-weight the Fisher sums);
- the damped least-squares problem the reference hands to cupy's LSMR (``damp=1`` on the normal equations) is solved in
  closed form in float64, and "converged" (LSMR's ``istop < 3``) becomes "finite"; a system of one unknown is solved as
  the reference does, without the reference's failure there (its ``solution`` is then undefined);
- budgets are the suite's cost models (the reference's MAC count leaves out embeddings, LayerNorms and softmax; the
  suite's FLOPs cost counts them, so the same ratio is a slightly looser constraint on the prunable part);
- the tuned scales are kept only when they do not raise the task loss on the calibration sample
  (``check_tuning``; the reference keeps them always): the fit's target is the model under the masks searched at the
  budget's square root, not the task, and on a weak teacher the fitted scales can raise the loss they should lower;
- heads are masked through the suite's value-unit gates rather than transformers' ``head_mask`` argument (the same
  function: both scale a head's context).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from grain_bench.hookspecs import hookimpl
from grain_bench.method import Method, MethodOptions
from grain_bench.options import option

if TYPE_CHECKING:  # types only: listing methods must not import torch
    import torch

    from grain_bench.masks import MaskSpace, UnitMasks

#: scales outside this range stop the tuning (the reference's guard against a degenerate least-squares fit)
MAX_SCALE = 10.0


@dataclass(frozen=True)
class KwonOptions(MethodOptions):
    """Options of ``kwon``: which of the reference's steps run, and retraining after them."""

    rearrange: bool = True  # step 3, mask rearrangement
    tune: bool = True  # step 4, mask tuning by least squares
    #: keep the tuned scales only when they do not raise the task loss on the calibration sample (not in the
    #: reference, which keeps them whatever they do)
    check_tuning: bool = True
    retrain_steps: int = option(0, ge=0, hint="distillation steps after pruning, masks fixed; 0: none (the paper)")


class Kwon(Method):
    """Fisher-information masks of heads and neurons, searched under a cost, rearranged and tuned; no training."""

    options: KwonOptions

    name = "kwon"
    description = ("retraining-free (Kwon et al. 2022): Fisher of head and neuron masks on a calibration sample, "
                   "search under the cost, rearrangement, least-squares mask tuning")
    Options = KwonOptions
    calibrates = True
    prunes_to_cost = True

    def setup(self, state) -> None:
        """Start collecting the calibration batches' mask gradients."""
        self.head_grads: list[torch.Tensor] = []
        self.ffn_grads: list[torch.Tensor] = []
        self.teacher_masks: UnitMasks | None = None

    def observe(self, state) -> None:
        """One batch's gradients of the head masks (summed over each head's value units) and of the neurons."""
        grads = state.unit_grads
        self.head_grads.append(grads.vo.double().sum(-1))
        self.ffn_grads.append(grads.ffn.double())

    def retraining_steps(self) -> int:
        """``retrain_steps``."""
        return self.options.retrain_steps

    def masks_for(self, state, density: float):
        """Search within ``density`` of the run's cost, then rearrange within each layer; the masks searched at the
        budget's square root are kept as the tuning's teacher (the reference's ``get_pruning_schedule(target, 2)``)."""
        import torch

        from grain_bench.costs import parameter_cost

        space, cost = state.space, state.cost_model or parameter_cost(state.space)
        head_grads, ffn_grads = torch.stack(self.head_grads), torch.stack(self.ffn_grads)
        head_fisher, ffn_fisher = head_grads.pow(2).sum(0), ffn_grads.pow(2).sum(0)
        heads, neurons = search(head_fisher, ffn_fisher, space, cost, density)
        self.teacher_masks = whole_head_masks(*search(head_fisher, ffn_fisher, space, cost, density ** 0.5), space)
        if self.options.rearrange:
            heads, neurons = rearrange(heads, head_grads), rearrange(neurons, ffn_grads)
        self.info.update(heads_kept=int(heads.sum()), neurons_kept=int(neurons.sum()),
                         calibration_batches=len(self.head_grads), cost=cost.name)
        return whole_head_masks(heads, neurons, space)

    def unit_scales(self, state):
        """Mask tuning (``tune``): least-squares scales per kept head and neuron, layer by layer."""
        if not self.options.tune:
            return None
        assert self.teacher_masks is not None
        calibration = state.calibration
        scales, report = tune(calibration, state.space, self.teacher_masks, state.masks)
        self.info["tuning"] = report
        if not self.options.check_tuning:
            return scales
        before, after = calibration.loss(), calibration.loss(scales)
        report.update(loss_untuned=before, loss_tuned=after, kept=after <= before)
        return scales if after <= before else None


def whole_head_masks(heads: torch.Tensor, neurons: torch.Tensor, space: MaskSpace) -> UnitMasks:
    """Unit masks from (layers, heads) and (layers, ffn) keep-masks: every query and value unit of a kept head."""
    from grain_bench.masks import UnitMasks

    units = heads.bool()[..., None].expand(space.num_layers, space.num_heads, space.head_dim)
    return UnitMasks(units.clone(), units.clone(), neurons.bool().clone())


# ---- mask search ----------------------------------------------------------------------------------------------------
def search(head_importance: torch.Tensor, ffn_importance: torch.Tensor, space: MaskSpace, cost,
           budget: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference's ``search_mac`` under any ``cost`` (``grain_bench.costs.CostModel``): (layers, heads) and
    (layers, ffn) bool masks of the best heads and neurons whose cost fits ``budget`` of the dense model's; for each
    number of heads (1 to all), the top heads and then the most top neurons that fit; the largest total importance
    wins (the first such split on ties)."""
    import torch

    head_values, head_order = head_importance.reshape(-1).sort(descending=True)
    ffn_values, ffn_order = ffn_importance.reshape(-1).sort(descending=True)
    head_prefix = torch.cat([torch.zeros(1, dtype=torch.float64), head_values.double().cumsum(0)])
    ffn_prefix = torch.cat([torch.zeros(1, dtype=torch.float64), ffn_values.double().cumsum(0)])
    limit = budget * cost.dense_cost(space) * (1 + 1e-12)
    ffn_costs = _prefix_costs(cost, ffn_order // space.ffn_dim, space.num_layers, "ffn_units", "ffn_blocks")
    head_costs = _prefix_costs(cost, head_order // space.num_heads, space.num_layers, "heads", "attention_blocks",
                               per_unit=_head_cost(cost, space))
    best, choice = 0.0, (0, 0)
    for num_heads in range(1, head_order.numel() + 1):
        room = limit - cost.coefficients.get("constant", 0.0) - float(head_costs[num_heads])
        num_neurons = int(torch.searchsorted(ffn_costs, torch.tensor([room], dtype=torch.float64), side="right")) - 1
        if num_neurons < 0:
            continue
        total = float(head_prefix[num_heads] + ffn_prefix[num_neurons])
        if total > best:
            best, choice = total, (num_heads, num_neurons)
    heads = torch.zeros(head_order.numel(), dtype=torch.bool)
    neurons = torch.zeros(ffn_order.numel(), dtype=torch.bool)
    heads[head_order[:choice[0]]] = True
    neurons[ffn_order[:choice[1]]] = True
    return heads.reshape(space.num_layers, space.num_heads), neurons.reshape(space.num_layers, space.ffn_dim)


def _head_cost(cost, space: MaskSpace) -> float:
    """What one whole head costs beyond its layer's block: its query and value units, its head and query-head
    terms."""
    c = cost.coefficients
    return (space.head_dim * (c.get("qk_units", 0.0) + c.get("vo_units", 0.0)) + c.get("heads", 0.0)
            + c.get("query_heads", 0.0))


def _prefix_costs(cost, layer_of: torch.Tensor, num_layers: int, unit: str, block: str,
                  per_unit: float | None = None) -> torch.Tensor:
    """The cost of every prefix (0 to all) of a ranked list of units, ``layer_of`` giving each one's layer: the
    units' cost plus, for each layer the prefix reaches, the block's fixed cost (non-decreasing)."""
    import torch

    c = cost.coefficients
    per_unit = c.get(unit, 0.0) if per_unit is None else per_unit
    first = torch.zeros(layer_of.numel(), dtype=torch.float64)
    seen: set[int] = set()
    for position, layer in enumerate(layer_of.tolist()):
        if layer not in seen:
            seen.add(layer)
            first[position] = 1.0
        if len(seen) == num_layers:
            break
    units = torch.arange(1, layer_of.numel() + 1, dtype=torch.float64) * per_unit + first.cumsum(0) * c.get(block, 0.0)
    return torch.cat([torch.zeros(1, dtype=torch.float64), units])


# ---- mask rearrangement ---------------------------------------------------------------------------------------------
def rearrange(mask: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """The reference's ``rearrange_mask``: per layer, ``greedy_rearrange`` of its row of ``mask`` (layers, units)
    with the batch gradients ``grads`` (batches, layers, units)."""
    import torch

    return torch.stack([greedy_rearrange(mask[layer], grads[:, layer, :]) for layer in range(mask.shape[0])])


def greedy_rearrange(mask: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """One layer: keep as many units as ``mask`` does; start from the lowest-Fisher units as the pruned set, then for
    each further unit in ascending Fisher order, add it and drop the one whose removal leaves the smallest squared norm
    of the pruned set's summed gradient (``grads``: (batches, units))."""
    import torch

    kept = int(mask.sum())
    pruned = mask.numel() - kept
    if kept == 0 or pruned == 0:
        return mask.clone()
    vectors = grads.t().double()  # (units, batches)
    order = vectors.pow(2).sum(1).sort(descending=False).indices.tolist()
    chosen = order[:pruned]
    for index in order[pruned:]:
        chosen.append(index)
        group = vectors[chosen]
        lengths = (group.sum(0) - group).pow(2).sum(1)
        del chosen[int(lengths.argmin())]
    result = torch.ones_like(mask, dtype=torch.bool)
    result[chosen] = False
    return result


# ---- mask tuning ----------------------------------------------------------------------------------------------------
def damped_solve(ata: torch.Tensor, atb: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """The reference's ``lsmr_cupy_solver``: scales around 1 from the normal equations (``ata``, ``atb``), damped
    towards 1 (``x - 1`` minimises ``|ata (x - 1) - (atb - ata 1)|^2 + |x - 1|^2``, what LSMR with ``damp=1``
    converges to), solved in closed form in float64; one unknown is divided out undamped, as there. Also returns
    whether the solution is finite."""
    import torch

    ata, atb = ata.double(), atb.double()
    rhs = atb - ata.sum(1)
    if rhs.numel() == 1:
        x = rhs / ata[0, 0]
    else:
        x = torch.linalg.solve(ata.t() @ ata + torch.eye(ata.shape[0], dtype=torch.float64), ata.t() @ rhs)
    x = x + 1
    return x, bool(torch.isfinite(x).all())


def tune(calibration, space: MaskSpace, teacher_masks: UnitMasks, masks: UnitMasks):
    """The reference's ``rescale_mask``: layer by layer, the kept heads' scales (from layer 1 on, as there) and then
    the kept neurons', each by ``damped_solve`` of the least-squares fit of the pruned layer's output stage to that
    of the model under ``teacher_masks``, on the calibration tokens (the last layer's FFN on the first token only for
    tasks that score it). A failed or out-of-range fit (a scale beyond +-10) stops the tuning there, as in the
    reference. Returns the scales (``UnitTensors``) and a report of what was tuned.

    Each path (the teacher masks', the student's) keeps every batch's input to the layer being fitted, so each layer
    runs once per batch for the teacher and three times for the student (attention fit, FFN fit, output), rather than
    every layer up to it twice per fit as the reference's full forward passes do: the same fits, linear in depth."""
    import torch

    from grain_bench.masks import UnitTensors

    masked = calibration.masked
    head_scale = torch.ones(space.num_layers, space.num_heads, dtype=torch.float64)
    ffn_scale = torch.ones(space.num_layers, space.ffn_dim, dtype=torch.float64)
    heads_kept = masks.vo.any(-1)
    attention_layers: list[int] = []
    ffn_layers: list[int] = []
    report: dict[str, object] = {"attention_layers": attention_layers, "ffn_layers": ffn_layers, "stopped": None}

    def student_values() -> UnitTensors:
        vo = head_scale[..., None].expand(-1, -1, space.head_dim)
        return UnitTensors(torch.ones(space.shapes()["qk"]), vo.float().clone(), ffn_scale.float())

    def on(which: str) -> None:
        masked.apply(teacher_masks if which == "teacher" else masks)
        masked.set_values(None if which == "teacher" else student_values())

    layers = _LayerFits(calibration, space, on)
    for layer in range(space.num_layers):
        layers.start(layer)
        kept = heads_kept[layer].nonzero().flatten()
        if kept.numel() and layer != 0:
            x, ok = damped_solve(*layers.attention_system(kept))
            if not ok or x[:-1].abs().max() > MAX_SCALE:
                report["stopped"] = f"layer {layer} attention"
                break
            head_scale[layer, kept] *= x[:-1]
            attention_layers.append(layer)
        neurons = masks.ffn[layer].nonzero().flatten()
        if neurons.numel():
            x, ok = damped_solve(*layers.ffn_system(neurons))
            if not ok or x.abs().max() > MAX_SCALE:
                report["stopped"] = f"layer {layer} ffn"
                break
            ffn_scale[layer, neurons] *= x
            ffn_layers.append(layer)
        layers.advance()
    masked.set_values(None)
    masked.apply(masks)
    return student_values(), report


def _tokens(batch, first_token: bool = False) -> torch.Tensor:
    """(batch, seq) bool of the tokens a fit uses: the non-pad ones, or each sequence's first."""
    import torch

    keep = batch["attention_mask"].bool()
    if first_token:
        keep = torch.zeros_like(keep)
        keep[:, 0] = True
    return keep


class _LayerFits:
    """The least-squares systems of one layer at a time (``start(layer)``, then the fits, then ``advance()``), over
    every calibration batch, from each path's cached input to the layer. ``on(path)`` sets the gates of the teacher
    path (``"teacher"``) or the student's with its scales so far."""

    def __init__(self, calibration, space: MaskSpace, on):
        self.calibration, self.space, self.on = calibration, space, on
        n = len(calibration.batches)
        self.inputs: dict[str, list[torch.Tensor | None]] = {"teacher": [None] * n, "student": [None] * n}

    def start(self, layer: int) -> None:
        """Capture the teacher path's layer ``layer`` on every batch: its attention and FFN stage outputs (the fits'
        targets, kept in float32 as the model computes them) and its output, the next layer's input."""
        import torch

        from grain_bench.calibrate import LayerCapture

        self.capture = LayerCapture(self.calibration.masked.model, layer)
        self.w_o, self.w_2 = self.capture.w_o, self.capture.w_2
        self.first_token = self.calibration.first_token_only and layer == self.space.num_layers - 1
        self.on("teacher")
        self.attention_targets: list[torch.Tensor] = []
        self.ffn_targets: list[torch.Tensor] = []
        for index, batch in enumerate(self.calibration.batches):
            hidden = self.inputs["teacher"][index]
            found = self.capture.capture(self.calibration.inputs(batch), _tokens(batch), hidden=hidden,
                                         ffn_keep=_tokens(batch, self.first_token))
            assert found.attention is not None and found.ffn is not None
            self.attention_targets.append(found.attention.output + found.attention.residual)
            # the reference captures W_2's input before its neuron mask applies and projects all of it
            self.ffn_targets.append(torch.nn.functional.linear(found.ffn.activations, self.w_2.weight.detach())
                                    + self.w_2.bias.detach() + found.ffn.residual)
            self.inputs["teacher"][index] = found.output

    def student(self, stage: str):
        """The student path's ``stage`` of the current layer on every batch, with its gates and scales now."""
        self.on("student")
        for index, batch in enumerate(self.calibration.batches):
            keep = _tokens(batch, self.first_token and stage == "ffn")
            yield index, self.capture.capture(self.calibration.inputs(batch), keep, (stage,),
                                              hidden=self.inputs["student"][index])

    def advance(self) -> None:
        """The student's output of the current layer (its scales fitted) becomes the next layer's input."""
        for index, found in self.student("output"):
            self.inputs["student"][index] = found.output

    def attention_system(self, kept: torch.Tensor):
        """The normal equations of the layer's head scales (plus an intercept column, as in the reference): each
        kept head's projected context against the teacher's attention stage output minus the bias and the student's
        residual."""
        import torch

        space, k = self.space, kept.numel()
        weight = self.w_o.weight.detach().double().reshape(space.hidden, space.num_heads, space.head_dim)[:, kept]
        bias = self.w_o.bias.detach().double()
        ata = torch.zeros(k + 1, k + 1, dtype=torch.float64)
        atb = torch.zeros(k + 1, dtype=torch.float64)
        for index, found in self.student("attention"):
            student = found.attention
            context = student.context.double().reshape(-1, space.num_heads, space.head_dim)[:, kept]
            per_head = torch.einsum("nhd,ohd->hno", context, weight).reshape(k, -1)  # (heads, tokens * hidden)
            columns = torch.cat([per_head, torch.ones(1, per_head.shape[1], dtype=torch.float64)])
            target = (self.attention_targets[index].double() - bias - student.residual.double()).reshape(-1)
            ata += columns @ columns.t()
            atb += columns @ target
        return ata, atb

    def ffn_system(self, neurons: torch.Tensor):
        """The normal equations of the layer's neuron scales: each kept neuron's activation times its ``W_2`` column
        against the teacher's FFN stage output (its layer's whole FFN on the teacher's activations) minus the bias
        and the student's residual."""
        import torch

        columns = self.w_2.weight.detach()[:, neurons].t().double()  # (k, hidden)
        gram = columns @ columns.t()
        k = neurons.numel()
        bias = self.w_2.bias.detach().double()
        ata = torch.zeros(k, k, dtype=torch.float64)
        atb = torch.zeros(k, dtype=torch.float64)
        for index, found in self.student("ffn"):
            student = found.ffn
            rest = self.ffn_targets[index].double() - bias - student.residual.double()  # (tokens, hidden)
            activations = student.activations[:, neurons]  # (tokens, k)
            ata += gram * (activations.t() @ activations).double()
            atb += (activations.double() * (rest @ columns.t())).sum(0)
        return ata, atb


@hookimpl
def register_methods(register):
    """Register Kwon et al.'s retraining-free pruning."""
    register(Kwon, aliases=("retraining-free",))
