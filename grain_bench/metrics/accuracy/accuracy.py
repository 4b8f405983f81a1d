"""Accuracy: fraction of predictions equal to the references (the GLUE definition), as an ``evaluate`` module."""

import datasets
import evaluate
import numpy as np


class Accuracy(evaluate.Metric):
    """Accuracy of class predictions."""

    def _info(self):
        return evaluate.MetricInfo(
            description="Fraction of predictions equal to the references.",
            citation="",
            inputs_description="predictions and references: lists of integer class ids",
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references):
        predictions = np.asarray(predictions)
        references = np.asarray(references)
        if references.size == 0:
            raise ValueError("accuracy of an empty set is undefined")
        return {"accuracy": float((predictions == references).mean())}
