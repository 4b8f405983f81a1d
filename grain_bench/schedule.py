"""The trainer's density schedule, the same for every method: dense warm-up, cubic decrease, fixed tail."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CubicSchedule:
    """Density 1 until ``start``, s_f + (1 - s_f)(1 - (t - start)/(end - start))^3 until ``end``, then s_f.

    ``start`` = int(prune_start * total) and ``end`` = int(prune_end * total) in 1-based global steps, as the reference
    code does. Pruning calls happen for start <= t <= end: the reference stops one step before ``end``, which leaves
    the final density a hair above the target; we include ``end`` so short runs reach the target exactly.
    """

    total_steps: int
    target: float
    prune_start: float = 0.2
    prune_end: float = 0.4

    @property
    def start(self) -> int:
        """First pruning step."""
        return int(self.prune_start * self.total_steps)

    @property
    def end(self) -> int:
        """Last pruning step (the target is reached here)."""
        return max(int(self.prune_end * self.total_steps), self.start)

    def density(self, step: int) -> float:
        """Scheduled density at 1-based ``step``."""
        if step <= self.start:
            return 1.0 if self.end > self.start or step < self.start else self.target
        if step >= self.end:
            return self.target
        progress = (step - self.start) / (self.end - self.start)
        return self.target + (1.0 - self.target) * (1.0 - progress) ** 3

    def is_pruning_step(self, step: int) -> bool:
        """True when the trainer asks the method for masks at ``step``."""
        return self.target < 1.0 and max(self.start, 1) <= step <= self.end
