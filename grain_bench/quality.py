"""Is a score a result or a collapse? The evidence kept with every record and teacher (``RunRecord.quality``).

A model is **collapsed** when any of these holds on the scored split:

- it predicts one class for every example (classification), or only ``O`` (NER), or the same empty answer (QA);
- its regression predictions have almost no spread (standard deviation under ``SPREAD`` of the labels');
- its score is within noise of a trivial predictor (the split's majority class, mean label, all ``O``, the first
  context token): a paired bootstrap of score(model) − score(trivial) over the scored examples
  (``grain_bench.significance``) whose 95% interval reaches 0.

Tables flag such rows ``collapsed`` and leave them off the Pareto fronts; a teacher that is collapsed puts a warning
in its task's caption. The evidence (the prediction histogram or spread, the interval against chance) is stored.

A learned-mask run (CoFi) is **not converged** when the expected density of its gates at the freeze step is more than
``CONVERGENCE_TOLERANCE`` from the target (``RunRecord.density.gap_at_freeze``): its gates did not learn the target,
so its masks are the landing rule's (the final masks forced onto the target), not the method's. So is one whose landing
spent more than the same tolerance of the dense model's cost on units brought back at a scale under
``LANDING_SCALE_FLOOR`` (``method_info.landing.near_zero_share``): they cost budget and contribute next to nothing.
Tables flag such rows ``not converged`` and leave them off the fronts, as a collapse.
"""

from __future__ import annotations

from typing import Any

SPREAD = 0.05  # regression predictions with std under 5% of the labels' std count as constant
CONVERGENCE_TOLERANCE = 0.01  # |expected density at the freeze - target| above this: the gates did not converge
LANDING_SCALE_FLOOR = 0.05  # a unit the landing brought back with a scale under this contributes next to nothing


def converged(expected_at_freeze: float | None, target: float | None,
              near_zero_share: float | None = None) -> bool | None:
    """Whether a learned-mask run's gates reached its target (``CONVERGENCE_TOLERANCE``) and its landing spent no
    more than that share of the dense cost on units brought back at a scale under ``LANDING_SCALE_FLOOR``
    (``near_zero_share``; None: not reported); None when it has no expected density (every other method)."""
    if expected_at_freeze is None or target is None:
        return None
    wasted = near_zero_share is not None and near_zero_share > CONVERGENCE_TOLERANCE + 1e-12
    return abs(expected_at_freeze - target) <= CONVERGENCE_TOLERANCE + 1e-12 and not wasted


def assess(task, predictions, encoded) -> dict[str, Any]:
    """The collapse verdict of ``task.predict``'s output on ``encoded``, with its evidence."""
    from grain_bench.significance import paired_bootstrap

    summary = task.prediction_summary(predictions, encoded)
    reasons = []
    if summary.get("distinct_predictions") == 1:
        reasons.append(f"predicts {summary.get('only', 'the same output')} for every example")
    if "std" in summary and summary["std"] <= SPREAD * summary.get("reference_std", 0.0):
        reasons.append(f"predictions have almost no spread (std {summary['std']:.3g} against the labels' "
                       f"{summary['reference_std']:.3g})")
    out: dict[str, Any] = {"summary": summary}
    mine, chance = task.example_stats(predictions, encoded), task.chance_stats(encoded)
    if mine is not None and chance is not None and mine[0] == chance[0] and len(mine[1]) == len(chance[1]) > 1:
        result = paired_bootstrap([(mine[1], chance[1])], mine[0], resamples=1000)
        higher = task.higher_is_better(task.primary_metric)
        noise = result.low <= 0 if higher else result.high >= 0
        out["vs_chance"] = {"difference": result.difference, "low": result.low, "high": result.high,
                            "examples": result.examples}
        if noise:
            reasons.append(f"{task.primary_metric} within noise of a trivial predictor ({result.difference:+.4f}, "
                           f"95% interval [{result.low:+.4f}, {result.high:+.4f}])")
    out.update(collapsed=bool(reasons), reasons=reasons)
    return out
