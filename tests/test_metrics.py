"""Metric modules against values computed by hand on small fixed predictions, with edge cases."""

from __future__ import annotations

import math

import pytest


@pytest.fixture(scope="module")
def metric():
    """``load_metric`` of the local modules (no network)."""
    from grain_bench.metrics import load_metric

    return load_metric


def test_every_metric_module_is_available():
    from grain_bench.metrics import available_metrics

    assert {"accuracy", "matthews_correlation", "f1", "pearson", "spearmanr", "squad", "conlleval"} <= set(
        available_metrics())


def test_matthews_correlation(metric):
    # TP=2 FP=1 TN=2 FN=0: (2*2 - 1*0) / sqrt(3*2*3*2) = 4/6
    out = metric("matthews_correlation").compute(predictions=[1, 1, 0, 0, 1], references=[1, 0, 0, 0, 1])
    assert out["matthews_correlation"] == pytest.approx(2 / 3)
    inverted = metric("matthews_correlation").compute(predictions=[0, 1], references=[1, 0])
    assert inverted["matthews_correlation"] == pytest.approx(-1.0)


def test_matthews_correlation_all_one_class_is_zero(metric):
    out = metric("matthews_correlation").compute(predictions=[1, 1, 1, 1], references=[1, 0, 1, 0])
    assert out["matthews_correlation"] == 0.0


def test_f1_binary_positive_class(metric):
    # TP=2 FP=1 FN=1: P = R = 2/3
    out = metric("f1").compute(predictions=[1, 1, 0, 0, 1], references=[1, 0, 0, 1, 1])
    assert out["f1"] == pytest.approx(2 / 3)


def test_f1_edge_cases(metric):
    assert metric("f1").compute(predictions=[0, 0, 0], references=[1, 0, 1])["f1"] == 0.0  # nothing predicted
    assert metric("f1").compute(predictions=[1, 1], references=[1, 1])["f1"] == 1.0
    with pytest.raises(ValueError):
        metric("f1").compute(predictions=[], references=[])


def test_pearson_by_hand(metric):
    # deviations (-1, 0, 1) and (-1, 1, 0): cov 1, variances 2 and 2 -> 0.5
    assert metric("pearson").compute(predictions=[1, 2, 3], references=[1, 3, 2])["pearson"] == pytest.approx(0.5)
    assert metric("pearson").compute(predictions=[1, 2, 3, 4], references=[8, 6, 4, 2])["pearson"] == pytest.approx(-1)


def test_spearman_ranks_and_ties(metric):
    # monotonic but not linear: Spearman 1, Pearson below 1
    assert metric("spearmanr").compute(predictions=[1, 2, 3, 4], references=[1, 4, 9, 16])["spearmanr"] == \
        pytest.approx(1.0)
    assert metric("pearson").compute(predictions=[1, 2, 3, 4], references=[1, 4, 9, 16])["pearson"] < 0.99
    # ties get average ranks: (1.5, 1.5, 3) vs (1, 2, 3) -> 1.5 / sqrt(1.5 * 2)
    out = metric("spearmanr").compute(predictions=[1, 1, 2], references=[1, 2, 3])
    assert out["spearmanr"] == pytest.approx(1.5 / math.sqrt(3.0))


def test_correlations_of_constant_predictions_are_zero(metric):
    assert metric("pearson").compute(predictions=[2, 2, 2], references=[1, 2, 3])["pearson"] == 0.0
    assert metric("spearmanr").compute(predictions=[2, 2, 2], references=[1, 2, 3])["spearmanr"] == 0.0


def test_squad_normalisation():
    from grain_bench.metrics.squad.squad import normalize_answer

    assert normalize_answer("The  Cat, sat!") == "cat sat"
    assert normalize_answer("an apple.") == "apple"
    assert normalize_answer("U.S. Army") == "us army"
    assert normalize_answer("theater Anne") == "theater anne"  # articles only as whole words


def test_squad_exact_match_and_f1(metric):
    squad = metric("squad")
    out = squad.compute(predictions=["the cat", "cat sat on mat"], references=[["A cat"], ["the cat sat"]])
    # q1: EM 1, F1 1; q2: tokens (cat sat on mat) vs (cat sat): P 1/2, R 1 -> F1 2/3, EM 0
    assert out["exact_match"] == pytest.approx(0.5)
    assert out["f1"] == pytest.approx((1 + 2 / 3) / 2)


def test_squad_best_reference_counts(metric):
    out = metric("squad").compute(predictions=["Paris"], references=[["paris, france", "Paris!"]])
    assert out == {"exact_match": 1.0, "f1": 1.0}


def test_squad_empty_prediction(metric):
    out = metric("squad").compute(predictions=["", "The"], references=[["Denver Broncos"], ["the"]])
    # an empty prediction scores 0; "The" normalises to "" as well: v1.1 gives EM 1 (equal strings) but F1 0
    assert out["exact_match"] == pytest.approx(0.5)
    assert out["f1"] == 0.0


def test_conlleval_partial_entity(metric):
    out = metric("conlleval").compute(predictions=[["B-PER", "O", "O", "B-LOC"]],
                                      references=[["B-PER", "I-PER", "O", "B-LOC"]])
    # gold PER(0-1), LOC(3); predicted PER(0), LOC(3): 1 correct of 2 and 2
    assert out["precision"] == pytest.approx(0.5)
    assert out["recall"] == pytest.approx(0.5)
    assert out["f1"] == pytest.approx(0.5)
    assert out["accuracy"] == pytest.approx(0.75)


def test_conlleval_chunk_rules():
    from grain_bench.metrics.conlleval.conlleval import chunks

    assert chunks(["I-PER", "I-PER", "B-PER"]) == {("PER", 0, 1), ("PER", 2, 2)}  # IOB1
    assert chunks(["O", "I-LOC", "I-LOC"]) == {("LOC", 1, 2)}  # I- after O starts a chunk
    assert chunks(["B-PER", "I-LOC"]) == {("PER", 0, 0), ("LOC", 1, 1)}  # a type change ends one
    assert chunks(["B-ORG", "I-ORG", "I-ORG"]) == {("ORG", 0, 2)}


def test_conlleval_iob1_and_iob2_score_alike(metric):
    out = metric("conlleval").compute(predictions=[["O", "B-LOC", "I-LOC", "O"]],
                                      references=[["O", "I-LOC", "I-LOC", "O"]])
    assert out["f1"] == 1.0


def test_conlleval_no_predicted_entities(metric):
    out = metric("conlleval").compute(predictions=[["O", "O"], ["O"]], references=[["B-PER", "I-PER"], ["B-ORG"]])
    assert (out["precision"], out["recall"], out["f1"]) == (0.0, 0.0, 0.0)
    assert out["accuracy"] == 0.0


def test_conlleval_micro_over_types_and_sentences(metric):
    out = metric("conlleval").compute(
        predictions=[["B-PER", "O"], ["B-ORG", "B-LOC"], ["B-MISC"]],
        references=[["B-PER", "O"], ["B-ORG", "O"], ["B-PER"]])
    # predicted 4 chunks, 2 correct (PER, ORG); 3 gold -> P 1/2, R 2/3, F1 4/7
    assert out["precision"] == pytest.approx(0.5)
    assert out["recall"] == pytest.approx(2 / 3)
    assert out["f1"] == pytest.approx(4 / 7)
