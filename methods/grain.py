"""GRAIN: gradient-based intra-attention pruning (Yang, Cui, Yao, Wang, ACL 2023, arXiv 2212.07634).

Follows the authors' reference code (airaria/GRAIN ``FineISPruner``) where the paper is vague:

- units are query units, value units and FFN neurons (mask space of ``grain_bench.masks``); per-step score
  |dL/dgate|, i.e. |sum_cols(dW_Q * W_Q)[j] + db_Q[j] b_Q[j]| (K not used), |sum_rows(dW_O * W_O)[:, j]| (V not used),
  |sum_rows(dW_2 * W_2)[:, k]| (W_1 not used); the absolute value of the batch sum, once per step;
- structure regularisation on the per-step value scores, before the EMA, with the masks of the previous pruning
  call: score * tanh(kept fraction of the head's value units / alpha) (a full head gets tanh(1/alpha), not 1);
- EMA with beta 0.998 from 0, no bias correction, every step from the first up to the schedule's last pruning step
  (the reference's step order scores every step; after the last pruning step nothing reads the scores, so the
  trainer skips those observations and takes one backward of the summed loss: the same masks, and the same gradients
  up to float rounding); a NaN step only decays the EMA;
- gradient separation: scores from the logit-KD loss only (the trainer calls ``observe`` before the hidden loss's
  backward); ``gradient_separation=false`` scores the summed loss instead (ablation);
- one global ascending ranking without normalisation; masks only shrink; a head without value units loses its
  query units (``grain_bench.allocate.prune_to_density``).

Differences from the reference, on purpose: the layer-level factor tanh(layer density / 1e-4) is left out (it is
1 unless a layer is nearly empty); the optional embedding factorisation is a truncated SVD after training (the
reference factorises before training and trains the factors).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from grain_bench.hookspecs import hookimpl
from grain_bench.options import option
from grain_bench.scoring import GlobalRankingMethod, ScoreAndCutOptions, ScoreEMA, has_nan, random_unit_scores


@dataclass(frozen=True)
class GrainOptions(ScoreAndCutOptions):
    """Options of ``grain`` (and the blocks of every score-and-cut method: ``granularity``)."""

    alpha: float = option(0.3, ge=0)  # structure regularisation strength; 0 disables
    beta: float = option(0.998, ge=0, lt=1)  # EMA factor
    score: Literal["grad", "random", "magnitude"] = "grad"
    gradient_separation: bool = True
    embedding_rank: int | None = option(None, ge=1)  # truncated SVD of the word embeddings after training


def structure_factor(vo_masks, alpha: float):
    """tanh(kept fraction of each head's value units / alpha), shape [layers, heads, 1]."""
    import torch

    kept_fraction = vo_masks.double().mean(dim=-1, keepdim=True)
    return torch.tanh(kept_fraction / alpha)


class Grain(GlobalRankingMethod):
    """GRAIN: intra-attention units and FFN neurons ranked globally by EMA gradient scores with structure
    regularisation."""

    options: GrainOptions

    name = "grain"
    description = "GRAIN: query/value units and FFN neurons, global |grad*W| EMA ranking, structure regularisation"
    Options = GrainOptions

    def __init__(self, options=None, seed: int = 0):
        super().__init__(options, seed)
        self.gradient_source = "logit" if self.options.gradient_separation else "total"
        self.ema = ScoreEMA(self.options.beta)
        self.fixed_scores = None

    def setup(self, state) -> None:
        """Draw the fixed random scores of the ``score=random`` ablation."""
        if self.options.score == "random":
            self.fixed_scores = random_unit_scores(state.space, self.seed)

    def step_scores(self, unit_grads, masks):
        """This step's regularised scores from dL/dgate (None when the gradients are not finite)."""
        if unit_grads is None or has_nan(unit_grads):
            return None
        scores = unit_grads.map(lambda t: t.double().abs())
        if self.options.alpha > 0:
            scores.vo = scores.vo * structure_factor(masks.vo, self.options.alpha)
        return scores

    def observe(self, state) -> None:
        """Update the EMA with this step's scores."""
        if self.options.score == "grad":
            self.ema.update(self.step_scores(state.unit_grads, state.masks))

    def unit_scores(self, state):
        """EMA scores, fixed random scores, or current weight norms, by ``score``."""
        if self.options.score == "random":
            return self.fixed_scores
        if self.options.score == "magnitude":
            from grain_bench.masked import unit_weight_norms

            return unit_weight_norms(state.model, state.space)
        if self.ema.value is None:
            raise RuntimeError("grain: no gradient scores were observed before the first pruning step")
        return self.ema.value

    def finalize(self, model) -> dict:
        """Optional truncated SVD of the word embeddings (reported in the total size)."""
        rank = self.options.embedding_rank
        if not rank:
            return {}
        from grain_bench.compress import factorize_embeddings

        factorize_embeddings(model, rank)
        return {"embedding_rank": rank}


@hookimpl
def register_methods(register):
    """Register GRAIN."""
    register(Grain)
