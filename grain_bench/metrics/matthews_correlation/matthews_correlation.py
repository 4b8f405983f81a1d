"""Matthews correlation coefficient (the GLUE CoLA metric), as an ``evaluate`` module."""

import datasets
import evaluate
import numpy as np
from sklearn.metrics import matthews_corrcoef


class MatthewsCorrelation(evaluate.Metric):
    """MCC of class predictions; 0.0 when either side holds a single class (sklearn's convention)."""

    def _info(self):
        return evaluate.MetricInfo(
            description="Matthews correlation coefficient between predicted and reference classes.",
            citation="Matthews (1975); GLUE (Wang et al., 2019)",
            inputs_description="predictions and references: lists of integer class ids",
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references):
        if len(references) == 0:
            raise ValueError("Matthews correlation of an empty set is undefined")
        return {"matthews_correlation": float(matthews_corrcoef(np.asarray(references), np.asarray(predictions)))}
