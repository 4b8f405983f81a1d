"""Structured movement pruning (Sanh et al., NeurIPS 2020) on grain-bench's units.

Movement pruning keeps the weights that move away from zero during fine-tuning: the score of a weight is
−Σ_t ∂L/∂W · W. On our units, whose gate g multiplies the unit's output (query units, value units, FFN neurons), the
score is the accumulated negative signed gate gradient, −Σ_t ∂L/∂g: signed, no absolute value, no EMA. Units are
ranked globally, all kinds and layers together, and cut along the trainer's cubic schedule, like ``grain``.

So ``movement`` is the cleanest ablation of GRAIN's score: the same gradients (of the logit-KD loss only, unless
``gradient_separation=false``), the same ranking and schedule, but signed and summed instead of |·| and averaged.
"""

from __future__ import annotations

from dataclasses import dataclass

from grain_bench.hookspecs import hookimpl
from grain_bench.scoring import GlobalRankingMethod, ScoreAndCutOptions, has_nan


@dataclass(frozen=True)
class MovementOptions(ScoreAndCutOptions):
    """Options of ``movement``."""

    gradient_separation: bool = True  # scores from the logit-KD loss only (as grain); false: logit + hidden loss


class Movement(GlobalRankingMethod):
    """Structured movement pruning: units ranked by −Σ_t dL/dgate (signed, accumulated), cut along the schedule."""

    options: MovementOptions

    name = "movement"
    description = "structured movement pruning: -sum_t dL/dgate per unit (signed, no EMA), global ranking"
    Options = MovementOptions

    def __init__(self, options=None, seed: int = 0):
        super().__init__(options, seed)
        self.gradient_source = "logit" if self.options.gradient_separation else "total"
        self.scores = None
        self.skipped = 0

    def observe(self, state) -> None:
        """Accumulate −dL/dgate (a step with non-finite gradients adds nothing)."""
        grads = state.unit_grads
        if grads is None or has_nan(grads):
            self.skipped += 1
            return
        step = grads.map(lambda t: -t.double())
        if self.scores is None:
            self.scores = step
        else:
            self.scores = self.scores.__class__(*(a + b for (_, a), (_, b) in zip(self.scores.items(), step.items())))

    def unit_scores(self, state):
        """The accumulated movement scores (higher = moved further from zero = kept)."""
        if self.scores is None:
            raise RuntimeError("movement: no gradients were observed before the first pruning step")
        return self.scores


@hookimpl
def register_methods(register):
    """Register structured movement pruning."""
    register(Movement)
