"""Baseline methods in the shared mask space and schedule: dense, random, magnitude, ffn-only."""

from __future__ import annotations

from dataclasses import dataclass

from grain_bench.hookspecs import hookimpl
from grain_bench.method import Method
from grain_bench.options import option
from grain_bench.scoring import GlobalRankingMethod, ScoreAndCutOptions, ScoreEMA, has_nan, random_unit_scores


class Dense(Method):
    """No pruning: the student is distilled with the same recipe and keeps every unit (the dense reference row)."""

    name = "dense"
    description = "distillation only, no pruning (reference row)"
    prunes = False


class RandomUnits(GlobalRankingMethod):
    """Random unit scores (fixed per seed), ranked globally with the unit costs."""

    name = "random"
    description = "random unit scores, global ranking (query, value and FFN units)"

    def setup(self, state) -> None:
        """Draw one fixed random score per unit."""
        self.scores = random_unit_scores(state.space, self.seed)

    def unit_scores(self, state):
        """The fixed random scores."""
        return self.scores


class Magnitude(GlobalRankingMethod):
    """Weight-norm unit scores (L2 norm of each unit's rows and columns), recomputed at every pruning step."""

    name = "magnitude"
    description = "L2 norm of each unit's weights, global ranking"

    def unit_scores(self, state):
        """Current weight norms."""
        from grain_bench.masked import unit_weight_norms

        return unit_weight_norms(state.model, state.space)


@dataclass(frozen=True)
class FfnOnlyOptions(ScoreAndCutOptions):
    """Options of ``ffn-only``."""

    beta: float = option(0.998, ge=0, lt=1)  # EMA factor


class FfnOnly(GlobalRankingMethod):
    """FFN neurons only, ranked by the same EMA gradient score as GRAIN; attention is never pruned.

    Attention holds about a third of the unit cost of a BERT layer, so densities below that share cannot be
    reached: the method then prunes every FFN neuron and the record shows the density it reached.
    """

    options: FfnOnlyOptions

    name = "ffn-only"
    description = "FFN neurons only (EMA |grad*W| scores); cannot go below the attention share of the cost"
    Options = FfnOnlyOptions

    def __init__(self, options=None, seed: int = 0):
        super().__init__(options, seed)
        self.ema = ScoreEMA(self.options.beta)

    def observe(self, state) -> None:
        """EMA of |dL/dgate| of FFN neurons."""
        grads = state.unit_grads
        self.ema.update(None if grads is None or has_nan(grads) else grads.map(lambda t: t.double().abs()))

    def unit_scores(self, state):
        """FFN scores; attention units get +inf so they are never chosen."""
        scores = self.ema.value.clone()
        scores.qk.fill_(float("inf"))
        scores.vo.fill_(float("inf"))
        return scores

    def masks_for(self, state, density: float):
        """Prune FFN neurons toward ``density``; record when the target is out of reach (attention is never pruned:
        the lowest budget is what attention costs alone)."""
        from grain_bench.costs import parameter_cost
        from grain_bench.masks import UnitMasks

        space, masks = state.space, state.masks
        cost = state.cost_model or parameter_cost(space)
        attention_share = cost.fraction(UnitMasks(masks.qk, masks.vo, masks.ffn & False), space)
        if density < attention_share:
            self.info["unreachable_target"] = True
            self.info["lowest_density"] = attention_share
        return super().masks_for(state, max(density, attention_share))


@hookimpl
def register_methods(register):
    """Register the baselines."""
    register(Dense)
    register(RandomUnits)
    register(Magnitude)
    register(FfnOnly)
