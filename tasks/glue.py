"""The GLUE suite (WNLI left out, as is usual): CoLA, SST-2, MRPC, STS-B, QQP, MNLI, QNLI, RTE.

Splits, the same for every GLUE task:

- ``validation``: the official GLUE dev set (MNLI: dev_matched followed by dev_mismatched). GLUE's test labels are
  not public, so this is the split scores are reported on (``eval_split``).
- ``dev`` (selection, e.g. ``heads`` auto mode): a deterministic held-out part of the official train set,
  ``min(1000, max(1, n_train // 10))`` rows drawn by a fixed-seed permutation; ``train`` is the rest, in file order.
  Selection therefore never looks at the reported split.

Data: the hub (``nyu-mll/glue`` configs) by default, or ``--data-dir`` with the classic GLUE download layout
(``DIR/SST-2/train.tsv``, ``DIR/MNLI/dev_matched.tsv``, ...; ``DIR/glue/SST-2`` and ``DIR/glue_data/SST-2`` also work).
TSV files are read as GLUE's own processors read them: tab-separated, no quoting, UTF-8 (a BOM is dropped).
"""

from __future__ import annotations

import math
import os
from typing import Any, ClassVar

from grain_bench.errors import DataError
from grain_bench.hookspecs import hookimpl
from grain_bench.task import Task, load_hub_dataset

HUB_ID = "nyu-mll/glue"
SPLIT_SEED = 20230709
MAX_DEV = 1000
ENTAILMENT = {"entailment": 0, "not_entailment": 1}


