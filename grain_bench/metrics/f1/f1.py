"""Binary F1 of the positive class (label 1), the GLUE MRPC/QQP definition, as an ``evaluate`` module."""

import datasets
import evaluate
import numpy as np
from sklearn.metrics import f1_score


class F1(evaluate.Metric):
    """F1 = 2PR/(P+R) of class 1; 0.0 when there is no true positive (no predicted or no reference positives)."""

    def _info(self):
        return evaluate.MetricInfo(
            description="Binary F1 score of the positive class (label 1).",
            citation="GLUE (Wang et al., 2019)",
            inputs_description="predictions and references: lists of 0/1 class ids",
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references):
        if len(references) == 0:
            raise ValueError("F1 of an empty set is undefined")
        score = f1_score(np.asarray(references), np.asarray(predictions), pos_label=1, average="binary",
                         zero_division=0)
        return {"f1": float(score)}
