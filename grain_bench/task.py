"""The task contract: the adapter interface every task implements (sequence, regression, token and span outputs).

A task loads its raw splits (``datasets.Dataset``), encodes them for a tokenizer and scores predictions with
project-local metrics; what its kind of output means (model class, losses, per-sequence predictions) is its head's
(``grain_bench.heads``), and what its data is, ``grain_bench.data``'s (re-exported here for task plugins). Every method
sees the same splits, encoding and metrics. This module imports no torch at import time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from grain_bench.data import (
    DataIdentity,
    file_sha256,
    hub_offline,
    hub_reachable,
    is_identity,
    load_hub_dataset,
    resolve_hub_revision,
)
from grain_bench.errors import DataError
from grain_bench.heads import TaskHead, task_head

__all__ = ["DataIdentity", "EncodedSplit", "Task", "file_sha256", "hub_offline", "hub_reachable", "is_identity",
           "load_hub_dataset", "resolve_hub_revision"]

#: columns a task's raw data names its examples by (``Task.example_ids``), in the order they are looked for
ID_COLUMNS = ("id", "idx", "guid")


@dataclass
class EncodedSplit:
    """A tokenised split: ``features`` feed the model; ``raw`` and ``extra`` are what scoring needs."""

    name: str
    features: Any  # datasets.Dataset with model input columns (+ "labels")
    raw: Any  # the raw datasets.Dataset
    extra: dict[str, Any]


class Task:
    """Base class of a task adapter."""

    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    description: ClassVar[str] = ""
    head: ClassVar[str] = "sequence"  # a head kind of grain_bench.heads: sequence | regression | token | span
    num_labels: ClassVar[int] = 2
    #: class names by label id (saved models get them as ``id2label``); None for regression and span heads
    label_names: ClassVar[tuple[str, ...] | None] = None
    metrics: ClassVar[tuple[str, ...]] = ("accuracy",)
    primary_metric: ClassVar[str] = "accuracy"
    lower_is_better: ClassVar[tuple[str, ...]] = ()
    #: the split that scores are reported on; ``dev`` is used for selection (e.g. ``heads`` auto mode)
    eval_split: ClassVar[str] = "test"
    text_fields: ClassVar[tuple[str, ...]] = ("text",)
    label_field: ClassVar[str] = "label"
    #: hub dataset the task loads without --data-dir (None: it has no hub source), and the ref it follows
    hub_id: ClassVar[str | None] = None
    hub_ref: ClassVar[str] = "main"
    #: values of named recipes for this task, applied under the user's overrides (``grain_bench.recipes.get_recipe``):
    #: {"quick": {"max_length": 128, ...}}; what each value was chosen from belongs in the task's docs
    recipe_values: ClassVar[dict[str, dict[str, Any]]] = {}

    @classmethod
    def task_head(cls) -> TaskHead:
        """What this task's kind of output means (model class, losses, per-sequence predictions)."""
        return task_head(cls.head)

    def __init__(self, data_dir: str | None = None, revision: str | None = None):
        self.data_dir = data_dir
        self.revision = revision  # the hub branch, tag or commit to load (None: ``hub_ref``)
        self._commit: str | None = None
        self._raw: dict[str, Any] | None = None

    # ---- data identity ------------------------------------------------------------------------------------------
    def local_files(self) -> dict[str, str]:
        """Role (e.g. "train") -> path of every file the task reads from ``data_dir`` (or its packaged data)."""
        raise DataError(f"task {self.name!r} reads no local files; it loads {self.hub_id or 'nothing'} from the hub")

    def hub_revision(self) -> str:
        """The hub commit this task loads: what ``revision`` (default ``hub_ref``) names when first asked."""
        if self.hub_id is None:
            raise DataError(f"task {self.name!r} has no hub dataset; give --data-dir")
        if self._commit is None:
            self._commit = resolve_hub_revision(self.name, self.hub_id, self.revision or self.hub_ref)
        return self._commit

    def data_identity(self) -> DataIdentity:
        """What data this task reads: local files by content, or the hub dataset at a commit."""
        if self.data_dir is not None or self.hub_id is None:
            return DataIdentity.of_files(self.local_files(), self.data_dir or "(packaged data)")
        revision = self.hub_revision()
        return DataIdentity(f"hub:{self.hub_id}@{revision}", self.hub_id, revision)

    # ---- data ---------------------------------------------------------------------------------------------------
    def load_raw(self) -> dict[str, Any]:
        """Raw splits by name ("train", "dev", and "test" when the task has a labelled test split)."""
        raise NotImplementedError

    def splits(self) -> dict[str, Any]:
        """``load_raw`` once, cached."""
        if self._raw is None:
            self._raw = self.load_raw()
            missing = {"train", "dev", self.eval_split} - set(self._raw)
            if missing:
                raise DataError(f"task {self.name!r}: data has no {', '.join(sorted(missing))} split")
            for name, split in self._raw.items():
                self.check_labels(name, split)
        return self._raw

    def check_labels(self, split_name: str, split) -> None:
        """Raise ``DataError`` when a sequence-level label is not what the head takes (a class id, or a finite number
        for regression): one NaN label makes every loss NaN. Token and span tasks check their labels when reading."""
        import numpy as np

        if not self.task_head().sequence_labels or self.label_field not in split.column_names:
            return
        labels = np.asarray(split[self.label_field], dtype=float)
        bad, expected = self.task_head().check_label(labels, self.num_labels)
        if len(bad):
            raise DataError(f"task {self.name!r}: split {split_name!r} row {int(bad[0])} has label {labels[bad[0]]!r}"
                            f" ({len(bad)} such row(s)); expected {expected}")

    def select(self, split: str, limit: int | None = None):
        """The raw split, cut to its first ``limit`` rows (a task may choose them otherwise: MNLI takes half matched,
        half mismatched)."""
        raw = self.splits()[split]
        if limit is not None and limit < len(raw):
            raw = raw.select(range(limit))
        return raw

    def encode(self, split: str, tokenizer, max_length: int, limit: int | None = None) -> EncodedSplit:
        """Tokenise ``split`` (``select``'s rows) for a sequence-level head: one text, or a pair truncated
        longest-first."""
        raw = self.select(split, limit)
        fields = self.text_fields

        def tokenize(batch):
            texts = [batch[f] for f in fields]
            out = tokenizer(*texts, truncation=True, max_length=max_length)
            out["labels"] = batch[self.label_field]
            return out

        features = raw.map(tokenize, batched=True, remove_columns=raw.column_names,
                           desc=f"tokenising {self.name}/{split}")
        return EncodedSplit(split, features, raw, {})

    def collate(self, tokenizer):
        """A collate function that pads a list of feature dicts into a batch of tensors."""
        import torch

        def collate(rows):
            labels = [row["labels"] for row in rows]
            inputs = [{k: v for k, v in row.items() if k != "labels"} for row in rows]
            batch = tokenizer.pad(inputs, return_tensors="pt")
            batch["labels"] = torch.tensor(labels, dtype=self.task_head().label_dtype())
            return dict(batch)

        return collate

    # ---- distillation -------------------------------------------------------------------------------------------
    def model_inputs(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The part of a batch the model takes (labels removed, so no loss is computed inside the model)."""
        return {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}

    def kd_loss(self, student_out, teacher_out, batch, temperature: float):
        """Logit distillation loss of this head (``TaskHead.kd_loss``: soft cross-entropy at ``temperature``; MSE for
        regression; per token or per span position)."""
        return self.task_head().kd_loss(student_out, teacher_out, batch, temperature)

    def hard_loss(self, outputs, batch):
        """Supervised loss against the gold labels (teacher fine-tuning; ``TaskHead.hard_loss``)."""
        return self.task_head().hard_loss(outputs, batch)

    # ---- evaluation ---------------------------------------------------------------------------------------------
    def model_outputs(self, model, encoded: EncodedSplit, tokenizer, batch_size: int, progress: bool = True):
        """Yield (batch, model output) over ``encoded`` in order, in eval mode without gradients (train mode
        restored)."""
        import torch
        from torch.utils.data import DataLoader
        from tqdm.auto import tqdm

        loader = DataLoader(encoded.features, batch_size=batch_size, shuffle=False, collate_fn=self.collate(tokenizer))
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        try:
            with torch.inference_mode():
                for batch in tqdm(loader, desc=f"eval {self.name}/{encoded.name}", leave=False, disable=not progress):
                    batch = {k: v.to(device) for k, v in batch.items()}
                    yield batch, model(**self.model_inputs(batch))
        finally:
            model.train(was_training)

    def predict(self, model, encoded: EncodedSplit, tokenizer, batch_size: int, progress: bool = True):
        """Logits of every example, concatenated (numpy)."""
        import numpy as np

        outputs = [out.logits.float().cpu().numpy()
                   for _, out in self.model_outputs(model, encoded, tokenizer, batch_size, progress)]
        return np.concatenate(outputs) if outputs else np.zeros((0, self.num_labels))

    def score(self, logits, encoded: EncodedSplit) -> dict[str, float]:
        """Metrics of ``logits`` against the split's labels."""
        import numpy as np

        from grain_bench.metrics import load_metric

        references = np.asarray(encoded.features["labels"])
        predictions = self.task_head().point_predictions(logits)
        out: dict[str, float] = {}
        for metric in self.metric_modules():
            out.update(load_metric(metric).compute(predictions=predictions.tolist(), references=references.tolist()))
        return {k: float(v) for k, v in out.items() if k in self.metrics}

    def metric_modules(self) -> tuple[str, ...]:
        """Names of the local ``evaluate`` modules that produce ``metrics``."""
        return self.metrics

    def example_stats(self, predictions, encoded: EncodedSplit):
        """(kind, rows): per-example statistics of the primary metric (see ``grain_bench.significance``) for the
        output of ``predict``, so paired runs can be compared by resampling examples; None when there are none."""
        return self.metric_example_stats(self.primary_metric, predictions, encoded)

    def metric_example_stats(self, metric: str, predictions, encoded: EncodedSplit):
        """(kind, rows) of any one of ``metrics`` (the task head's, by default), or None when it has none."""
        import numpy as np

        try:
            return self.task_head().example_stats(metric, predictions, np.asarray(encoded.features["labels"]))
        except ValueError:  # a metric the head has no statistics for
            return None

    def standard_errors(self, predictions, encoded: EncodedSplit, scores: dict[str, float]) -> dict[str, float | None]:
        """A bootstrap standard error over the scored examples of every metric whose per-example statistics give
        back its score in ``scores`` (to 1e-6; a metric without such statistics has none)."""
        from grain_bench.significance import bootstrap_standard_error, metric_from_sums

        out: dict[str, float | None] = {}
        for metric in self.metrics:
            stats = (self.example_stats(predictions, encoded) if metric == self.primary_metric
                     else self.metric_example_stats(metric, predictions, encoded))
            if stats is None or scores.get(metric) is None or len(stats[1]) == 0:
                continue
            kind, rows = stats
            if abs(float(metric_from_sums(kind, rows.sum(0))) - scores[metric]) <= 1e-6:
                out[metric] = bootstrap_standard_error(rows, kind)
        return out

    def prediction_values(self, predictions, encoded: EncodedSplit) -> list:
        """The per-example predictions of ``predict``'s output as JSON values (class ids, numbers, tags, answers)."""
        import numpy as np

        return self.task_head().point_predictions(np.asarray(predictions)).tolist()

    def example_ids(self, encoded: EncodedSplit) -> list:
        """Each scored example's id, as stored beside its prediction: the data's own (SQuAD's question ``id``, GLUE's
        ``idx``) or, for data without one, its position in the scored split (CoNLL sentence index, tweets)."""
        raw = encoded.raw
        for column in ID_COLUMNS:
            if column in raw.column_names:
                return [value if isinstance(value, (str, int)) else str(value) for value in raw[column]]
        return list(range(len(raw)))

    def gold_values(self, encoded: EncodedSplit) -> list:
        """Each scored example's gold answer as JSON values, in ``prediction_values``' form (class ids, numbers; word
        tags and answer texts where a task adapter says so)."""
        import numpy as np

        return np.asarray(encoded.features["labels"]).tolist()

    def chance_predictions(self, encoded: EncodedSplit):
        """What a trivial predictor outputs on ``encoded``, in the form ``score`` takes, or None when the task defines
        none: the split's most frequent class (classification) or its mean label (regression)."""
        import numpy as np

        if "labels" not in encoded.features.column_names or len(encoded.features) == 0:
            return None
        return self.task_head().chance_predictions(np.asarray(encoded.features["labels"]), self.num_labels)

    def chance_stats(self, encoded: EncodedSplit):
        """``example_stats`` of ``chance_predictions`` (None when the task defines no trivial predictor)."""
        predictions = self.chance_predictions(encoded)
        return None if predictions is None else self.example_stats(predictions, encoded)

    def prediction_summary(self, predictions, encoded: EncodedSplit) -> dict[str, Any]:
        """What the predictions look like, for collapse checks (``grain_bench.quality``): a class histogram
        (classification) or the spread of the predictions and of the labels (regression)."""
        summary = self.task_head().prediction_summary(predictions, encoded.features["labels"], self.num_labels,
                                                      self.label_names)
        return summary if summary is not None else {}

    def chance_scores(self, encoded: EncodedSplit) -> dict[str, float]:
        """Scores of ``chance_predictions`` ({} when there are none); a correlation of a constant prediction is 0."""
        import warnings

        predictions = self.chance_predictions(encoded)
        if predictions is None:
            return {}
        with warnings.catch_warnings():  # correlations of a constant warn and return NaN
            warnings.simplefilter("ignore")
            scores = self.score(predictions, encoded)
        return {k: v if math.isfinite(v) else 0.0 for k, v in scores.items()}

    def evaluate(self, model, encoded: EncodedSplit, tokenizer, batch_size: int,
                 progress: bool = True) -> dict[str, float]:
        """Predict and score one encoded split."""
        return self.score(self.predict(model, encoded, tokenizer, batch_size, progress), encoded)

    @classmethod
    def higher_is_better(cls, metric: str) -> bool:
        """Direction of a metric."""
        return metric not in cls.lower_is_better

    @classmethod
    def info(cls) -> dict[str, Any]:
        """Name, version, head and metrics, for listings and records."""
        return {"name": cls.name, "version": cls.version, "head": cls.head, "metrics": list(cls.metrics),
                "primary_metric": cls.primary_metric, "description": cls.description}
