"""Structured movement pruning (Sanh et al., NeurIPS 2020) on grain-bench's units.

Movement pruning keeps the weights that move away from zero during fine-tuning: the score of a weight is
−Σ_t ∂L/∂W · W. On our units, whose gate g multiplies the unit's output (query units, value units, FFN neurons), the
score is the accumulated negative signed gate gradient, −Σ_t ∂L/∂g: signed, no absolute value, no EMA (it equals the
first-order movement score summed over a unit's weights). Units are ranked globally, all kinds and layers together,
and cut along the trainer's cubic schedule, like ``grain``.

So ``movement`` is the cleanest ablation of GRAIN's score: the same gradients (of the logit-KD loss only), the same
ranking and schedule, but signed and summed instead of |·| and averaged. That default departs from the references
(Sanh et al.'s code, nn_pruning) in three places, each an option with the references' form:

- ``ranking``: ``global`` (default; the references' option) or ``per_matrix``, the references' default: every
  matrix loses the same share. Here a unit's score is replaced by its percentile within its layer's matrix (the
  layer's query units, its value units, its FFN neurons), so the one allocator's global cut keeps about the same
  share of each (within one unit's cost; units of a matrix tie only where their scores do);
- ``scores``: ``sum`` (default: the raw sum above) or ``adam``, the references' learned scores: S ← S − lr ·
  Adam(∂L/∂S) with ∂L/∂S = ∂L/∂g per unit (β 0.9/0.999, ε 1e-8, bias-corrected, lr 1e-2, no decay), so each step's
  gradient is normalised by its running scale before it is added;
- ``gradient_separation``: ``true`` (default: scores from the logit-KD loss only, as ``grain``) or ``false``, the
  references' whole loss (here logit KD plus the hidden-state loss).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Literal

from grain_bench.hookspecs import hookimpl
from grain_bench.scoring import GlobalRankingMethod, ScoreAndCutOptions, combine, has_nan

ADAM_BETAS, ADAM_EPS, ADAM_LR = (0.9, 0.999), 1e-8, 1e-2  # the references' score optimizer


@dataclass(frozen=True)
class MovementOptions(ScoreAndCutOptions):
    """Options of ``movement``."""

    gradient_separation: bool = True  # scores from the logit-KD loss only (as grain); false: logit + hidden loss
    ranking: Literal["global", "per_matrix"] = "global"  # per_matrix: every layer's matrices keep the same share
    scores: Literal["sum", "adam"] = "sum"  # adam: scores learned by Adam on dL/dgate, as the references' are


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
        self.moments = None  # Adam's first and second moments, for scores=adam
        self.updates = 0
        self.skipped = 0

    def observe(self, state) -> None:
        """Add this step's −dL/dgate, raw or Adam-normalised (a step with non-finite gradients adds nothing)."""
        grads = state.unit_grads
        if grads is None or has_nan(grads):
            self.skipped += 1
            return
        grads = grads.map(lambda t: t.double())
        self.updates += 1
        step = grads.map(lambda t: -t) if self.options.scores == "sum" else self._adam_step(grads)
        self.scores = step if self.scores is None else combine(self.scores, step, operator.add)

    def _adam_step(self, grads):
        """−lr · m̂ / (√v̂ + ε) for this step's gradients (the change Adam makes to a score descending the loss)."""
        (b1, b2), t = ADAM_BETAS, self.updates
        if self.moments is None:
            self.moments = (grads.map(lambda g: g * 0), grads.map(lambda g: g * 0))
        m, v = self.moments
        m = combine(m, grads, lambda a, g: b1 * a + (1 - b1) * g)
        v = combine(v, grads, lambda a, g: b2 * a + (1 - b2) * g * g)
        self.moments = (m, v)
        return combine(m, v, lambda a, b: -ADAM_LR * (a / (1 - b1 ** t)) / ((b / (1 - b2 ** t)).sqrt() + ADAM_EPS))

    def unit_scores(self, state):
        """The movement scores (higher = moved further from zero = kept); per matrix, their percentiles."""
        if self.scores is None:
            raise RuntimeError("movement: no gradients were observed before the first pruning step")
        return self.scores if self.options.ranking == "global" else self.scores.map(per_layer_percentiles)


def per_layer_percentiles(scores):
    """Each score's rank within its layer (the first axis: one matrix's units), as a fraction in (0, 1]: ties keep
    their order of position."""
    import torch

    flat = scores.reshape(scores.shape[0], -1)
    ranks = torch.argsort(torch.argsort(flat, dim=1, stable=True), dim=1, stable=True)
    return ((ranks + 1).double() / flat.shape[1]).reshape(scores.shape)


@hookimpl
def register_methods(register):
    """Register structured movement pruning."""
    register(Movement)
