"""Public helpers for score-and-cut methods, built-in or third-party: ``ScoreAndCutOptions`` (the options every such
method shares: the granularity of its blocks), ``ScoreEMA`` (an exponential moving average of per-step unit scores, as
GRAIN keeps), ``GlobalRankingMethod`` (score every unit, prune by one global cost-aware ranking against the scheduled
budget, through ``grain_bench.allocate``), ``combine`` (two score sets, kind by kind), ``random_unit_scores`` and
``has_nan``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from grain_bench.method import Method, MethodOptions
from grain_bench.options import option


@dataclass(frozen=True)
class ScoreAndCutOptions(MethodOptions):
    """Options every score-and-cut method takes: query/value units (within a head) and FFN neurons (within a layer)
    are pruned in aligned blocks of ``granularity`` (FFN blocks of ``ffn_granularity`` when given), so the compact
    widths are multiples of it. 1: unit by unit."""

    granularity: int = option(1, ge=1)
    ffn_granularity: int | None = option(None, ge=1, hint="or none for the granularity")

    def blocks(self):
        """The ``grain_bench.allocate.Granularity`` these options ask for."""
        from grain_bench.allocate import Granularity

        return Granularity(self.granularity, self.ffn_granularity or self.granularity)


def check_blocks(cls, options: dict[str, Any], space) -> None:
    """``Method.check_backbone`` of a method with ``ScoreAndCutOptions``: its blocks must tile the backbone's head
    and FFN widths (``UsageError`` otherwise)."""
    cls.from_options(options).options.blocks().check(space, f"method {cls.name!r}")


class ScoreEMA:
    """Exponential moving average of unit scores: starts at 0, no bias correction (GRAIN's reference code, the
    importance EMA of ``FineISPruner`` in ``pruners.py``)."""

    def __init__(self, beta: float):
        self.beta = beta
        self.value: Any = None  # UnitTensors (or a dict of tensors) once a step was folded in
        self.updates = 0
        self.skipped = 0

    def update(self, scores) -> None:
        """Fold one step's scores in (``UnitTensors`` or a dict of tensors); ``None`` (a NaN step) only decays."""
        if scores is None:
            self.skipped += 1
            if self.value is not None:
                self.value = _map(self.value, lambda t: t * self.beta)
            return
        if self.value is None:
            self.value = _map(scores, lambda t: t.double() * 0)
        self.value = combine(self.value, scores, lambda old, new: self.beta * old + (1 - self.beta) * new.double())
        self.updates += 1


def _map(tensors, fn):
    if isinstance(tensors, dict):
        return {k: fn(v) for k, v in tensors.items()}
    return tensors.map(fn)


def combine(a, b, fn):
    """``fn(x, y)`` of each kind's tensors of ``a`` and ``b`` (``UnitTensors``, or dicts of tensors with the same
    keys), in ``a``'s type."""
    if isinstance(a, dict):
        return {k: fn(a[k], b[k]) for k in a}
    return a.__class__(*(fn(x, y) for (_, x), (_, y) in zip(a.items(), b.items())))


def random_unit_scores(space, seed: int):
    """One fixed uniform random score per unit, drawn from a generator seeded by ``seed``."""
    import torch

    from grain_bench.masks import UnitTensors

    count = UnitTensors.filled(space, 0.0).flat().numel()
    generator = torch.Generator().manual_seed(10_000 + seed)
    return UnitTensors.from_flat(space, torch.rand(count, generator=generator, dtype=torch.float64))


def has_nan(tensors) -> bool:
    """True when any unit gradient is NaN or infinite."""
    import torch

    return any(not bool(torch.isfinite(t).all()) for _, t in tensors.items())


class GlobalRankingMethod(Method):
    """A method that scores every unit and prunes by one global ranking against the scheduled budget."""

    Options = ScoreAndCutOptions
    options: ScoreAndCutOptions
    observes_after_pruning = False  # its scores only feed masks_for
    prunes_to_cost = True  # masks_for goes through grain_bench.allocate with the run's cost model

    def unit_scores(self, state):
        """UnitTensors of scores (higher = more important)."""
        raise NotImplementedError

    def masks_for(self, state, density: float):
        """Keep the best-scored units, all kinds and layers together, within the scheduled budget (``density``: a
        fraction of the dense model's cost under the run's cost model, the parameter cost by default)."""
        from grain_bench.allocate import allocate

        return allocate(self.unit_scores(state), state.masks, state.space, density, state.cost_model,
                        self.options.blocks())

    @classmethod
    def check_backbone(cls, options: dict[str, Any], space) -> None:
        """Blocks that tile the backbone's widths."""
        check_blocks(cls, options, space)
