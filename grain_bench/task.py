"""The task contract: the adapter interface every task implements (sequence, regression, token and span outputs).

A task loads its raw splits (``datasets.Dataset``), encodes them for a tokenizer, defines the distillation targets of
its head and scores predictions with project-local metrics. Every method sees the same splits, encoding and metrics.
This module imports no torch at import time.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, ClassVar

from grain_bench.errors import DataError

__all__ = ["DataIdentity", "EncodedSplit", "Task", "file_sha256", "hub_offline", "hub_reachable", "is_identity",
           "load_hub_dataset", "resolve_hub_revision"]

_TRUE = ("1", "true", "yes", "on")


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` or ``HF_DATASETS_OFFLINE`` asks for offline mode."""
    return any(os.environ.get(v, "").strip().lower() in _TRUE for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP probe of the hub endpoint, so an offline machine fails in seconds instead of retrying for minutes."""
    import socket
    from urllib.parse import urlparse

    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host = url.hostname or "huggingface.co"
    port = url.port or (443 if url.scheme != "http" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


#: content hashes of files already read in this process: (path, size, mtime) -> sha256
_FILE_HASHES: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str) -> str:
    """SHA-256 of a file's bytes (remembered per path, size and modification time)."""
    import hashlib

    stat = os.stat(path)
    key = (os.path.abspath(path), stat.st_size, stat.st_mtime_ns)
    if key not in _FILE_HASHES:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        _FILE_HASHES[key] = digest.hexdigest()
    return _FILE_HASHES[key]


@dataclass(frozen=True)
class DataIdentity:
    """What a task's data is, for run ids and teacher-cache keys: a content hash of the local files it reads (the
    same bytes reached through two paths are one identity; an edited file is another), or a hub dataset at a
    resolved commit. ``key`` is what specs store; the rest goes into records as provenance."""

    key: str  # "sha256:<16 hex>" or "hub:<repo>@<commit>"
    source: str  # the folder, file or hub repository it was read from
    revision: str | None = None  # hub commit
    files: dict[str, str] = field(default_factory=dict)  # role (e.g. "train") -> sha256 of that file

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        return {"key": self.key, "source": self.source, "revision": self.revision, "files": dict(self.files)}

    @classmethod
    def of_files(cls, files: dict[str, str], source: str) -> DataIdentity:
        """The identity of local files given as role -> path (roles, not paths, go into the hash)."""
        import hashlib

        missing = [path for path in files.values() if not os.path.isfile(path)]
        if missing:
            raise DataError(f"{missing[0]} not found (data files expected under {source})")
        hashes = {role: file_sha256(path) for role, path in sorted(files.items())}
        digest = hashlib.sha256(json.dumps(hashes, sort_keys=True).encode()).hexdigest()[:16]
        return cls(f"sha256:{digest}", source, None, hashes)


def is_identity(data: str) -> bool:
    """True for a spec's ``data`` value written by this version (older ones hold a path or ``default``)."""
    return data.startswith(("sha256:", "hub:"))


def hub_cache_dir() -> str:
    """The Hugging Face hub cache (``HF_HUB_CACHE``, ``HF_HOME/hub`` or ``~/.cache/huggingface/hub``)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    home = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    return os.path.join(home, "hub")


def resolve_hub_revision(task: str, repo: str, ref: str) -> str:
    """The commit that ``ref`` (a branch, tag or commit) of hub dataset ``repo`` names now: asked from the hub, or,
    offline, read from the local hub cache. Raises ``DataError`` when neither can say."""
    if len(ref) == 40 and all(c in "0123456789abcdef" for c in ref):
        return ref  # already a commit
    hint = "point --data-dir at local files in the task's canonical format (see docs/tasks.md)"
    if hub_offline() or not hub_reachable():
        cached = os.path.join(hub_cache_dir(), f"datasets--{repo.replace('/', '--')}", "refs", ref)
        if os.path.isfile(cached):
            with open(cached) as handle:
                return handle.read().strip()
        why = "offline mode is on" if hub_offline() else "the hub is unreachable"
        raise DataError(f"{task}: {why} and the hub cache has no copy of {repo} ({ref}); {hint}, or run once online")
    try:
        from huggingface_hub import HfApi

        sha = HfApi().dataset_info(repo, revision=ref).sha
        if not sha:
            raise ValueError(f"the hub gave no commit for {repo}@{ref}")
        return sha
    except Exception as exc:  # a bad id, a private repository, a network error: one clear message
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{task}: could not resolve {repo}@{ref} on the hub: {first}; {hint}") from None


def load_hub_dataset(task: str, path: str, config: str | None = None, **kwargs):
    """``datasets.load_dataset(path, config)`` that fails fast and clearly when the hub cannot be used.

    In offline mode only the local ``datasets`` cache is tried (it fails at once when the data is not cached); online,
    an unreachable hub is detected by a short probe before ``datasets`` would retry for minutes.
    """
    import datasets

    where = f"{path}" + (f" ({config})" if config else "")
    hint = "point --data-dir at local files in the task's canonical format (see docs/tasks.md)"
    if not hub_offline() and not hub_reachable():
        raise DataError(f"{task}: the Hugging Face hub is unreachable, so {where} cannot be downloaded; {hint}, "
                        f"or set HF_DATASETS_OFFLINE=1 to use a cached copy")
    try:
        return datasets.load_dataset(path, config, **kwargs)
    except Exception as exc:  # network, offline mode, missing cache, bad id: one clear message
        mode = " (offline mode is on: only cached datasets load)" if hub_offline() else ""
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{task}: could not load {where} from the hub{mode}: {first}; {hint}") from None


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
    head: ClassVar[str] = "sequence"  # sequence | regression | token | span
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
        """Raise ``DataError`` when a sequence-level label is not a class id (classification) or not a finite number
        (regression): one NaN label makes every loss NaN. Token and span tasks check their labels when reading."""
        import numpy as np

        if self.head not in ("sequence", "regression") or self.label_field not in split.column_names:
            return
        labels = np.asarray(split[self.label_field], dtype=float)
        if self.head == "regression":
            bad = np.flatnonzero(~np.isfinite(labels))
            expected = "a finite number"
        else:
            bad = np.flatnonzero(~np.isfinite(labels) | (labels < 0) | (labels >= self.num_labels)
                                 | (labels != np.round(labels)))
            expected = f"a class id in 0..{self.num_labels - 1}"
        if len(bad):
            raise DataError(f"task {self.name!r}: split {split_name!r} row {int(bad[0])} has label {labels[bad[0]]!r}"
                            f" ({len(bad)} such row(s)); expected {expected}")

    def encode(self, split: str, tokenizer, max_length: int, limit: int | None = None) -> EncodedSplit:
        """Tokenise ``split`` (the first ``limit`` examples when given) for a sequence-level head."""
        raw = self.splits()[split]
        if limit is not None and limit < len(raw):
            raw = raw.select(range(limit))
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
            dtype = torch.float32 if self.head == "regression" else torch.long
            batch["labels"] = torch.tensor(labels, dtype=dtype)
            return dict(batch)

        return collate

    # ---- distillation -------------------------------------------------------------------------------------------
    def model_inputs(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The part of a batch the model takes (labels removed, so no loss is computed inside the model)."""
        return {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}

    def kd_loss(self, student_out, teacher_out, batch, temperature: float):
        """Logit distillation loss of this head (soft cross-entropy at ``temperature``; MSE for regression)."""
        from grain_bench.losses import logit_mse, soft_cross_entropy

        if self.head == "regression":
            return logit_mse(student_out.logits, teacher_out.logits)
        return soft_cross_entropy(student_out.logits, teacher_out.logits, temperature)

    def hard_loss(self, outputs, batch):
        """Supervised loss against the gold labels (teacher fine-tuning)."""
        import torch.nn.functional as F

        if self.head == "regression":
            return F.mse_loss(outputs.logits.squeeze(-1), batch["labels"])
        return F.cross_entropy(outputs.logits, batch["labels"])

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
        predictions = logits[:, 0] if self.head == "regression" else logits.argmax(-1)
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
        import numpy as np

        from grain_bench.significance import classification_stats, correlation_stats

        references = np.asarray(encoded.features["labels"])
        if self.head == "regression":
            return correlation_stats(self.primary_metric, np.asarray(predictions)[:, 0], references)
        if self.head == "sequence":
            return classification_stats(self.primary_metric, np.asarray(predictions).argmax(-1), references)
        return None

    def prediction_values(self, predictions, encoded: EncodedSplit) -> list:
        """The per-example predictions of ``predict``'s output as JSON values (class ids, numbers, tags, answers)."""
        import numpy as np

        values = np.asarray(predictions)
        return values[:, 0].tolist() if self.head == "regression" else values.argmax(-1).tolist()

    def chance_predictions(self, encoded: EncodedSplit):
        """What a trivial predictor outputs on ``encoded``, in the form ``score`` takes, or None when the task defines
        none: the split's most frequent class (classification) or its mean label (regression)."""
        import numpy as np

        if self.head not in ("sequence", "regression") or "labels" not in encoded.features.column_names:
            return None
        labels = np.asarray(encoded.features["labels"])
        if len(labels) == 0:
            return None
        if self.head == "regression":
            return np.full((len(labels), 1), float(labels.mean()))
        logits = np.zeros((len(labels), self.num_labels))
        logits[:, np.bincount(labels, minlength=self.num_labels).argmax()] = 1.0
        return logits

    def chance_stats(self, encoded: EncodedSplit):
        """``example_stats`` of ``chance_predictions`` (None when the task defines no trivial predictor)."""
        predictions = self.chance_predictions(encoded)
        return None if predictions is None else self.example_stats(predictions, encoded)

    def prediction_summary(self, predictions, encoded: EncodedSplit) -> dict[str, Any]:
        """What the predictions look like, for collapse checks (``grain_bench.quality``): a class histogram
        (classification) or the spread of the predictions and of the labels (regression)."""
        import numpy as np

        values = np.asarray(predictions)
        if self.head == "regression":
            return {"std": float(values[:, 0].std()), "mean": float(values[:, 0].mean()),
                    "reference_std": float(np.asarray(encoded.features["labels"], dtype=float).std())}
        counts = np.bincount(values.argmax(-1), minlength=self.num_labels) if len(values) else np.zeros(0, int)
        names = self.label_names or tuple(str(i) for i in range(len(counts)))
        out: dict[str, Any] = {"histogram": {names[i]: int(c) for i, c in enumerate(counts)},
                               "distinct_predictions": int((counts > 0).sum())}
        if out["distinct_predictions"] == 1:
            out["only"] = f"class {names[int(counts.argmax())]!r}"
        return out

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
