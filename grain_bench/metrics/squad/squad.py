"""SQuAD v1.1 exact match and F1 with the official answer normalisation (evaluate-v1.1.py), as an ``evaluate`` module.

Scores are fractions in [0, 1] (the official script prints them x100).
"""

import re
import string
from collections import Counter

import datasets
import evaluate

_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation, drop the articles a/an/the, collapse whitespace (official order)."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def f1_score(prediction: str, ground_truth: str) -> float:
    """Token-overlap F1 of normalised answers (0 when nothing overlaps, also when both are empty: v1.1)."""
    prediction_tokens = normalize_answer(prediction).split()
    ground_truth_tokens = normalize_answer(ground_truth).split()
    common = Counter(prediction_tokens) & Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(prediction_tokens)
    recall = num_same / len(ground_truth_tokens)
    return 2 * precision * recall / (precision + recall)


def exact_match_score(prediction: str, ground_truth: str) -> float:
    """1.0 when the normalised strings are equal."""
    return float(normalize_answer(prediction) == normalize_answer(ground_truth))


def max_over_ground_truths(metric_fn, prediction: str, ground_truths) -> float:
    """The best score against any of the reference answers."""
    return max(metric_fn(prediction, truth) for truth in ground_truths)


class Squad(evaluate.Metric):
    """Mean over questions of the best EM / F1 against the question's reference answers."""

    def _info(self):
        return evaluate.MetricInfo(
            description="SQuAD v1.1 exact match and token F1 (official normalisation), as fractions.",
            citation="Rajpurkar et al. (2016), SQuAD: 100,000+ Questions for Machine Comprehension of Text",
            inputs_description="predictions: answer strings; references: lists of reference answer strings",
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Sequence(datasets.Value("string"))}),
        )

    def _compute(self, predictions, references):
        if len(references) == 0:
            raise ValueError("SQuAD scores of an empty set are undefined")
        exact = f1 = 0.0
        for prediction, truths in zip(predictions, references):
            if not truths:
                raise ValueError("every SQuAD v1.1 question needs at least one reference answer")
            exact += max_over_ground_truths(exact_match_score, prediction, truths)
            f1 += max_over_ground_truths(f1_score, prediction, truths)
        return {"exact_match": exact / len(references), "f1": f1 / len(references)}
