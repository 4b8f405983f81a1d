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
from grain_bench.method import Method
from grain_bench.options import option
from grain_bench.scoring import ScoreAndCutOptions, ScoreEMA, check_blocks, has_nan

AUTO_SHARES = ("0.2", "proportional", "0.5", "0.7")


@dataclass(frozen=True)
class HeadsOptions(ScoreAndCutOptions):
    """Options of ``heads`` (heads are pruned whole; ``granularity`` blocks the FFN neurons)."""

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


class Heads(Method):
    """Whole attention heads and FFN neurons, EMA gradient scores, separate rankings under a budget split."""

    options: HeadsOptions

    name = "heads"
    description = "whole heads + FFN neurons (Michel et al. 2019), EMA |dL/dgate|, head_share budget split"
    Options = HeadsOptions
    observes_after_pruning = False  # its scores only feed masks_for
    prunes_to_cost = True  # masks_for meets the run's cost model through grain_bench.allocate.meet_cost

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
        """Whole heads and FFN neurons within the scheduled budget, with the budget split
        (``grain_bench.allocate.allocate_heads``); under a latency cost, at the density whose cost fits it."""
        from grain_bench.allocate import allocate_heads, meet_cost

        space, masks, blocks = state.space, state.masks, self.options.blocks()
        head_scores, ffn_scores, share = self.ema.value["heads"], self.ema.value["ffn"], self.share(space)
        return meet_cost(lambda d: allocate_heads(head_scores, ffn_scores, masks, space, d, share, blocks.ffn),
                         density, state.cost_model, space)

    @classmethod
    def check_backbone(cls, options, space) -> None:
        """FFN blocks that tile the backbone's FFN width."""
        check_blocks(cls, options, space)


@hookimpl
def register_methods(register):
    """Register whole-head pruning."""
    register(Heads, aliases=("head-pruning",))