def read_tsv(path: str, task: str, header: bool = True, expected: str = "") -> tuple[list[str] | None, list[list[str]]]:
    """(header, rows) of a GLUE TSV file; a missing file or a row with the wrong number of fields raises DataError."""
    if not os.path.isfile(path):
        raise DataError(f"{task}: {path} not found; expected a GLUE TSV file{expected}")
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{task}: could not read {path} as UTF-8 text: {exc}") from None
    # split on "\n" only: str.splitlines() would also split on characters such as U+2028 inside sentences
    lines = [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise DataError(f"{task}: {path} is empty; expected a GLUE TSV file{expected}")
    names = lines[0].split("\t") if header else None
    rows = [line.split("\t") for line in (lines[1:] if header else lines)]
    width = len(names) if names is not None else len(rows[0]) if rows else 0
    for number, row in enumerate(rows, start=2 if header else 1):
        if len(row) != width:
            raise DataError(f"{task}: {path} line {number} has {len(row)} tab-separated fields, expected {width}"
                            f"{expected}")
    return names, rows


class GlueTask(Task):
    """Base of the GLUE adapters: hub or TSV loading, the train/dev carve, label mapping."""

    version = "1"
    eval_split = "validation"
    hub_id = HUB_ID
    hub_config: ClassVar[str] = ""
    folder: ClassVar[str] = ""  # folder name in the GLUE download
    #: output column -> TSV header name (or column index for header-less files)
    tsv_columns: ClassVar[dict[str, Any]] = {}
    tsv_label: ClassVar[Any] = "label"
    tsv_header: ClassVar[bool] = True
    label_map: ClassVar[dict[str, int] | None] = None  # string labels -> ids (None: integer or float labels)
    #: split name -> file name in the task folder
    tsv_files: ClassVar[dict[str, str]] = {"train": "train.tsv", "validation": "dev.tsv"}
    #: how a label is stored (``datasets`` value type): class ids, or scores for STS-B
    label_type: ClassVar[str] = "int64"
    #: A task's own ``quick`` values come from the learning curves in benchmarks/results/task-curves (teacher and
    #: dense/grain/heads students at 0.2 against steps, MiniLM-L6; docs/tasks.md): the fewest steps after which the
    #: teacher's curve flattens and the students have recovered. The others keep the named recipe's.
    recipe_values: ClassVar[dict[str, dict[str, Any]]] = {}

    # ---- loading ------------------------------------------------------------------------------------------------
    def task_folder(self) -> str:
        """The task's folder: ``DIR/<folder>``, ``DIR/glue/<folder>`` or ``DIR/glue_data/<folder>``."""
        if self.data_dir is None:
            raise DataError(f"{self.name}: no --data-dir to look for {self.folder}/ in")
        candidates = [os.path.join(self.data_dir, *sub, self.folder) for sub in ((), ("glue",), ("glue_data",))]
        for path in candidates:
            if os.path.isdir(path):
                return path
        raise DataError(f"{self.name}: no GLUE folder {self.folder!r} under --data-dir {self.data_dir} (looked for "
                        f"{', '.join(candidates)}); expected the GLUE download layout, e.g. {self.folder}/train.tsv")

    def _expected(self) -> str:
        fields = [*(str(v) for v in self.tsv_columns.values()), str(self.tsv_label)]
        if self.tsv_header:
            return f" with a header row naming the columns {', '.join(fields)}"
        return " without a header (columns: source, label, author mark, sentence)"

    def _parse_label(self, value: str, path: str, line: int):
        """A class id from a TSV label (a name of ``label_map``, or an integer)."""
        value = value.strip()
        try:
            label = self.label_map[value] if self.label_map is not None else int(value)
        except (KeyError, ValueError):
            allowed = ", ".join(self.label_map) if self.label_map else "an integer class id"
            raise DataError(f"{self.name}: {path} line {line}: label {value!r} is not {allowed}") from None
        if not 0 <= label < self.num_labels:
            raise DataError(f"{self.name}: {path} line {line}: label {label} outside 0..{self.num_labels - 1}")
        return label

    def read_local_split(self, split: str) -> dict[str, list]:
        """Columns of one local TSV split: the text fields and ``label``."""
        path = os.path.join(self.task_folder(), self.tsv_files[split])
        names, rows = read_tsv(path, self.name, self.tsv_header, self._expected())

        def index(key):
            if names is None:
                return key
            if key not in names:
                raise DataError(f"{self.name}: {path} has no column {key!r} (header: {', '.join(names)})"
                                f"{self._expected()}")
            return names.index(key)

        positions = {out: index(key) for out, key in self.tsv_columns.items()}
        label_at = index(self.tsv_label)
        if names is None and rows and len(rows[0]) <= max([label_at, *positions.values()]):
            raise DataError(f"{self.name}: {path} has {len(rows[0])} columns per row{self._expected()}")
        first = 2 if names is not None else 1
        columns: dict[str, list] = {out: [row[i] for row in rows] for out, i in positions.items()}
        columns["label"] = [self._parse_label(row[label_at], path, n) for n, row in enumerate(rows, start=first)]
        return columns

    def _features(self):
        import datasets

        return datasets.Features({**{f: datasets.Value("string") for f in self.text_fields},
                                  "label": datasets.Value(self.label_type)})

    def load_local(self) -> dict[str, Any]:
        """Official train/validation splits from the GLUE TSV folder."""
        import datasets

        return {split: datasets.Dataset.from_dict(self.read_local_split(split), features=self._features())
                for split in self.tsv_files}

    def local_files(self) -> dict[str, str]:
        """The task's TSV files under ``--data-dir``, by split."""
        return {split: os.path.join(self.task_folder(), name) for split, name in self.tsv_files.items()}

    def load_hub(self) -> dict[str, Any]:
        """Official train/validation splits from ``nyu-mll/glue`` at the pinned commit."""
        loaded = load_hub_dataset(self.name, HUB_ID, self.hub_config, revision=self.hub_revision())
        return {split: self._hub_split(loaded, split) for split in self.tsv_files}

    def _hub_split(self, loaded, split: str):
        table = loaded[split].select_columns([*self.text_fields, "label"])
        return table.cast(self._features())

    def load_raw(self) -> dict[str, Any]:
        """``train`` (official train minus the held-out part), ``dev`` (held-out part) and ``validation``."""
        official = self.load_local() if self.data_dir else self.load_hub()
        train, dev = carve(official.pop("train"), self.name)
        return {"train": train, "dev": dev, **self.combine_validation(official)}

    def combine_validation(self, official: dict[str, Any]) -> dict[str, Any]:
        """The reported split(s) from the official dev file(s)."""
        return {"validation": official["validation"]}

def carve(train, task: str):
    """(train, dev): a fixed-seed held-out part of the official train set, ``min(1000, max(1, n // 10))`` rows."""
    import numpy as np

    n = len(train)
    if n < 2:
        raise DataError(f"{task}: the train split has {n} row(s); at least 2 are needed (train and a held-out dev row)")
    size = min(MAX_DEV, max(1, n // 10))
    order = np.random.default_rng(SPLIT_SEED).permutation(n)
    return train.select(sorted(order[size:].tolist())), train.select(sorted(order[:size].tolist()))


class CoLA(GlueTask):
    """CoLA: grammatical acceptability of one sentence; Matthews correlation."""

    name = "cola"
    label_names = ("unacceptable", "acceptable")
    description = "GLUE CoLA acceptability (dev = reported split); Matthews correlation"
    hub_config = "cola"
    folder = "CoLA"
    num_labels = 2
    metrics = ("matthews_correlation",)
    primary_metric = "matthews_correlation"
    text_fields = ("sentence",)
    tsv_header = False
    tsv_columns = {"sentence": 3}
    tsv_label = 1


class SST2(GlueTask):
    """SST-2: binary sentiment of one sentence; accuracy."""

    name = "sst2"
    label_names = ("negative", "positive")
    description = "GLUE SST-2 binary sentiment; accuracy"
    hub_config = "sst2"
    folder = "SST-2"
    num_labels = 2
    metrics = ("accuracy",)
    primary_metric = "accuracy"
    text_fields = ("sentence",)
    tsv_columns = {"sentence": "sentence"}
    tsv_label = "label"


class MRPC(GlueTask):
    """MRPC: paraphrase of a sentence pair; F1 (of the paraphrase class) and accuracy."""

    name = "mrpc"
    label_names = ("not_equivalent", "equivalent")
    description = "GLUE MRPC paraphrase; F1 (primary) and accuracy"
    hub_config = "mrpc"
    folder = "MRPC"
    num_labels = 2
    metrics = ("f1", "accuracy")
    primary_metric = "f1"
    text_fields = ("sentence1", "sentence2")
    tsv_columns = {"sentence1": "#1 String", "sentence2": "#2 String"}
    tsv_label = "Quality"
    #: ``quick``: from the learning curves (``GlueTask.recipe_values``)
    recipe_values = {"quick": dict(max_length=128, teacher_max_steps=400, max_steps=400)}


class STSB(GlueTask):
    """STS-B: similarity score 0-5 of a sentence pair (regression head, MSE distillation); Pearson and Spearman."""

    name = "stsb"
    description = "GLUE STS-B similarity regression (MSE KD); Pearson (primary) and Spearman"
    hub_config = "stsb"
    folder = "STS-B"
    head = "regression"
    num_labels = 1
    metrics = ("pearson", "spearmanr")
    primary_metric = "pearson"
    text_fields = ("sentence1", "sentence2")
    tsv_columns = {"sentence1": "sentence1", "sentence2": "sentence2"}
    tsv_label = "score"
    label_type = "float32"
    #: ``quick``: from the learning curves (``GlueTask.recipe_values``)
    recipe_values = {"quick": dict(teacher_max_steps=600, max_steps=400)}

    def _parse_label(self, value: str, path: str, line: int):
        """A similarity score from a TSV label: a finite number."""
        value = value.strip()
        try:
            number = float(value)
            if not math.isfinite(number):
                raise ValueError(value)
        except ValueError:
            raise DataError(f"{self.name}: {path} line {line}: label {value!r} is not a finite number") from None
        return number


class QQP(GlueTask):
    """QQP: duplicate question pairs; accuracy and F1 (of the duplicate class)."""

    name = "qqp"
    label_names = ("not_duplicate", "duplicate")
    description = "GLUE QQP duplicate questions; accuracy (primary) and F1"
    hub_config = "qqp"
    folder = "QQP"
    num_labels = 2
    metrics = ("accuracy", "f1")
    primary_metric = "accuracy"
    text_fields = ("question1", "question2")
    tsv_columns = {"question1": "question1", "question2": "question2"}
    tsv_label = "is_duplicate"


class MNLI(GlueTask):
    """MNLI: 3-way entailment; accuracy on dev_matched (primary) and dev_mismatched, scored in one evaluation.

    The reported split ``validation`` is dev_matched followed by dev_mismatched with a ``subset`` column (0 matched,
    1 mismatched); a row limit takes half from each. The held-out ``dev`` comes from train, whose genres are the
    matched ones, so it reports ``accuracy_matched`` only.
    """

    name = "mnli"
    label_names = ("entailment", "neutral", "contradiction")
    description = "GLUE MNLI entailment; accuracy on dev_matched (primary) and dev_mismatched"
    hub_config = "mnli"
    folder = "MNLI"
    num_labels = 3
    metrics = ("accuracy_matched", "accuracy_mismatched")
    primary_metric = "accuracy_matched"
    text_fields = ("premise", "hypothesis")
    tsv_columns = {"premise": "sentence1", "hypothesis": "sentence2"}
    tsv_label = "gold_label"
    label_map = {"entailment": 0, "neutral": 1, "contradiction": 2}
    tsv_files = {"train": "train.tsv", "validation_matched": "dev_matched.tsv",
                 "validation_mismatched": "dev_mismatched.tsv"}

    def combine_validation(self, official):
        """dev_matched then dev_mismatched, tagged with ``subset``."""
        import datasets

        matched, mismatched = official["validation_matched"], official["validation_mismatched"]
        matched = matched.add_column("subset", [0] * len(matched))
        mismatched = mismatched.add_column("subset", [1] * len(mismatched))
        return {"validation": datasets.concatenate_datasets([matched, mismatched])}

    def select(self, split, limit):
        """A limit on ``validation`` takes ceil(limit/2) matched and floor(limit/2) mismatched rows."""
        raw = self.splits()[split]
        if split != "validation" or limit is None or limit >= len(raw):
            return super().select(split, limit)
        subset = list(raw["subset"])
        matched = [i for i, s in enumerate(subset) if s == 0]
        mismatched = [i for i, s in enumerate(subset) if s == 1]
        half = (limit + 1) // 2
        take_m = min(len(matched), half)
        take_mm = min(len(mismatched), limit - take_m)
        take_m = min(len(matched), limit - take_mm)
        return raw.select(matched[:take_m] + mismatched[:take_mm])

    def metric_example_stats(self, metric: str, predictions, encoded):
        """Accuracy on the matched (or mismatched) rows: each row is [correct and in the subset, in the subset]."""
        import numpy as np

        if metric not in self.metrics:
            return None
        matched = self._subset(encoded) == (0 if metric == "accuracy_matched" else 1)
        correct = np.asarray(predictions).argmax(-1) == np.asarray(encoded.features["labels"])
        return "mean", np.stack([correct & matched, matched], axis=1).astype(float)

    @staticmethod
    def _subset(encoded):
        import numpy as np

        if "subset" in encoded.raw.column_names:
            return np.asarray(list(encoded.raw["subset"]))
        return np.zeros(len(encoded.features), dtype=int)

    def score(self, logits, encoded):
        """Accuracy on the matched and the mismatched rows (a split without ``subset`` counts as matched)."""
        import numpy as np

        predictions = logits.argmax(-1)
        references = np.asarray(encoded.features["labels"])
        subset = self._subset(encoded)
        out = {}
        for key, value in (("accuracy_matched", 0), ("accuracy_mismatched", 1)):
            rows = subset == value
            if rows.any():
                out[key] = float((predictions[rows] == references[rows]).mean())
        if not out:
            raise ValueError("MNLI accuracy of an empty set is undefined")
        return out


class QNLI(GlueTask):
    """QNLI: does the sentence answer the question; accuracy."""

    name = "qnli"
    label_names = ("entailment", "not_entailment")
    description = "GLUE QNLI question-answer entailment; accuracy"
    hub_config = "qnli"
    folder = "QNLI"
    num_labels = 2
    metrics = ("accuracy",)
    primary_metric = "accuracy"
    text_fields = ("question", "sentence")
    tsv_columns = {"question": "question", "sentence": "sentence"}
    tsv_label = "label"
    label_map = ENTAILMENT


class RTE(GlueTask):
    """RTE: textual entailment of a sentence pair; accuracy."""

    name = "rte"
    label_names = ("entailment", "not_entailment")
    description = "GLUE RTE entailment; accuracy"
    hub_config = "rte"
    folder = "RTE"
    num_labels = 2
    metrics = ("accuracy",)
    primary_metric = "accuracy"
    text_fields = ("sentence1", "sentence2")
    tsv_columns = {"sentence1": "sentence1", "sentence2": "sentence2"}
    tsv_label = "label"
    label_map = ENTAILMENT
    #: ``quick``: from the learning curves (``GlueTask.recipe_values``); RTE's teacher never clears its majority class
    #: by more than noise in this range
    recipe_values = {"quick": dict(max_length=128, teacher_max_steps=400, max_steps=400)}


GLUE_TASKS = (CoLA, SST2, MRPC, STSB, QQP, MNLI, QNLI, RTE)
ALIASES = {"cola": ("CoLA",), "sst2": ("sst-2", "SST-2"), "mrpc": ("MRPC",), "stsb": ("sts-b", "STS-B"),
           "qqp": ("QQP",), "mnli": ("MNLI",), "qnli": ("QNLI",), "rte": ("RTE",)}


@hookimpl
def register_tasks(register):
    """The eight GLUE tasks, suite ``glue`` (WNLI left out, as is usual)."""
    for cls in GLUE_TASKS:
        register(cls, aliases=ALIASES[cls.name], suites=("glue",))
