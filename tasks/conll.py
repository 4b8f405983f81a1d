"""CoNLL-2003 English NER: token classification, labels on each word's first sub-token, per-token logit distillation,
entity-level micro F1 with the conlleval definition.

Splits: ``train`` (eng.train), ``dev`` (eng.testa, selection) and ``test`` (eng.testb, reported). Tags are IOB2 with
the hub's label order (O, B-PER, I-PER, B-ORG, I-ORG, B-LOC, I-LOC, B-MISC, I-MISC). The original files use IOB1; they
are converted on load (``I-X`` that does not continue an ``X`` entity becomes ``B-X``); IOB2 input is unchanged by
the conversion. Words beyond ``max_length`` sub-tokens get no prediction and are scored as ``O``.

Data: the hub (``eriktks/conll2003``, parquet branch) or ``--data-dir`` DIR (or DIR/conll2003) with
``train.txt``/``valid.txt``/``test.txt`` or ``eng.train``/``eng.testa``/``eng.testb``: one token per line, the NER tag
in the last whitespace-separated column, blank lines between sentences, ``-DOCSTART-`` lines ignored.
"""

from __future__ import annotations

import os
from typing import Any

from grain_bench.errors import DataError
from grain_bench.hookspecs import hookimpl
from grain_bench.task import EncodedSplit, Task, load_hub_dataset

HUB_ID = "eriktks/conll2003"
HUB_REVISION = "refs/convert/parquet"  # the script-free parquet export (datasets >= 4 runs no loading scripts)
LABELS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")
LABEL_IDS = {label: i for i, label in enumerate(LABELS)}
FILE_SETS = ({"train": "train.txt", "dev": "valid.txt", "test": "test.txt"},
             {"train": "eng.train", "dev": "eng.testa", "test": "eng.testb"})


def iob1_to_iob2(tags: list[str]) -> list[str]:
    """IOB1 -> IOB2: an ``I-X`` that does not continue an ``X`` entity starts one (``B-X``); idempotent on IOB2."""
    out = []
    previous = "O"
    for tag in tags:
        if tag.startswith("I-") and (previous == "O" or previous[2:] != tag[2:]):
            tag = "B-" + tag[2:]
        out.append(tag)
        previous = tag
    return out


def read_conll(path: str, task: str = "conll2003") -> dict[str, list]:
    """Sentences of a CoNLL column file as ``tokens`` and IOB2 ``ner_tags`` (ids); bad lines raise DataError."""
    expected = "CoNLL-2003 column lines (token ... NER-tag), blank lines between sentences"
    if not os.path.isfile(path):
        raise DataError(f"{task}: {path} not found; expected {expected}")
    tokens: list[list[str]] = []
    tags: list[list[int]] = []
    words: list[str] = []
    labels: list[str] = []

    def flush():
        if words:
            tokens.append(list(words))
            tags.append([LABEL_IDS[t] for t in iob1_to_iob2(labels)])
            words.clear()
            labels.clear()

    try:
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                fields = line.split()
                if not fields:
                    flush()
                    continue
                if fields[0] == "-DOCSTART-":
                    flush()
                    continue
                if len(fields) < 2:
                    raise DataError(f"{task}: {path} line {number}: {line.strip()!r} has no tag column; "
                                    f"expected {expected}")
                tag = fields[-1]
                if tag != "O" and (tag[:2] not in ("B-", "I-") or "I-" + tag[2:] not in LABEL_IDS):
                    raise DataError(f"{task}: {path} line {number}: tag {tag!r} is not one of "
                                    f"O, B-/I- + PER, ORG, LOC, MISC")
                words.append(fields[0])
                labels.append(tag)
    except UnicodeDecodeError as exc:
        raise DataError(f"{task}: {path} is not UTF-8 text ({exc}); expected {expected}") from None
    flush()
    if not tokens:
        raise DataError(f"{task}: {path} holds no sentences; expected {expected}")
    return {"tokens": tokens, "ner_tags": tags}


