"""Spearman rank correlation (the GLUE STS-B metric), as an ``evaluate`` module."""

import datasets
import evaluate
import numpy as np
from scipy.stats import spearmanr


class SpearmanR(evaluate.Metric):
    """Spearman rho (ties get average ranks); 0.0 when either side is constant (rho is undefined there)."""

    def _info(self):
        return evaluate.MetricInfo(
            description="Spearman rank correlation between predicted and reference scores.",
            citation="GLUE (Wang et al., 2019)",
            inputs_description="predictions and references: lists of floats",
            features=datasets.Features({"predictions": datasets.Value("float64"),
                                        "references": datasets.Value("float64")}),
        )

    def _compute(self, predictions, references):
        predictions = np.asarray(predictions, dtype=np.float64)
        references = np.asarray(references, dtype=np.float64)
        if references.size < 2:
            raise ValueError("Spearman correlation needs at least two pairs")
        if np.ptp(predictions) == 0 or np.ptp(references) == 0:
            return {"spearmanr": 0.0}
        return {"spearmanr": float(spearmanr(predictions, references)[0])}
