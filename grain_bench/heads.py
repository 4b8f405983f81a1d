"""Task heads: what each kind of output (``sequence``, ``regression``, ``token``, ``span``) means to the suite, in one
place. A ``TaskHead`` says which transformers class carries it (for loading a backbone, compacting it, re-timing it
and the saved model's card), how its labels are stored, its distillation and hard-label losses, and, for heads with
one prediction per sequence, its predictions, per-example statistics, trivial predictor and collapse summary. Tasks
name their head (``Task.head = "token"``) and delegate to it; the token and span tasks keep what is theirs (word tags,
answer spans).

To add a head kind: subclass ``TaskHead`` here, add it to ``HEADS``, and give the saved modeling file
(``modeling_pruned_bert.py``) the compact class its ``compact_class`` names. This module imports no torch at import.
"""

from __future__ import annotations

from typing import Any, ClassVar

from grain_bench.errors import UsageError


class TaskHead:
    """Base of a head kind; the defaults are those of a classification head over whole sequences."""

    name: ClassVar[str] = ""
    #: the transformers Auto class and the BERT class of this head; the compact class in ``modeling_pruned_bert``
    auto_class: ClassVar[str] = "AutoModelForSequenceClassification"
    source_class: ClassVar[str] = "BertForSequenceClassification"
    compact_class: ClassVar[str] = "PrunedBertForSequenceClassification"
    #: the Hugging Face pipeline a saved model of this head serves (its card's ``pipeline_tag``)
    pipeline_tag: ClassVar[str] = "text-classification"
    #: the head's weights whose inputs are the encoder's sequence output (narrowed where hidden dimensions are
    #: pruned); a sequence head reads the pooler's output instead, which keeps its width
    sequence_inputs: ClassVar[tuple[str, ...]] = ()
    #: whether ``Task.check_labels`` checks one label per row (class ids, or finite numbers for regression)
    sequence_labels: ClassVar[bool] = False

    def model_kwargs(self, num_labels: int) -> dict[str, Any]:
        """Keyword arguments of the Auto class's ``from_pretrained``/``from_config`` for ``num_labels`` labels."""
        return {"num_labels": num_labels}

    def label_dtype(self):
        """The torch dtype of a batch's labels."""
        import torch

        return torch.long

    def kd_loss(self, student_out, teacher_out, batch, temperature: float):
        """Logit distillation: soft cross-entropy at ``temperature`` over the logits."""
        from grain_bench.losses import soft_cross_entropy

        return soft_cross_entropy(student_out.logits, teacher_out.logits, temperature)

    def hard_loss(self, outputs, batch):
        """Supervised loss against the gold labels (teacher fine-tuning)."""
        import torch.nn.functional as F

        return F.cross_entropy(outputs.logits, batch["labels"])

    # ---- one prediction per sequence (sequence and regression heads) ------------------------------------------
    def point_predictions(self, logits):
        """One prediction per example from ``predict``'s logits: the class id."""
        return logits.argmax(-1)

    def example_stats(self, metric: str, predictions, references):
        """(kind, rows) of per-example statistics of ``metric`` (``grain_bench.significance``), or None."""
        return None

    def chance_predictions(self, references, num_labels: int):
        """What a trivial predictor outputs, in ``predict``'s form, or None when the head defines none."""
        return None

    def prediction_summary(self, predictions, references, num_labels: int, label_names) -> dict[str, Any] | None:
        """What the predictions look like, for collapse checks, or None when the task says it itself."""
        return None

    def check_label(self, labels, num_labels: int):
        """(positions of the bad labels, what a label must be) for one split's labels (numpy floats)."""
        return (), ""


class SequenceHead(TaskHead):
    """One class per sequence (or sentence pair)."""

    name = "sequence"
    sequence_labels = True

    def example_stats(self, metric: str, predictions, references):
        """Per-example correctness (or confusion counts) of the predicted classes."""
        import numpy as np

        from grain_bench.significance import classification_stats

        return classification_stats(metric, np.asarray(predictions).argmax(-1), references)

    def chance_predictions(self, references, num_labels: int):
        """The split's most frequent class."""
        import numpy as np

        logits = np.zeros((len(references), num_labels))
        logits[:, np.bincount(references, minlength=num_labels).argmax()] = 1.0
        return logits

    def prediction_summary(self, predictions, references, num_labels: int, label_names) -> dict[str, Any]:
        """A histogram of the predicted classes (and which class, when it is one)."""
        import numpy as np

        values = np.asarray(predictions)
        counts = np.bincount(values.argmax(-1), minlength=num_labels) if len(values) else np.zeros(0, int)
        names = label_names or tuple(str(i) for i in range(len(counts)))
        out: dict[str, Any] = {"histogram": {names[i]: int(c) for i, c in enumerate(counts)},
                               "distinct_predictions": int((counts > 0).sum())}
        if out["distinct_predictions"] == 1:
            out["only"] = f"class {names[int(counts.argmax())]!r}"
        return out

    def check_label(self, labels, num_labels: int):
        """Class ids in 0..num_labels-1."""
        import numpy as np

        wrong = ~np.isfinite(labels) | (labels < 0) | (labels >= num_labels) | (labels != np.round(labels))
        bad = np.flatnonzero(wrong)
        return bad, f"a class id in 0..{num_labels - 1}"


