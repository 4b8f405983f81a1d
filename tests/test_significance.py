"""Paired significance: per-example statistics give back each metric, the paired bootstrap matches hand-computed
cases, and tables and the page show the intervals."""

from __future__ import annotations

import gzip
import json
import os

import numpy as np
import pytest

from grain_bench.significance import (
    bootstrap_standard_error,
    classification_stats,
    correlation_stats,
    metric_from_sums,
    paired_bootstrap,
)


def test_column_sums_give_back_each_metric():
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    rng = np.random.default_rng(3)
    gold, predicted = rng.integers(0, 2, 300), rng.integers(0, 2, 300)
    for metric, reference in (("accuracy", accuracy_score), ("f1", f1_score),
                              ("matthews_correlation", matthews_corrcoef)):
        kind, rows = classification_stats(metric, predicted, gold)
        assert metric_from_sums(kind, rows.sum(0)) == pytest.approx(reference(gold, predicted), abs=1e-12), metric
    x, y = rng.normal(size=200), rng.normal(size=200)
    kind, rows = correlation_stats("pearson", x, y)
    assert metric_from_sums(kind, rows.sum(0)) == pytest.approx(pearsonr(x, y)[0], abs=1e-9)
    kind, rows = correlation_stats("spearmanr", x, y)
    assert metric_from_sums(kind, rows.sum(0)) == pytest.approx(spearmanr(x, y)[0], abs=1e-9)


@pytest.mark.parametrize("offset", [0.0, 1e3, 1e8])
def test_correlation_from_sums_keeps_its_precision_far_from_zero(offset):
    """Pearson from column sums of raw values lost every digit at +1e8 (0.15 where scipy says 1.0); centred rows keep
    the full split's and every resample's correlation equal to scipy's."""
    from scipy.stats import pearsonr

    rng = np.random.default_rng(5)
    gold = rng.normal(size=400)
    predicted = gold + 0.3 * rng.normal(size=400)
    kind, rows = correlation_stats("pearson", predicted + offset, gold + offset)
    assert metric_from_sums(kind, rows.sum(0)) == pytest.approx(pearsonr(predicted, gold)[0], abs=1e-9)
    index = rng.integers(0, 400, 400)  # one bootstrap resample: the sums of its rows
    assert metric_from_sums(kind, rows[index].sum(0)) == pytest.approx(
        pearsonr(predicted[index], gold[index])[0], abs=1e-9)


def test_a_runs_standard_error_is_the_textbook_one():
    """The bootstrap standard error of one run's score: sqrt(p (1 - p) / n) for an accuracy, (1 - r²) / sqrt(n) for a
    Pearson correlation (the large-sample formula), within the bootstrap's own noise; the same draws every time."""
    rng = np.random.default_rng(11)
    correct = rng.random(2000) < 0.8
    p = correct.mean()
    se = bootstrap_standard_error(accuracy_rows(correct), "mean")
    assert se == pytest.approx(np.sqrt(p * (1 - p) / 2000), rel=0.08)
    assert bootstrap_standard_error(accuracy_rows(correct), "mean") == se  # deterministic
    assert bootstrap_standard_error(accuracy_rows(correct[:500]), "mean") > 1.5 * se  # fewer examples, wider
    gold = rng.normal(size=1000)
    kind, rows = correlation_stats("pearson", gold + 0.5 * rng.normal(size=1000), gold)
    r = metric_from_sums(kind, rows.sum(0))
    assert bootstrap_standard_error(rows, kind) == pytest.approx((1 - r * r) / np.sqrt(1000), rel=0.15)
    assert bootstrap_standard_error(accuracy_rows(np.ones(50)), "mean") == 0.0  # every draw the same score


def accuracy_rows(correct) -> np.ndarray:
    correct = np.asarray(correct, dtype=float)
    return np.stack([correct, np.ones(len(correct))], axis=1)


def test_two_examples_by_hand():
    """Candidate right and reference wrong on example 1, both right on example 2: the observed difference is 0.5, and
    a resample of two examples has difference 1, 0.5 or 0 with probabilities 1/4, 1/2, 1/4, so the 95% percentile
    interval is [0, 1]."""
    result = paired_bootstrap([(accuracy_rows([1, 1]), accuracy_rows([0, 1]))], "mean", resamples=2000)
    assert (result.difference, result.low, result.high) == (0.5, 0.0, 1.0)
    assert (result.seeds, result.examples, result.resamples) == (1, 2, 2000)