class Conll2003(Task):
    """CoNLL-2003 English NER; conlleval entity micro F1."""

    name = "conll2003"
    #: ``paper``: the reference code trains CoNLL-2003 at lr 1e-4 for 40 epochs (airaria/GRAIN run scripts). ``quick``:
    #: from the learning curves (docs/tasks.md); the students take the curves' full 600 steps: a 400-step run (pruning
    #: squeezed into 80 steps) left grain and heads at 65% and 55% of the teacher's entity F1 on the CPU
    #: (benchmarks/results/tasks-minilm.md)
    recipe_values = {"paper": dict(lr=1e-4, epochs=40.0),
                     "quick": dict(max_length=128, teacher_lr=1e-4, teacher_max_steps=600, max_steps=600,
                                   max_eval_examples=4000)}
    label_names = LABELS
    version = "1"
    description = "CoNLL-2003 NER (first sub-token labels, per-token KD); conlleval entity micro F1"
    head = "token"
    num_labels = len(LABELS)
    labels = LABELS
    metrics = ("f1", "precision", "recall", "accuracy")
    primary_metric = "f1"
    eval_split = "test"
    text_fields = ("tokens",)
    label_field = "ner_tags"
    hub_id = HUB_ID
    hub_ref = HUB_REVISION

    # ---- loading ------------------------------------------------------------------------------------------------
    def _files(self) -> dict[str, str]:
        if self.data_dir is None:
            raise DataError("conll2003: no --data-dir to look for the CoNLL-2003 files in")
        folders = [self.data_dir, os.path.join(self.data_dir, "conll2003")]
        for folder in folders:
            for names in FILE_SETS:
                paths = {split: os.path.join(folder, name) for split, name in names.items()}
                if any(os.path.isfile(p) for p in paths.values()):
                    return paths  # a partial set: the missing file is named by read_conll
        raise DataError(f"conll2003: no CoNLL-2003 files in --data-dir {self.data_dir} (or its conll2003/ folder); "
                        f"expected train.txt, valid.txt, test.txt (or eng.train, eng.testa, eng.testb)")

    def local_files(self) -> dict[str, str]:
        """The column files under ``--data-dir``, by split."""
        return self._files()

    def load_raw(self) -> dict[str, Any]:
        """train/dev/test from local column files (IOB1 or IOB2, converted to IOB2) or the hub (IOB2)."""
        import datasets

        features = datasets.Features({"tokens": datasets.Sequence(datasets.Value("string")),
                                      "ner_tags": datasets.Sequence(datasets.Value("int64"))})
        if self.data_dir:
            return {split: datasets.Dataset.from_dict(read_conll(path, self.name), features=features)
                    for split, path in self._files().items()}
        loaded = load_hub_dataset(self.name, HUB_ID, revision=self.hub_revision())
        names = loaded["train"].features["ner_tags"].feature.names
        if tuple(names) != LABELS:
            raise DataError(f"conll2003: {HUB_ID} has labels {names}, expected {list(LABELS)}")
        return {split: loaded[hub].select_columns(["tokens", "ner_tags"]).cast(features)
                for split, hub in (("train", "train"), ("dev", "validation"), ("test", "test"))}

    # ---- encoding -----------------------------------------------------------------------------------------------
    def encode(self, split: str, tokenizer, max_length: int, limit: int | None = None) -> EncodedSplit:
        """Sub-tokenise pre-split words; each word's first sub-token carries its label, the rest -100."""
        import datasets

        if not getattr(tokenizer, "is_fast", False):
            raise DataError(f"conll2003 needs a fast tokenizer (word ids); {type(tokenizer).__name__} is not one")
        raw = self.splits()[split]
        if limit is not None and limit < len(raw):
            raw = raw.select(range(limit))
        encoded = tokenizer(list(raw["tokens"]), is_split_into_words=True, truncation=True, max_length=max_length)
        columns = {k: encoded[k] for k in tokenizer.model_input_names if k in encoded}
        word_ids, labels = [], []
        for i, tags in enumerate(list(raw["ner_tags"])):
            ids = encoded.word_ids(i)
            row, previous = [], None
            for word in ids:
                row.append(tags[word] if word is not None and word != previous else -100)
                previous = word
            word_ids.append(ids)
            labels.append(row)
        columns["labels"] = labels
        features = datasets.Dataset.from_dict(columns)
        return EncodedSplit(split, features, raw, {"word_ids": word_ids})

    def collate(self, tokenizer):
        """Pad model inputs; pad labels with -100."""
        import torch

        def collate(rows):
            labels = [row["labels"] for row in rows]
            batch = dict(tokenizer.pad([{k: v for k, v in row.items() if k != "labels"} for row in rows],
                                       return_tensors="pt"))
            width = batch["input_ids"].shape[1]
            batch["labels"] = torch.tensor([row + [-100] * (width - len(row)) for row in labels], dtype=torch.long)
            return batch

        return collate

    # ---- evaluation ---------------------------------------------------------------------------------------------
    def predict(self, model, encoded: EncodedSplit, tokenizer, batch_size: int, progress: bool = True):
        """Predicted label id of every sub-token of every sentence (unpadded lists)."""
        out: list[list[int]] = []
        for batch, result in self.model_outputs(model, encoded, tokenizer, batch_size, progress):
            predicted = result.logits.argmax(-1).cpu()
            lengths = batch["attention_mask"].sum(-1).tolist()
            out.extend(row[:n].tolist() for row, n in zip(predicted, lengths))
        return out

    def word_tags(self, predictions, encoded: EncodedSplit) -> list[list[str]]:
        """Word-level predicted tags: each word takes its first sub-token's label; unseen (truncated) words are O."""
        out = []
        for predicted, word_ids, tokens in zip(predictions, encoded.extra["word_ids"], list(encoded.raw["tokens"])):
            tags = ["O"] * len(tokens)
            seen = set()
            for label, word in zip(predicted, word_ids):
                if word is not None and word not in seen:
                    seen.add(word)
                    tags[word] = LABELS[label]
            out.append(tags)
        return out

    def score(self, logits, encoded: EncodedSplit) -> dict[str, float]:
        """conlleval micro precision / recall / F1 and token accuracy against the full word-level gold tags."""
        from grain_bench.metrics import load_metric

        predictions = self.word_tags(logits, encoded)
        references = [[LABELS[t] for t in tags] for tags in list(encoded.raw["ner_tags"])]
        scores = load_metric("conlleval").compute(predictions=predictions, references=references)
        return {k: float(scores[k]) for k in self.metrics}

    def metric_example_stats(self, metric: str, predictions, encoded: EncodedSplit):
        """Per sentence, from conlleval's chunks: entity F1 [correct, predicted only, reference only] (micro F1 of the
        sums); precision [correct, predicted] and recall [correct, reference] (ratios of the sums); token accuracy
        [tags right, tags]."""
        import numpy as np

        from grain_bench.metrics import metric_module

        if metric not in self.metrics:
            return None
        chunks = metric_module("conlleval").chunks
        rows = []
        for predicted, tags in zip(self.word_tags(predictions, encoded), list(encoded.raw["ner_tags"])):
            words = [LABELS[t] for t in tags]
            guessed, gold = chunks(predicted), chunks(words)
            right = len(guessed & gold)
            rows.append({"f1": [right, len(guessed - gold), len(gold - guessed)], "precision": [right, len(guessed)],
                         "recall": [right, len(gold)],
                         "accuracy": [sum(p == r for p, r in zip(predicted, words)), len(words)]}[metric])
        kind = "f1" if metric == "f1" else "mean"
        return kind, np.asarray(rows, dtype=float).reshape(-1, 3 if kind == "f1" else 2)

    def prediction_summary(self, predictions, encoded: EncodedSplit) -> dict:
        """A histogram of the predicted word tags."""
        from collections import Counter

        counts = Counter(tag for tags in self.word_tags(predictions, encoded) for tag in tags)
        out = {"histogram": {tag: counts.get(tag, 0) for tag in LABELS}, "distinct_predictions": len(counts)}
        if len(counts) == 1:
            out["only"] = f"tag {next(iter(counts))!r}"
        return out

    def prediction_values(self, predictions, encoded: EncodedSplit) -> list:
        """Word-level tags of every sentence."""
        return self.word_tags(predictions, encoded)

    def gold_values(self, encoded: EncodedSplit) -> list:
        """The gold word tags of every sentence, as names (``B-PER``)."""
        return [[LABELS[t] for t in tags] for tags in list(encoded.raw["ner_tags"])]

    def chance_predictions(self, encoded: EncodedSplit):
        """Every token ``O`` (no entity found: entity F1 0, token accuracy the share of ``O``)."""
        return [[LABEL_IDS["O"]] * len(ids) for ids in encoded.extra["word_ids"]]

    def metric_modules(self) -> tuple[str, ...]:
        """The conlleval scorer."""
        return ("conlleval",)


@hookimpl
def register_tasks(register):
    """CoNLL-2003 English NER."""
    register(Conll2003, aliases=("conll", "conll03", "conll-2003"), suites=())
