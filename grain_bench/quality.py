"""Is a score a result or a collapse? The evidence kept with every record and teacher (``RunRecord.quality``).

A model is **collapsed** when any of these holds on the scored split:

- it predicts one class for every example (classification), or only ``O`` (NER), or the same empty answer (QA);
- its regression predictions have almost no spread (standard deviation under ``SPREAD`` of the labels');
- its score is within noise of a trivial predictor (the split's majority class, mean label, all ``O``, the first
  context token): a paired bootstrap of score(model) − score(trivial) over the scored examples
  (``grain_bench.significance``) whose 95% interval reaches 0.

Tables flag such rows ``collapsed`` and leave them off the Pareto fronts; a teacher that is collapsed puts a warning
in its task's caption. The evidence (the prediction histogram or spread, the interval against chance) is stored.
"""

from __future__ import annotations

from typing import Any

SPREAD = 0.05  # regression predictions with std under 5% of the labels' std count as constant


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