class RegressionHead(SequenceHead):
    """One real number per sequence (STS-B): MSE distillation, correlations."""

    name = "regression"

    def model_kwargs(self, num_labels: int) -> dict[str, Any]:
        """One output, trained as regression."""
        return {"num_labels": 1, "problem_type": "regression"}

    def label_dtype(self):
        """Float labels."""
        import torch

        return torch.float32

    def kd_loss(self, student_out, teacher_out, batch, temperature: float):
        """MSE between the student's and the teacher's outputs (no temperature)."""
        from grain_bench.losses import logit_mse

        return logit_mse(student_out.logits, teacher_out.logits)

    def hard_loss(self, outputs, batch):
        """MSE against the gold scores."""
        import torch.nn.functional as F

        return F.mse_loss(outputs.logits.squeeze(-1), batch["labels"])

    def point_predictions(self, logits):
        """The one output."""
        return logits[:, 0]

    def example_stats(self, metric: str, predictions, references):
        """Per-example terms of the correlation."""
        import numpy as np

        from grain_bench.significance import correlation_stats

        return correlation_stats(metric, np.asarray(predictions)[:, 0], references)

    def chance_predictions(self, references, num_labels: int):
        """The split's mean label."""
        import numpy as np

        return np.full((len(references), 1), float(np.asarray(references).mean()))

    def prediction_summary(self, predictions, references, num_labels: int, label_names) -> dict[str, Any]:
        """The spread of the predictions and of the labels."""
        import numpy as np

        values = np.asarray(predictions)
        return {"std": float(values[:, 0].std()), "mean": float(values[:, 0].mean()),
                "reference_std": float(np.asarray(references, dtype=float).std())}

    def check_label(self, labels, num_labels: int):
        """Finite numbers."""
        import numpy as np

        return np.flatnonzero(~np.isfinite(labels)), "a finite number"


class TokenHead(TaskHead):
    """One class per token (NER); labels -100 where a token is not scored (padding, later sub-tokens)."""

    name = "token"
    auto_class = "AutoModelForTokenClassification"
    source_class = "BertForTokenClassification"
    compact_class = "PrunedBertForTokenClassification"
    pipeline_tag = "token-classification"
    sequence_inputs = ("classifier.weight",)

    def kd_loss(self, student_out, teacher_out, batch, temperature: float):
        """Soft cross-entropy per token, averaged over the scored positions."""
        from grain_bench.losses import soft_cross_entropy

        return soft_cross_entropy(student_out.logits, teacher_out.logits, temperature, mask=batch["labels"] != -100)

    def hard_loss(self, outputs, batch):
        """Token cross-entropy on the scored positions."""
        import torch.nn.functional as F

        logits = outputs.logits
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch["labels"].reshape(-1), ignore_index=-100)


#: the value padding positions get before a softmax over span positions (finite, so an all-masked row stays finite)
SPAN_MASK_VALUE = -1e4


class SpanHead(TaskHead):
    """A start and an end position per question (extractive QA); padding positions never chosen."""

    name = "span"
    auto_class = "AutoModelForQuestionAnswering"
    source_class = "BertForQuestionAnswering"
    compact_class = "PrunedBertForQuestionAnswering"
    pipeline_tag = "question-answering"
    sequence_inputs = ("qa_outputs.weight",)

    def model_kwargs(self, num_labels: int) -> dict[str, Any]:
        """Start and end logits: no label count."""
        return {}

    @staticmethod
    def masked(logits, attention_mask):
        """``logits`` (as float) with the padding positions at ``SPAN_MASK_VALUE``."""
        return logits.float().masked_fill(attention_mask == 0, SPAN_MASK_VALUE)

    def kd_loss(self, student_out, teacher_out, batch, temperature: float):
        """Mean of the soft cross-entropies over start and over end positions (padding positions masked out)."""
        from grain_bench.losses import soft_cross_entropy

        mask = batch["attention_mask"]
        losses = [soft_cross_entropy(self.masked(getattr(student_out, k), mask),
                                     self.masked(getattr(teacher_out, k), mask), temperature)
                  for k in ("start_logits", "end_logits")]
        return (losses[0] + losses[1]) / 2

    def hard_loss(self, outputs, batch):
        """Mean cross-entropy of the gold start and end positions."""
        import torch.nn.functional as F

        mask = batch["attention_mask"]
        return (F.cross_entropy(self.masked(outputs.start_logits, mask), batch["start_positions"])
                + F.cross_entropy(self.masked(outputs.end_logits, mask), batch["end_positions"])) / 2


HEADS: dict[str, TaskHead] = {head.name: head for head in (SequenceHead(), RegressionHead(), TokenHead(), SpanHead())}
#: a bare encoder (no task head) and its compact class
BASE_CLASS, BASE_COMPACT_CLASS = "BertModel", "PrunedBertModel"


def task_head(name: str) -> TaskHead:
    """The ``TaskHead`` of a head kind; ``UsageError`` naming the kinds for any other name."""
    if name not in HEADS:
        raise UsageError(f"unknown task head {name!r}; expected one of {', '.join(HEADS)}")
    return HEADS[name]


def compact_classes() -> dict[str, str]:
    """transformers class name of a compactable model -> its compact class name in ``modeling_pruned_bert``."""
    return {BASE_CLASS: BASE_COMPACT_CLASS, **{head.source_class: head.compact_class for head in HEADS.values()}}


def sequence_input_weights(source_class: str) -> tuple[str, ...]:
    """The ``sequence_inputs`` of the head that transformers class ``source_class`` carries (none for a bare
    encoder)."""
    return next((head.sequence_inputs for head in HEADS.values() if head.source_class == source_class), ())