def test_a_constant_difference_has_no_spread_and_seeds_are_averaged():
    always = paired_bootstrap([(accuracy_rows([1] * 50), accuracy_rows([0] * 50))], "mean")
    assert (always.difference, always.low, always.high) == (1.0, 1.0, 1.0)
    # seed 1: candidate +0.2 on every resample; seed 2: +0.4 (each example a fixed share): mean +0.3
    pairs = [(accuracy_rows([1] * 10), accuracy_rows([1] * 8 + [0] * 2)),
             (accuracy_rows([1] * 10), accuracy_rows([1] * 6 + [0] * 4))]
    both = paired_bootstrap(pairs, "mean", resamples=500)
    assert both.difference == pytest.approx(0.3) and both.seeds == 2
    assert both.low < 0.3 < both.high  # the examples that differ are resampled, so the interval is not a point


def test_interval_agrees_with_the_normal_approximation_on_many_examples():
    rng = np.random.default_rng(0)
    candidate, reference = rng.random(2000) < 0.8, rng.random(2000) < 0.75
    result = paired_bootstrap([(accuracy_rows(candidate), accuracy_rows(reference))], "mean", resamples=4000)
    per_example = candidate.astype(float) - reference.astype(float)
    half = 1.96 * per_example.std(ddof=1) / np.sqrt(len(per_example))
    assert result.difference == pytest.approx(per_example.mean())
    assert result.low == pytest.approx(per_example.mean() - half, abs=0.004)
    assert result.high == pytest.approx(per_example.mean() + half, abs=0.004)


def test_runs_on_different_examples_cannot_be_paired():
    with pytest.raises(ValueError, match="same examples"):
        paired_bootstrap([(accuracy_rows([1, 0, 1]), accuracy_rows([1, 0]))], "mean")


# ---- tables and the page ------------------------------------------------------------------------------------------
def _write(results, record, correct):
    from grain_bench.predictions import FORMAT, relative_path

    relative = relative_path(record.run_id)
    os.makedirs(os.path.join(results, "predictions"), exist_ok=True)
    doc = {"format": FORMAT, "run_id": record.run_id, "task": "tweets", "split": "test", "metric": "accuracy",
           "predictions": list(correct), "stat_kind": "mean", "stats": accuracy_rows(correct).tolist()}
    with gzip.open(os.path.join(results, relative), "wt") as handle:
        json.dump(doc, handle)
    return relative


@pytest.fixture
def paired_board(tmp_path):
    """grain and heads at 0.2 and dense, one seed, two scored examples: heads = the hand case against grain."""
    from test_leaderboard import make_record, write_store

    from grain_bench.records import RunRecord

    results = str(tmp_path / "results")
    records = []
    for method, density, correct in (("dense", 1.0, [1, 1]), ("grain", 0.2, [0, 1]), ("heads", 0.2, [1, 1])):
        record = make_record("tweets", method, density, 1, float(np.mean(correct)), 1.0)
        record = RunRecord(**{**record.__dict__, "predictions": _write(results, record, correct)})
        records.append(record)
    write_store(results, records)
    return results


def test_table_shows_the_hand_computed_interval(paired_board):
    from grain_bench.leaderboard.tables import build_report, show_table

    table = build_report(paired_board, versus="grain").comparison.table.set_index("method")
    assert table.loc["grain", "versus"] == "reference"
    assert (table.loc["heads", "diff"], table.loc["heads", "diff_low"], table.loc["heads", "diff_high"]) == (
        0.5, 0.0, 1.0)
    assert table.loc["dense", "diff"] == 0.5  # dense has one density: it pairs with grain at 0.2
    text, _ = show_table(paired_board, "markdown", versus="grain")
    header = text.splitlines()[0]
    assert "vs grain (pts)" in header
    assert "+50.0 [0.0, 100.0]" in text and "ref." in text
    text, _ = show_table(paired_board, "json", versus="grain")
    rows = {row["method"]: row for row in json.loads(text)["rows"]}
    assert (rows["heads"]["diff"], rows["heads"]["diff_low"], rows["heads"]["diff_high"]) == (0.5, 0.0, 1.0)
    text, notes = show_table(paired_board, "markdown", versus=None)
    assert "vs grain" not in text


def test_page_shows_the_interval(paired_board, tmp_path):
    from grain_bench.leaderboard.site import publish

    index = publish(paired_board, str(tmp_path / "site"), versus="grain")
    with open(index) as handle:
        page = handle.read()
    assert "vs grain (pts, 95% CI)" in page and "+50.0 [0.0, 100.0]" in page


def test_rows_without_stored_predictions_say_so(paired_board):
    from grain_bench.leaderboard.tables import build_report

    os.remove(os.path.join(paired_board, "predictions", os.listdir(os.path.join(paired_board, "predictions"))[0]))
    report = build_report(paired_board, versus="grain")
    assert any("no paired interval against grain" in note for note in report.notes)
