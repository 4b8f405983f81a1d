"""Pearson correlation (the GLUE STS-B metric), as an ``evaluate`` module."""

import datasets
import evaluate
import numpy as np
from scipy.stats import pearsonr


class Pearson(evaluate.Metric):
    """Pearson r of predicted and reference scores; 0.0 when either side is constant (r is undefined there)."""

    def _info(self):
        return evaluate.MetricInfo(
            description="Pearson correlation coefficient between predicted and reference scores.",
            citation="GLUE (Wang et al., 2019)",
            inputs_description="predictions and references: lists of floats",
            features=datasets.Features({"predictions": datasets.Value("float64"),
                                        "references": datasets.Value("float64")}),
        )

    def _compute(self, predictions, references):
        predictions = np.asarray(predictions, dtype=np.float64)
        references = np.asarray(references, dtype=np.float64)
        if references.size < 2:
            raise ValueError("Pearson correlation needs at least two pairs")
        if np.ptp(predictions) == 0 or np.ptp(references) == 0:
            return {"pearson": 0.0}
        return {"pearson": float(pearsonr(predictions, references)[0])}
