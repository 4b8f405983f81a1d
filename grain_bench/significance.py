"""Paired significance between methods: per-example statistics of a metric, and a paired bootstrap over examples.

Every task's primary metric is a function of column sums of per-example statistics (its "kind"):

- ``mean``: rows ``[value, weight]``, metric ``sum(value) / sum(weight)`` (accuracy, SQuAD F1 and exact match, MNLI
  accuracy on its matched rows);
- ``f1``: rows ``[tp, fp, fn]``, metric ``2 tp / (2 tp + fp + fn)`` (binary F1; CoNLL entity F1 with per-sentence
  entity counts, which is conlleval's micro F1);
- ``mcc``: rows ``[tp, tn, fp, fn]``, Matthews correlation;
- ``pearson``: rows ``[x, y, x², y², xy, 1]`` of values centred on the split's means, Pearson correlation
  (Spearman: the same on ranks taken over the whole split, so a resample reuses the full-split ranks: an
  approximation the bootstrap literature accepts).

So the metric of any resample of examples is the metric of the summed rows, and one bootstrap draw costs a gather and
a sum. Two runs scored on the same examples (same task, data, teacher and seed) are compared by resampling the same
example indices for both: ``paired_bootstrap`` returns the score difference with a percentile interval. Over several
seeds, each draw averages the per-seed differences, so the interval is that of the mean difference over the seeds
(the examples vary, the seeds are fixed). One run's standard error (``bootstrap_standard_error``, stored per metric in
its record) is the spread of its metric over resamples of its own examples.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_RESAMPLES = 1000
DEFAULT_CONFIDENCE = 0.95


def _ratio(s: np.ndarray) -> np.ndarray:
    return np.divide(s[..., 0], s[..., 1], out=np.zeros(s.shape[:-1]), where=s[..., 1] != 0)


def _f1(s: np.ndarray) -> np.ndarray:
    tp, fp, fn = s[..., 0], s[..., 1], s[..., 2]
    denominator = 2 * tp + fp + fn
    return np.divide(2 * tp, denominator, out=np.zeros(s.shape[:-1]), where=denominator != 0)


def _mcc(s: np.ndarray) -> np.ndarray:
    tp, tn, fp, fn = (s[..., i].astype(float) for i in range(4))
    denominator = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return np.divide(tp * tn - fp * fn, denominator, out=np.zeros(s.shape[:-1]), where=denominator != 0)


def _pearson(s: np.ndarray) -> np.ndarray:
    x, y, xx, yy, xy, n = (s[..., i] for i in range(6))
    covariance = n * xy - x * y
    scale = np.sqrt(np.clip(n * xx - x * x, 0, None) * np.clip(n * yy - y * y, 0, None))
    return np.divide(covariance, scale, out=np.zeros(s.shape[:-1]), where=scale > 0)


#: stat kind -> metric of the column sums (vectorised over leading axes)
FROM_SUMS: dict[str, Callable[[np.ndarray], np.ndarray]] = {"mean": _ratio, "f1": _f1, "mcc": _mcc,
                                                            "pearson": _pearson}


def metric_from_sums(kind: str, sums: np.ndarray) -> np.ndarray:
    """The metric of summed per-example statistics of ``kind``."""
    return FROM_SUMS[kind](np.asarray(sums, dtype=float))


def classification_stats(metric: str, predictions: Sequence[int] | np.ndarray,
                         references: Sequence[int] | np.ndarray) -> tuple[str, np.ndarray]:
    """(kind, rows) of a sequence-classification metric: accuracy, f1 (positive class 1) or matthews_correlation."""
    predicted, gold = np.asarray(predictions), np.asarray(references)
    if metric == "accuracy":
        return "mean", np.stack([(predicted == gold).astype(float), np.ones(len(gold))], axis=1)
    tp = (predicted == 1) & (gold == 1)
    tn = (predicted == 0) & (gold == 0)
    fp = (predicted == 1) & (gold == 0)
    fn = (predicted == 0) & (gold == 1)
    if metric == "f1":
        return "f1", np.stack([tp, fp, fn], axis=1).astype(float)
    if metric == "matthews_correlation":
        return "mcc", np.stack([tp, tn, fp, fn], axis=1).astype(float)
    raise ValueError(f"no per-example statistics for metric {metric!r}")


def correlation_stats(metric: str, predictions: Sequence[float] | np.ndarray,
                      references: Sequence[float] | np.ndarray) -> tuple[str, np.ndarray]:
    """(kind, rows) of pearson or spearmanr (ranks over the whole split)."""
    from scipy.stats import rankdata

    x, y = np.asarray(predictions, dtype=float), np.asarray(references, dtype=float)
    if metric == "spearmanr":
        x, y = rankdata(x), rankdata(y)
    elif metric != "pearson":
        raise ValueError(f"no per-example statistics for metric {metric!r}")
    # centred on the split's means: the correlation of any resample is unchanged (it is shift-invariant), and the
    # raw-sum formula no longer cancels away every digit when the values sit far from zero (x + 1e8)
    x, y = x - x.mean(), y - y.mean()
    return "pearson", np.stack([x, y, x * x, y * y, x * y, np.ones(len(x))], axis=1)


def bootstrap_standard_error(rows: np.ndarray, kind: str, resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> float:
    """The standard deviation of the metric of ``rows`` over ``resamples`` bootstrap resamples of its examples: the
    standard error of one run's score that the scored examples give (not the seeds' spread)."""
    rows = np.asarray(rows, dtype=float)
    return float(np.std(_resampled_metrics(rows, kind, resamples, seed), ddof=1))


def _resampled_metrics(rows: np.ndarray, kind: str, resamples: int, seed: int) -> np.ndarray:
    draws = np.zeros(resamples)
    for start, index in _resamples(len(rows), resamples, seed):
        draws[start:start + len(index)] = metric_from_sums(kind, rows[index].sum(1))
    return draws


def _resamples(count: int, resamples: int, seed: int) -> Iterator[tuple[int, np.ndarray]]:
    """(first draw, example indices of each draw) in chunks that bound the memory of one gather."""
    rng = np.random.default_rng(seed)
    chunk = max(1, 4_000_000 // max(count, 1))
    for start in range(0, resamples, chunk):
        yield start, rng.integers(0, count, size=(min(chunk, resamples - start), count))


@dataclass(frozen=True)
class PairedDifference:
    """Score(candidate) − score(reference), averaged over paired seeds, with a bootstrap percentile interval."""

    difference: float
    low: float
    high: float
    seeds: int
    examples: int
    resamples: int
    confidence: float


def paired_bootstrap(pairs: Sequence[tuple[np.ndarray, np.ndarray]], kind: str, resamples: int = DEFAULT_RESAMPLES,
                     confidence: float = DEFAULT_CONFIDENCE, seed: int = 0) -> PairedDifference:
    """Paired bootstrap of the score difference over examples. ``pairs``: per seed, (candidate rows, reference rows),
    both over the same examples in the same order (every seed pair on the same examples, e.g. one eval split)."""
    if not pairs:
        raise ValueError("paired_bootstrap needs at least one (candidate, reference) pair")
    count = len(pairs[0][0])
    for candidate, reference in pairs:
        if len(candidate) != count or len(reference) != count:
            raise ValueError(f"paired runs must be scored on the same examples; got {len(candidate)} and "
                             f"{len(reference)} rows where {count} were expected")
    observed = float(np.mean([metric_from_sums(kind, a.sum(0)) - metric_from_sums(kind, b.sum(0))
                              for a, b in pairs]))
    draws = np.zeros(resamples)
    for start, index in _resamples(count, resamples, seed):
        diff = np.zeros(len(index))
        for candidate, reference in pairs:
            diff += metric_from_sums(kind, candidate[index].sum(1)) - metric_from_sums(kind, reference[index].sum(1))
        draws[start:start + len(index)] = diff / len(pairs)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return PairedDifference(observed, float(low), float(high), len(pairs), count, resamples, confidence)
