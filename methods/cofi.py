"""CoFi (Xia, Zhong and Chen, ACL 2022): L0 gates at several granularities, trained with a Lagrangian density
constraint; here on grain-bench's units and under its shared distillation, with hidden-dimension pruning (``hidden``,
on by default as in the reference; ``-o cofi.hidden=false`` turns it off).

What follows the paper and its code (princeton-nlp/CoFiPruning, ``models/l0_module.py``):

- **Hard-concrete gates** (Louizos et al. 2018): temperature 2/3, stretched to (−0.1, 1.1) and clipped to [0, 1];
  log-alpha initialised N(mean, 0.01²) with mean 10 for the coarse gates (attention layer, head, FFN layer) and
  log((1 − p)/p) for FFN neurons (p = ``droprate_init`` = 0.5, so 0), clamped to [log 0.01, log 100] before each use.
- **Granularities mapped onto our units**: attention layer ``z_att[l]`` and head ``z_head[l, h]`` cover the head's
  query and value units; FFN layer ``z_ffn[l]`` and neuron ``z_int[l, k]`` cover FFN neurons. A unit's gate is the
  product of the gates that cover it. In the forward pass the gate values multiply the value units (the head's
  context, as CoFi scales the context by ``head_z``) and the FFN neurons; query units carry no real-valued gate
  (scaling Q and K would square it in the scores) and follow their head's final decision. CoFi scales the attention
  and FFN *outputs* by the layer gates, bias included; ours gate the inputs of W_O and W_2, so an emptied block keeps
  its output bias, as every method's does.
- **Hidden dimensions** (the reference's ``hidden_z``, log-alpha mean 10 like the coarse gates): one gate per
  dimension of the residual stream, shared by every layer, applied as the reference's modeling applies it (the
  embeddings' sum and the W_O and W_2 outputs scaled by it, each LayerNorm over the open dimensions, its output scaled
  again: ``grain_bench.masked``). The compact model's residual stream is the kept dimensions
  (``grain_bench.compaction``).
- **Expected density in closed form**, in our unit costs: Σ cost(unit) · Π P(gate > 0) over the covering gates, with
  P(z > 0) = 1 − Q(0) from the hard-concrete CDF; divided by the total unit cost. With hidden dimensions a unit's
  cost is taken at the expected kept width d' = Σ P(hidden gate > 0) (query 2d'+2, value and neuron 2d'+1), the
  reference's outer product of the hidden and unit scores plus the biases. It is the density every other method is
  held to.
- **Lagrangian** λ1(ŝ − t) + λ2(ŝ − t)², ŝ the expected density; λ1 and λ2 start at 0 and are trained by gradient
  ascent (their own AdamW, ``maximize``); gates and λ share the learning rate ``lr`` (0.01).
- **Before pruning, dense**: the L0 module starts after ``prepruning_steps`` dense steps (the reference's
  ``prepruning_finetune_steps``; by default at the schedule's first pruning step, prune_start × total steps); until
  then no gate is sampled, no Lagrangian is added, and the gates and multipliers do not move. (The reference also
  restarts the student's optimizer and learning-rate schedule there; the shared trainer does not, as for every
  method.)
- **Target warm-up**: t = 1 when the L0 module starts, then linear to the run's target over ``warmup_steps`` (the
  reference's ``lagrangian_warmup_epochs``, in steps) or ``warmup`` of training (CoFi's GLUE scripts warm up over 2
  of 20 epochs: 0.1), then the target. The gates learn until the freeze point, the schedule's last pruning step
  (``-r prune_end``): the reference's gates learn to the end of its pruning run, which is then fine-tuned apart; here
  the steps after the freeze are that fine-tuning.
- **Did the gates reach the target?** The expected density of the gates at the freeze step is stored in the record
  (``density.expected_at_freeze``, with ``gap_at_freeze``); tables flag a row more than 0.01 from its target ``not
  converged`` and leave it off the fronts (``grain_bench.quality``), since its masks are then the landing rule's
  below, not what the gates learned. ``method_info.constraint_curve`` has the way there: [step, expected density,
  target, λ1] every 10 steps of the L0 module and at the freeze.
- **Deterministic gates at the freeze point** (the schedule's last pruning step, as for every method): per layer, over
  its heads and over its neurons, the expected number of zero gates (rounded) is set to 0, the others to
  sigmoid(log-alpha / temperature × 0.8); each layer gate (attention layer, FFN layer) is a group of one, closed iff
  its P(z > 0) < 1/2, as in the reference. The final 0/1 masks are the units whose gate product is positive,
  adjusted to the run's target within one unit: whole heads and neurons are pruned in the order of their gate values
  (CoFi's zeros first) while they fit in the pruned budget, so the zeros with the largest soft values come back, or
  the lowest-valued kept units go; a head is kept or pruned whole, but for the last units when no FFN neuron is left
  to fill the budget. Heads and neurons are ranked on one scale, their gate value (the product of the gates that
  cover them), so whichever kind has the lower values goes first: with gates that never learned, heads (10 at
  initialisation, value 0.996) outrank every neuron (0, value 0.5) and the landing removes neurons first. The gate
  values of the kept units scale them while the distillation goes on, and are folded into the weights before
  compaction; a unit brought back keeps its soft value, which may be near 0 (the record's ``method_info.landing``
  says how many came back, their lowest scale and the share of the dense cost spent on ones under 0.05; a row where
  that share is over 0.01 is flagged ``not converged``). The hidden dimensions are fixed first, by their own
  deterministic gates (one group of ``hidden`` gates); only where they alone leave less than the target are closed
  dimensions reopened (largest soft value first) until the units at that width reach it; then heads and neurons land
  as above, at the kept width's unit costs.

Not done: CoFi's own layer-matching distillation, which is a recipe choice: every method here is distilled the same
way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from grain_bench.errors import UsageError
from grain_bench.hookspecs import hookimpl
from grain_bench.method import Method, MethodOptions, ParamGroup
from grain_bench.options import option

LIMIT_LOW, LIMIT_HIGH, EPSILON = -0.1, 1.1, 1e-6
LOG_ALPHA_RANGE = (math.log(1e-2), math.log(1e2))
MAGICAL_NUMBER = 0.8  # CoFi's (from Wang et al. 2020): the soft deterministic gate is sigmoid(log_alpha/β · 0.8)
COARSE_INIT = 10.0
#: the granularities with one gate per layer (attention layer, FFN layer); the others have one group of gates per layer
#: (``hidden``: one group for the whole model)
LAYER_GATES = ("att", "ffn")
#: every this many steps (and at the freeze) the record's ``method_info.constraint_curve`` gets [step, expected
#: density, target, lambda_1]: how the gates approached the target
CURVE_EVERY = 10


def _torch():
    import torch

    return torch


def prob_nonzero(log_alpha, temperature: float):
    """P(z > 0) of a stretched hard-concrete gate: 1 − Q(0) with Q its CDF (clamped to [ε, 1 − ε] as CoFi does)."""
    torch = _torch()
    x = (0 - LIMIT_LOW) / (LIMIT_HIGH - LIMIT_LOW)
    logits = math.log(x) - math.log(1 - x)
    return 1 - torch.sigmoid(logits * temperature - log_alpha).clamp(min=EPSILON, max=1 - EPSILON)


def sample_gates(log_alpha, temperature: float, generator=None):
    """One hard-concrete sample per gate: u ~ U(ε, 1 − ε), s = σ((log u − log(1 − u) + log α)/β), stretched and
    clipped to [0, 1]; differentiable in ``log_alpha``."""
    torch = _torch()
    u = torch.rand(log_alpha.shape, generator=generator, dtype=torch.float32).clamp(EPSILON, 1 - EPSILON)
    u = u.to(log_alpha.device)
    s = torch.sigmoid((torch.log(u) - torch.log(1 - u) + log_alpha) / temperature)
    return (s * (LIMIT_HIGH - LIMIT_LOW) + LIMIT_LOW).clamp(0.0, 1.0)


def deterministic_gates(log_alpha, temperature: float):
    """CoFi's inference gates over the last axis (one group per leading index): the expected number of zeros,
    rounded, is set to 0; the others get sigmoid(log α / β · 0.8). A scalar group is 0 or its soft value."""
    torch = _torch()
    with torch.no_grad():
        soft = torch.sigmoid(log_alpha / temperature * MAGICAL_NUMBER)
        groups = soft.reshape(-1, soft.shape[-1]) if soft.dim() else soft.reshape(1, 1)
        expected = prob_nonzero(log_alpha, temperature).reshape(groups.shape)
        out = groups.clone()
        for row in range(groups.shape[0]):
            zeros = round(groups.shape[1] - float(expected[row].sum()))
            if zeros > 0:
                out[row, torch.topk(groups[row], k=zeros, largest=False).indices] = 0.0
        return out.reshape(soft.shape)


def landing(head_value, neuron_value, heads_kept, masks, head_soft, soft, space, hidden_value=None) -> dict[str, Any]:
    """What forcing the deterministic gates onto the target did: the heads, neurons and hidden dimensions it brought
    back (gate 0, kept) and removed (gate > 0, pruned), the lowest scale a brought-back unit carries (its soft gate
    value; None when none came back), and the share of the dense cost spent on brought-back units under
    ``LANDING_SCALE_FLOOR``, which contribute next to nothing (``grain_bench.quality`` flags a row where that share is
    over its tolerance). Heads count whole, as the landing moves them (one trimmed unit-wise is counted whole: an upper
    bound); a hidden dimension costs its two parameters in every kept unit."""
    from grain_bench.quality import LANDING_SCALE_FLOOR

    neurons_kept = masks.ffn
    kinds = [(head_value, heads_kept, head_soft), (neuron_value, neurons_kept, soft.ffn)]
    costs = space.unit_costs_at(masks.hidden_kept(space))
    unit_cost = [space.head_dim * (costs["qk"] + costs["vo"]), costs["ffn"]]
    if hidden_value is not None:
        kinds.append((hidden_value, masks.hidden, soft.hidden))
        unit_cost.append(2 * sum(masks.counts()[kind] for kind in ("qk", "vo", "ffn")))
    back = [(value == 0) & kept for value, kept, _ in kinds]
    scales = [float(s[mask].min()) for (_, _, s), mask in zip(kinds, back) if bool(mask.any())]
    wasted = sum(cost * int((mask & (s < LANDING_SCALE_FLOOR)).sum())
                 for cost, (_, _, s), mask in zip(unit_cost, kinds, back))
    names = ("heads", "neurons", "hidden")
    return {"brought_back": {name: int(mask.sum()) for name, mask in zip(names, back)},
            "removed": {name: int(((value > 0) & ~kept).sum()) for name, (value, kept, _) in zip(names, kinds)},
            "lowest_scale": min(scales) if scales else None, "near_zero_share": wasted / space.total_cost()}


def land_hidden(hidden_value, hidden_soft, density: float, space):
    """The kept hidden dimensions: those whose deterministic gate is open, and where every unit at that width would
    still cost less than ``density`` of the dense total, as many closed ones as that takes (largest soft value
    first)."""
    torch = _torch()
    keep = hidden_value > 0
    counts = {kind: _numel(shape) for kind, shape in space.shapes().items()}

    def all_units(width: int) -> float:
        return sum(counts[kind] * cost for kind, cost in space.unit_costs_at(width).items())

    target = density * space.total_cost()
    closed = torch.argsort(torch.where(keep, torch.full_like(hidden_soft, -math.inf), hidden_soft),
                           descending=True, stable=True)
    kept = int(keep.sum())
    for index in closed[:space.hidden - kept].tolist():
        if kept and all_units(kept) >= target:
            break
        keep[index] = True
        kept += 1
    return keep


def _numel(shape) -> int:
    return math.prod(shape)


@dataclass(frozen=True)
class CofiOptions(MethodOptions):
    """Options of ``cofi``."""

    lr: float = option(0.01, gt=0)  # learning rate of the gate logits and of the Lagrange multipliers
    warmup: float = option(0.1, ge=0, le=1)  # fraction of training over which the target goes from 1 to the run's
    temperature: float = option(2 / 3, gt=0)  # hard-concrete temperature β
    droprate_init: float = option(0.5, gt=0, lt=1)  # initial drop probability of FFN neurons
    #: the target warm-up in steps (the reference's lagrangian_warmup_epochs, in steps); 0: ``warmup`` of training
    warmup_steps: int = option(0, ge=0)
    #: dense steps before the L0 module starts (the reference's prepruning_finetune_steps); -1: the schedule's first
    #: pruning step starts it, after prune_start_step - 1 dense steps
    prepruning_steps: int = option(-1, ge=-1)
    #: prune hidden dimensions too (the reference's hidden_z); runs stored before the option existed did not
    hidden: bool = option(True, absent=False)

    def validate(self) -> None:
        """The warm-up is a fraction or a number of steps, not both."""
        if self.warmup_steps and self.warmup != type(self)().warmup:
            raise UsageError(f"{self.owner}: give the target warm-up as warmup (a fraction of training) or as "
                             f"warmup_steps, not both (got warmup={self.warmup:g}, warmup_steps={self.warmup_steps})")


class Cofi(Method):
    """CoFi: L0 gates on attention layers, heads, FFN layers and neurons with a Lagrangian density constraint."""

    options: CofiOptions
    log_alpha: dict[str, Any]  # gate logits by granularity: att [L], head [L, H], ffn [L], int [L, F], hidden [d]
    lambdas: Any  # the two Lagrange multipliers (a tensor once set up)
    final_values: Any  # UnitTensors of the deterministic gate values, once the structure is fixed

    name = "cofi"
    description = ("CoFi: hard-concrete L0 gates (layer, head, FFN layer, neuron, hidden dimension), Lagrangian to the "
                   "target density")
    Options = CofiOptions
    owns_density = True

    def __init__(self, options=None, seed: int = 0):
        super().__init__(options, seed)
        self.log_alpha = {}
        self.lambdas = None
        self.generator = None
        self.final_values = None

    # ---- set-up ----------------------------------------------------------------------------------------------
    def setup(self, state) -> None:
        """Gate logits on the student's device, initialised as CoFi does (seeded, apart from the global RNG)."""
        torch = _torch()
        space = state.space
        if self.options.prepruning_steps >= 0 and self.start_step(state) > self.freeze_step(state):
            raise UsageError(f"{self.name}: prepruning_steps={self.options.prepruning_steps} leaves the gates no step "
                             f"to learn: the structure is fixed at step {self.freeze_step(state)} (the schedule's last "
                             f"pruning step, prune_end x {state.total_steps} steps); give fewer, or a later "
                             f"-r prune_end")
        device = next(state.model.parameters()).device
        self.generator = torch.Generator().manual_seed(20_000 + self.seed)
        neuron_mean = math.log(1 - self.options.droprate_init) - math.log(self.options.droprate_init)
        shapes = {"att": ((space.num_layers,), COARSE_INIT), "head": ((space.num_layers, space.num_heads), COARSE_INIT),
                  "ffn": ((space.num_layers,), COARSE_INIT), "int": ((space.num_layers, space.ffn_dim), neuron_mean)}
        if self.options.hidden:  # drawn last: the other gates start where they do without it
            shapes["hidden"] = ((space.hidden,), COARSE_INIT)
        for name, (shape, mean) in shapes.items():
            values = mean + 0.01 * torch.randn(shape, generator=self.generator)
            self.log_alpha[name] = values.to(device).requires_grad_(True)
        self.lambdas = torch.zeros(2, device=device, requires_grad=True)

    def parameters(self, state) -> list[ParamGroup]:
        """Gate logits (descent) and the Lagrange multipliers (ascent), both at ``lr``."""
        return [ParamGroup(list(self.log_alpha.values()), lr=self.options.lr, name="gates"),
                ParamGroup([self.lambdas], lr=self.options.lr, maximize=True, name="lagrangian")]

    # ---- training ----------------------------------------------------------------------------------------------
    def _clamp(self) -> None:
        with _torch().no_grad():
            for log_alpha in self.log_alpha.values():
                log_alpha.clamp_(*LOG_ALPHA_RANGE)

    def unit_gates(self, z: dict, space):
        """``UnitTensors`` of unit gate values from per-granularity gates ``z`` (products over the covering gates)."""
        from grain_bench.masks import UnitTensors

        torch = _torch()
        vo = (z["att"][:, None] * z["head"])[:, :, None].expand(space.num_layers, space.num_heads, space.head_dim)
        qk = torch.ones_like(vo)
        return UnitTensors(qk, vo, z["ffn"][:, None] * z["int"], z.get("hidden"))

    def start_step(self, state) -> int:
        """The first step of the L0 module: ``prepruning_steps`` + 1, or by default the schedule's first pruning
        step."""
        return self.options.prepruning_steps + 1 if self.options.prepruning_steps >= 0 else state.prune_start_step

    def active(self, state) -> bool:
        """Whether CoFi's L0 module is on: from ``start_step``. Before it (the reference's
        ``prepruning_finetune_steps``) the student trains dense: no gate is sampled and no Lagrangian is added, so
        neither the gates nor the multipliers get a gradient, and their optimizers have no state until then."""
        return state.step >= self.start_step(state)

    def gates(self, state):
        """None (dense) before the pruning window; sampled gates while learning; the fixed deterministic values after
        the freeze point."""
        if state.frozen:
            return self.final_values
        if not self.active(state):
            return None
        self._clamp()
        beta = self.options.temperature
        z = {name: sample_gates(log_alpha, beta, self.generator) for name, log_alpha in self.log_alpha.items()}
        return self.unit_gates(z, state.space)

    def gate_density(self, space):
        """Expected kept unit cost / total unit cost under the current gate distributions (differentiable)."""
        beta = self.options.temperature
        p = {name: prob_nonzero(log_alpha, beta) for name, log_alpha in self.log_alpha.items()}
        costs = space.unit_costs_at(p["hidden"].sum()) if "hidden" in p else space.unit_costs
        heads = (p["att"][:, None] * p["head"]).sum() * space.head_dim * (costs["qk"] + costs["vo"])
        neurons = (p["ffn"][:, None] * p["int"]).sum() * costs["ffn"]
        return (heads + neurons) / space.total_cost()

    def target_at(self, state) -> float:
        """The Lagrangian's target density at this step: 1 at ``start_step``, then linear to the run's target over
        ``warmup_steps`` (or ``warmup`` of training)."""
        start = self.start_step(state)
        length = max(1.0, self.options.warmup_steps or self.options.warmup * state.total_steps)
        progress = min(1.0, max(0.0, (state.step - start) / length))
        return 1.0 + (state.target_density - 1.0) * progress

    def loss(self, state):
        """λ1 (ŝ − t) + λ2 (ŝ − t)² while the gates learn; nothing before the pruning window or after the freeze."""
        if state.frozen or not self.active(state):
            return None
        target = self.target_at(state)
        gap = self.gate_density(state.space) - target
        self.info["expected_density"] = float(gap.detach()) + target
        if state.step % CURVE_EVERY == 0 or state.step == self.freeze_step(state):  # the record's learning curve
            self.info.setdefault("constraint_curve", []).append(
                [state.step, round(self.info["expected_density"], 6), round(target, 6),
                 round(float(self.lambdas[0].detach()), 6)])
        return self.lambdas[0] * gap + self.lambdas[1] * gap * gap

    def expected_density(self, state) -> float:
        """The expected density of the gates now (the trainer asks at the freeze step; the record keeps it)."""
        self._clamp()
        with _torch().no_grad():
            return float(self.gate_density(state.space))

    # ---- the final structure -----------------------------------------------------------------------------------
    def deterministic(self) -> dict[str, Any]:
        """CoFi's inference gates of every granularity (on the CPU): per layer over its heads and over its neurons,
        and each layer gate on its own (the reference's ``head_layer_z`` and ``mlp_z`` have size 1: a layer is closed
        iff P(z > 0) < 1/2)."""
        beta = self.options.temperature
        return {name: deterministic_gates(log_alpha.reshape(-1, 1) if name in LAYER_GATES else log_alpha,
                                          beta).reshape(log_alpha.shape).cpu()
                for name, log_alpha in self.log_alpha.items()}

    def masks_for(self, state, density: float):
        """The deterministic gates at the freeze point, adjusted to ``density`` within one unit: whole heads and FFN
        neurons are ranked by their gate value (CoFi's zeros first, by soft value) and pruned in that order while
        the pruned cost fits in 1 − density; a head too large for what is left is kept, and neurons fill the rest."""
        from grain_bench.masks import UnitMasks, UnitTensors

        torch = _torch()
        self._clamp()
        beta, space = self.options.temperature, state.space
        values = self.unit_gates(self.deterministic(), space)
        with torch.no_grad():
            soft = self.unit_gates({name: torch.sigmoid(log_alpha / beta * MAGICAL_NUMBER).cpu()
                                    for name, log_alpha in self.log_alpha.items()}, space)
        head_value, head_soft = values.vo[:, :, 0], soft.vo[:, :, 0]
        hidden = None if values.hidden is None else land_hidden(values.hidden, soft.hidden, density, space)
        costs = space.unit_costs if hidden is None else space.unit_costs_at(int(hidden.sum()))
        items = torch.cat([torch.where(head_value > 0, head_soft, head_soft - 2.0).reshape(-1),
                           torch.where(values.ffn > 0, soft.ffn, soft.ffn - 2.0).reshape(-1)]).double()
        item_costs = torch.cat([torch.full((head_value.numel(),), space.head_dim * (costs["qk"] + costs["vo"])),
                                torch.full((values.ffn.numel(),), costs["ffn"])]).double()
        budget = float(item_costs.sum()) - density * space.total_cost() + 1e-6  # what the landing may prune
        keep = torch.ones(len(items), dtype=torch.bool)
        for index in torch.argsort(items, stable=True).tolist():
            if item_costs[index] <= budget:
                keep[index] = False
                budget -= float(item_costs[index])
        heads = keep[:head_value.numel()].reshape(head_value.shape)
        units = heads[:, :, None].expand(-1, -1, space.head_dim).clone()
        masks = UnitMasks(units, units.clone(), keep[head_value.numel():].reshape(values.ffn.shape).clone(), hidden)
        if budget >= costs["qk"] and heads.any():  # no neuron left to prune: trim the weakest kept head unit by unit
            head_scores = items[:heads.numel()].reshape(heads.shape).masked_fill(~heads, float("inf"))
            layer, head = divmod(int(head_scores.argmin()), space.num_heads)
            for unit in range(space.head_dim - 1):  # value and query unit pairs, one pair of each kind kept
                for kind in ("qk", "vo"):
                    if budget >= costs[kind]:
                        getattr(masks, kind)[layer, head, unit] = False
                        budget -= costs[kind]
        kept_values = UnitTensors(*(torch.where(v > 0, v, s) for (_, v), (_, s) in zip(values.kinds(), soft.kinds())))
        self.final_values = UnitTensors(torch.ones_like(kept_values.qk), kept_values.vo.float(),
                                        kept_values.ffn.float(),
                                        None if kept_values.hidden is None else kept_values.hidden.float())
        zeros = (("heads", head_value), ("neurons", values.ffn)) + (() if hidden is None else
                                                                    (("hidden", values.hidden),))
        self.info.update(cofi_zeros={kind: int((v == 0).sum()) for kind, v in zeros},
                         landing=landing(head_value, values.ffn, heads, masks, head_soft, soft, space,
                                         values.hidden),
                         lambdas=[float(x) for x in self.lambdas.detach().cpu()],
                         heads_kept=masks.heads_kept(), density_at_freeze=masks.density(space))
        return masks

    def unit_scales(self, state):
        """The deterministic gate values of the kept units, folded into the weights before compaction."""
        return self.final_values


@hookimpl
def register_methods(register):
    """Register CoFi."""
    register(Cofi)
