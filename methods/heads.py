"""Whole-head pruning (Michel et al. 2019 style, the GRAIN paper's baseline): heads and FFN neurons.

Head importance is |dL/d(head gate)| = |sum_j dL/dgate of the head's value units| (the gradient-times-weight score
summed over the head), FFN neuron importance is GRAIN's FFN score; both are smoothed by the same EMA. Heads and
neurons are not comparable, so each is ranked on its own against a split of the pruned cost: ``head_share`` of the
pruned parameters comes from attention (``proportional`` = attention's share of the unit cost; ``auto`` tries
several splits, keeps the best on the dev split and records which one won).
"""

from __future__ import annotations

from dataclasses import dataclass

from grain_bench.errors import UsageError
from grain_bench.hookspecs import hookimpl
from grain_bench.method import Method, MethodOptions
from grain_bench.options import option
from grain_bench.scoring import ScoreEMA, has_nan

AUTO_SHARES = ("0.2", "proportional", "0.5", "0.7")


@dataclass(frozen=True)
class HeadsOptions(MethodOptions):
    """Options of ``heads``."""

    head_share: str = "proportional"  # a fraction in [0, 1], "proportional" or "auto"
    beta: float = option(0.998, ge=0, lt=1)  # EMA factor

    def validate(self) -> None:
        """``head_share`` must be a fraction, proportional or auto."""
        if self.head_share in ("proportional", "auto"):
            return
        try:
            share = float(self.head_share)
        except ValueError:
            share = -1.0
        if not 0.0 <= share <= 1.0:
            raise UsageError(f"{self.owner}: head_share must be a number in [0, 1], 'proportional' or 'auto', "
                             f"got {self.head_share!r}")


def _prefix_within(scores, costs, budget: float):
    """Indices of the longest lowest-score prefix whose cost stays within ``budget``."""
    import torch

    order = torch.argsort(scores, stable=True)
    cumulative = torch.cumsum(costs[order], dim=0)
    count = int(torch.searchsorted(cumulative, torch.tensor([budget + 1e-6], dtype=cumulative.dtype), side="right"))
    return order[:count]


class Heads(Method):
    """Whole attention heads and FFN neurons, EMA gradient scores, separate rankings under a budget split."""

    options: HeadsOptions

    name = "heads"
    description = "whole heads + FFN neurons (Michel et al. 2019), EMA |dL/dgate|, head_share budget split"
    Options = HeadsOptions
    observes_after_pruning = False  # its scores only feed masks_for

    def __init__(self, options=None, seed: int = 0):
        super().__init__(options, seed)
        self.ema = ScoreEMA(self.options.beta)

    def variants(self):
        """The splits tried by ``head_share=auto``."""
        if self.options.head_share != "auto":
            return []
        return [{"head_share": share} for share in AUTO_SHARES]

    def observe(self, state) -> None:
        """EMA of head scores |sum_j dL/dgate_vo| and FFN scores |dL/dgate_ffn|."""
        grads = state.unit_grads
        if grads is None or has_nan(grads):
            self.ema.update(None)
            return
        self.ema.update({"heads": grads.vo.double().sum(-1).abs(), "ffn": grads.ffn.double().abs()})

    def share(self, space) -> float:
        """Fraction of the pruned cost taken from attention."""
        if self.options.head_share in ("proportional", "auto"):
            per_head = space.head_dim * (space.unit_costs["qk"] + space.unit_costs["vo"])
            attention = space.num_layers * space.num_heads * per_head
            return attention / space.total_cost()
        return float(self.options.head_share)

    def masks_for(self, state, density: float):
        """Prune whole heads and FFN neurons to ``density`` with the budget split."""
        import torch

        from grain_bench.masks import UnitMasks

        space, masks = state.space, state.masks
        costs = space.unit_costs
        head_cost = space.head_dim * (costs["qk"] + costs["vo"])
        attention_total = space.num_layers * space.num_heads * head_cost
        ffn_total = space.num_layers * space.ffn_dim * costs["ffn"]
        budget = (1.0 - density) * space.total_cost()
        head_alive = masks.vo.any(-1).reshape(-1)
        ffn_alive = masks.ffn.reshape(-1)
        heads_pruned_cost = int((~head_alive).sum()) * head_cost
        ffn_pruned_cost = int((~ffn_alive).sum()) * costs["ffn"]
        # The split aims at head_share of the pruned cost, but earlier calls already fixed some of it: never go below
        # what attention has pruned, nor above what the FFN's pruned neurons leave, and let attention take what the
        # FFN cannot absorb.
        attention_budget = min(self.share(space) * budget, attention_total)
        attention_budget = max(attention_budget, budget - ffn_total, heads_pruned_cost)
        attention_budget = min(attention_budget, budget - ffn_pruned_cost)

        head_scores = self.ema.value["heads"].reshape(-1).clone()
        head_scores[~head_alive] = float("-inf")
        pruned_heads = _prefix_within(head_scores, torch.full_like(head_scores, float(head_cost)), attention_budget)
        # Whole heads rarely fit the attention budget exactly: FFN neurons take the rest of the pruned cost.
        ffn_budget = min(budget - pruned_heads.numel() * head_cost, ffn_total)
        ffn_scores = self.ema.value["ffn"].reshape(-1).clone()
        ffn_scores[~ffn_alive] = float("-inf")
        pruned_ffn = _prefix_within(ffn_scores, torch.full_like(ffn_scores, float(costs["ffn"])), ffn_budget)

        keep_head = head_alive.clone()
        keep_head[pruned_heads] = False
        keep_ffn = ffn_alive.clone()
        keep_ffn[pruned_ffn] = False
        keep_head = keep_head.reshape(space.num_layers, space.num_heads, 1)
        qk = masks.qk & keep_head
        vo = masks.vo & keep_head
        return UnitMasks(qk, vo, masks.ffn & keep_ffn.reshape(space.num_layers, space.ffn_dim))


@hookimpl
def register_methods(register):
    """Register whole-head pruning."""
    register(Heads, aliases=("head-pruning",))
