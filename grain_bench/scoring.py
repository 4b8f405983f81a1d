"""Public helpers for score-and-cut methods, built-in or third-party: ``ScoreEMA`` (an exponential moving average of
per-step unit scores, as GRAIN keeps), ``GlobalRankingMethod`` (score every unit, prune by one global cost-aware
ranking against the scheduled density), ``random_unit_scores`` and ``has_nan``."""

from __future__ import annotations

from typing import Any

from grain_bench.method import Method


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
        self.value = _map2(self.value, scores, lambda old, new: self.beta * old + (1 - self.beta) * new.double())
        self.updates += 1


def _map(tensors, fn):
    if isinstance(tensors, dict):
        return {k: fn(v) for k, v in tensors.items()}
    return tensors.map(fn)


def _map2(a, b, fn):
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
    """A method that scores every unit and prunes by one global ranking against the scheduled density."""

    observes_after_pruning = False  # its scores only feed masks_for

    def unit_scores(self, state):
        """UnitTensors of scores (higher = more important)."""
        raise NotImplementedError

    def masks_for(self, state, density: float):
        """Prune the lowest-scored units, all kinds and layers together."""
        from grain_bench.masks import prune_to_density

        return prune_to_density(self.unit_scores(state), state.masks, state.space, density)
