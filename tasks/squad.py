"""SQuAD v1.1 extractive question answering: span head, document stride, start/end logit distillation, n-best
post-processing and the official EM / F1.

Splits:

- with ``train-v1.1.json`` and ``dev-v1.1.json`` (``--data-dir`` DIR or DIR/squad, or the hub's ``rajpurkar/squad``):
  ``validation`` = the official dev set (reported); ``dev`` (selection) = ``max(1, round(n_articles / 20))`` train
  articles drawn with a fixed seed; ``train`` = the other train articles.
- with only ``dev-v1.1.json`` (the shared datapack has no train file): the dev articles are split by article with a
  fixed-seed permutation: ``round(n / 3)`` articles are the reported ``validation`` part, ``max(1, round(n / 12))``
  the ``dev`` part, the rest ``train``. For the 48 official dev articles: 16 / 4 / 28 articles.
  Scores on this split are not comparable with official SQuAD dev numbers.

Encoding follows the BERT reference: the question is cut to ``min(64, max_length // 2 - 2)`` tokens, the context is
split into windows of ``max_length`` tokens that overlap by ``doc_stride = min(128, max_length // 3)`` tokens (128 at
the usual 384); a training window whose context does not contain the whole first answer points at [CLS].
"""

from __future__ import annotations

import json
import os
from typing import Any

from grain_bench.errors import DataError
from grain_bench.hookspecs import hookimpl
from grain_bench.task import EncodedSplit, Task, load_hub_dataset

HUB_ID = "rajpurkar/squad"
SPLIT_SEED = 20230709
TRAIN_FILE, DEV_FILE = "train-v1.1.json", "dev-v1.1.json"
N_BEST = 20
MAX_ANSWER_LENGTH = 30
MAX_QUERY_LENGTH = 64
MAX_DOC_STRIDE = 128


def _features():
    import datasets

    return datasets.Features({
        "id": datasets.Value("string"), "title": datasets.Value("string"), "context": datasets.Value("string"),
        "question": datasets.Value("string"),
        "answers": datasets.Sequence({"text": datasets.Value("string"), "answer_start": datasets.Value("int32")}),
    })


def read_squad_json(path: str, task: str = "squad") -> dict[str, list]:
    """Columns (id, title, context, question, answers) of a SQuAD v1.1 JSON file; malformed files raise DataError."""
    expected = "a SQuAD v1.1 JSON file ({\"data\": [{\"title\", \"paragraphs\": [{\"context\", \"qas\": [{\"id\", " \
               "\"question\", \"answers\": [{\"text\", \"answer_start\"}]}]}]}]})"
    if not os.path.isfile(path):
        raise DataError(f"{task}: {path} not found; expected {expected}")
    try:
        with open(path, encoding="utf-8") as handle:
            document = json.load(handle)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{task}: could not read {path} as JSON ({exc}); expected {expected}") from None
    columns: dict[str, list] = {"id": [], "title": [], "context": [], "question": [], "answers": []}
    where = "top level"
    try:
        if not isinstance(document, dict) or not isinstance(document.get("data"), list):
            raise TypeError("no list under \"data\"")
        for a, article in enumerate(document["data"]):
            title = article.get("title", f"article-{a}")
            for p, paragraph in enumerate(article["paragraphs"]):
                where = f"data[{a}].paragraphs[{p}]"
                context = paragraph["context"]
                if not isinstance(context, str):
                    raise TypeError("context is not a string")
                for q, qa in enumerate(paragraph["qas"]):
                    where = f"data[{a}].paragraphs[{p}].qas[{q}]"
                    answers = qa["answers"]
                    texts = [str(answer["text"]) for answer in answers]
                    starts = [int(answer["answer_start"]) for answer in answers]
                    if not texts:
                        raise TypeError("a v1.1 question needs at least one answer")
                    columns["id"].append(str(qa["id"]))
                    columns["title"].append(str(title))
                    columns["context"].append(context)
                    columns["question"].append(str(qa["question"]))
                    columns["answers"].append({"text": texts, "answer_start": starts})
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        detail = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)
        raise DataError(f"{task}: {path} is malformed at {where}: {detail}; expected {expected}") from None
    if not columns["id"]:
        raise DataError(f"{task}: {path} holds no questions; expected {expected}")
    return columns


def split_by_article(table, parts: dict[str, float], minimum: dict[str, int]):
    """Split ``table`` by ``title`` with a fixed-seed permutation of its articles.

    ``parts`` maps split names to fractions of the articles (rounded, at least ``minimum``); the last name gets the
    rest. Rows keep their file order within each part.
    """
    import numpy as np

    column = list(table["title"])
    titles = list(dict.fromkeys(column))
    order = [titles[i] for i in np.random.default_rng(SPLIT_SEED).permutation(len(titles))]
    names = list(parts)
    if len(titles) < len(names):
        raise DataError(f"squad: {len(titles)} article(s) cannot be split into {', '.join(names)} by article")
    groups: dict[str, Any] = {}
    start = 0
    for name in names[:-1]:
        size = max(minimum.get(name, 1), round(parts[name] * len(titles)))
        size = min(size, len(titles) - start - (len(names) - len(groups) - 1))
        groups[name] = set(order[start:start + size])
        start += size
    groups[names[-1]] = set(order[start:])
    return {name: table.select([i for i, t in enumerate(column) if t in chosen]) for name, chosen in groups.items()}


class SquadV1(Task):
    """SQuAD v1.1 extractive QA; exact match and F1 (official normalisation)."""

    name = "squad"
    #: ``paper``: length 384, as the reference code (airaria/GRAIN run scripts). ``quick``: the teacher clears its
    #: trivial predictor only at length 256 with 800 teacher steps, which is past the CPU budget (docs/tasks.md gives
    #: the estimates)
    recipe_values = {"paper": dict(max_length=384),
                     "quick": dict(max_length=256, teacher_max_steps=800, max_steps=400)}
    version = "1"
    description = "SQuAD v1.1 extractive QA (span head, doc stride, n-best); F1 (primary) and exact match"
    head = "span"
    num_labels = 2
    metrics = ("f1", "exact_match")
    primary_metric = "f1"
    eval_split = "validation"
    text_fields = ("question", "context")
    label_field = "answers"
    hub_id = HUB_ID

    # ---- loading ------------------------------------------------------------------------------------------------
    def _find(self, filename: str) -> str | None:
        if self.data_dir is None:
            return None
        for path in (os.path.join(self.data_dir, filename), os.path.join(self.data_dir, "squad", filename)):
            if os.path.isfile(path):
                return path
        return None

    def local_files(self) -> dict[str, str]:
        """The JSON files under ``--data-dir`` (train is optional)."""
        found = {"train": self._find(TRAIN_FILE), "validation": self._find(DEV_FILE)}
        if found["validation"] is None:
            raise DataError(f"squad: no {DEV_FILE} in --data-dir {self.data_dir} (or its squad/ folder)")
        return {role: path for role, path in found.items() if path is not None}

    def load_raw(self) -> dict[str, Any]:
        """train/dev/validation from local JSON files or the hub (see the module docstring for the splits)."""
        import datasets

        if not self.data_dir:
            loaded = load_hub_dataset(self.name, HUB_ID, revision=self.hub_revision())
            official = {split: loaded[split].cast(_features()) for split in ("train", "validation")}
        else:
            train_path, dev_path = self._find(TRAIN_FILE), self._find(DEV_FILE)
            if dev_path is None:
                raise DataError(f"squad: no {DEV_FILE} in --data-dir {self.data_dir} (or its squad/ folder); expected "
                                f"{TRAIN_FILE} and {DEV_FILE} (train optional: then dev is split by article)")
            official = {"validation": datasets.Dataset.from_dict(read_squad_json(dev_path), features=_features())}
            if train_path is None:  # only dev: split it by article into train / dev / validation
                return split_by_article(official["validation"], {"validation": 1 / 3, "dev": 1 / 12, "train": 0.0},
                                        {"validation": 1, "dev": 1})
            official["train"] = datasets.Dataset.from_dict(read_squad_json(train_path), features=_features())
        held = split_by_article(official["train"], {"dev": 1 / 20, "train": 0.0}, {"dev": 1})
        return {"train": held["train"], "dev": held["dev"], "validation": official["validation"]}

    # ---- encoding -----------------------------------------------------------------------------------------------
    @staticmethod
    def windows(max_length: int) -> tuple[int, int]:
        """(max question tokens, doc stride) for a sequence length: (64, 128) at 384, scaled down for short lengths."""
        return max(1, min(MAX_QUERY_LENGTH, max_length // 2 - 2)), max(1, min(MAX_DOC_STRIDE, max_length // 3))

    def encode(self, split: str, tokenizer, max_length: int, limit: int | None = None) -> EncodedSplit:
        """Question/context windows with start/end positions; ``extra`` keeps what post-processing needs."""
        import datasets
        from tqdm.auto import tqdm

        if not getattr(tokenizer, "is_fast", False):
            raise DataError(f"squad needs a fast tokenizer (offset mappings); {type(tokenizer).__name__} is not one")
        raw = self.splits()[split]
        if limit is not None and limit < len(raw):
            raw = raw.select(range(limit))
        max_query, stride = self.windows(max_length)
        columns: dict[str, list] = {}
        feature_example: list[int] = []
        offsets_out: list[list] = []
        chunk = 1000
        for begin in tqdm(range(0, len(raw), chunk), desc=f"tokenising {self.name}/{split}", leave=False,
                          disable=len(raw) <= chunk):
            rows = raw[begin:begin + chunk]
            questions = [self._cut_question(tokenizer, q.lstrip(), max_query) for q in rows["question"]]
            encoded = tokenizer(questions, rows["context"], truncation="only_second", max_length=max_length,
                                stride=stride, return_overflowing_tokens=True, return_offsets_mapping=True,
                                padding=False)
            for i, sample in enumerate(encoded["overflow_to_sample_mapping"]):
                sequence_ids = encoded.sequence_ids(i)
                offsets = [tuple(o) if s == 1 else None for o, s in zip(encoded["offset_mapping"][i], sequence_ids)]
                answers = rows["answers"][sample]
                start, end = self._positions(offsets, answers["answer_start"][0], answers["text"][0])
                for key in tokenizer.model_input_names:
                    if key in encoded:
                        columns.setdefault(key, []).append(encoded[key][i])
                columns.setdefault("start_positions", []).append(start)
                columns.setdefault("end_positions", []).append(end)
                feature_example.append(begin + sample)
                offsets_out.append(offsets)
        features = datasets.Dataset.from_dict(columns) if columns else datasets.Dataset.from_dict(
            {"input_ids": [], "attention_mask": [], "start_positions": [], "end_positions": []})
        return EncodedSplit(split, features, raw, {"feature_example": feature_example, "offsets": offsets_out})

    @staticmethod
    def _cut_question(tokenizer, question: str, max_query: int) -> str:
        tokens = tokenizer(question, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        return question[:tokens[max_query - 1][1]] if len(tokens) > max_query else question

    @staticmethod
    def _positions(offsets, answer_start: int, text: str) -> tuple[int, int]:
        """Token positions of the answer in one window; (0, 0) = [CLS] when the window does not contain it whole."""
        answer_end = answer_start + len(text)
        context = [i for i, o in enumerate(offsets) if o is not None]
        if not context or offsets[context[0]][0] > answer_start or offsets[context[-1]][1] < answer_end:
            return 0, 0
        start = next(i for i in context if offsets[i][1] > answer_start)
        end = next(i for i in reversed(context) if offsets[i][0] < answer_end)
        return start, max(start, end)

    def collate(self, tokenizer):
        """Pad model inputs; stack start/end positions."""
        import torch

        def collate(rows):
            positions = {k: torch.tensor([row[k] for row in rows], dtype=torch.long)
                         for k in ("start_positions", "end_positions")}
            inputs = [{k: v for k, v in row.items() if k not in positions} for row in rows]
            batch = dict(tokenizer.pad(inputs, return_tensors="pt"))
            batch.update(positions)
            return batch

        return collate

    # ---- evaluation ---------------------------------------------------------------------------------------------
    def predict(self, model, encoded: EncodedSplit, tokenizer, batch_size: int, progress: bool = True):
        """(start logits, end logits) of every window, unpadded (numpy arrays)."""
        out: list = []
        for batch, result in self.model_outputs(model, encoded, tokenizer, batch_size, progress):
            lengths = batch["attention_mask"].sum(-1).tolist()
            starts, ends = result.start_logits.float().cpu().numpy(), result.end_logits.float().cpu().numpy()
            out.extend((s[:n], e[:n]) for s, e, n in zip(starts, ends, lengths))
        return out

    def answers(self, logits, encoded: EncodedSplit) -> list[str]:
        """The best answer text of every question: n-best start/end pairs over its windows, at most 30 tokens."""
        import numpy as np

        best: dict[int, tuple[float, str]] = {}
        contexts = list(encoded.raw["context"])
        for (start_logits, end_logits), example, offsets in zip(logits, encoded.extra["feature_example"],
                                                               encoded.extra["offsets"]):
            starts = np.argsort(start_logits)[-1:-N_BEST - 1:-1]
            ends = np.argsort(end_logits)[-1:-N_BEST - 1:-1]
            for s in starts:
                for e in ends:
                    if (s >= len(offsets) or e >= len(offsets) or offsets[s] is None or offsets[e] is None
                            or e < s or e - s + 1 > MAX_ANSWER_LENGTH):
                        continue
                    score = float(start_logits[s] + end_logits[e])
                    if example not in best or score > best[example][0]:
                        best[example] = (score, contexts[example][offsets[s][0]:offsets[e][1]])
        return [best[i][1] if i in best else "" for i in range(len(encoded.raw))]

    def score(self, logits, encoded: EncodedSplit) -> dict[str, float]:
        """Official EM / F1 (fractions) of the post-processed answers."""
        from grain_bench.metrics import load_metric

        predictions = self.answers(logits, encoded)
        references = [answers["text"] for answers in list(encoded.raw["answers"])]
        scores = load_metric("squad").compute(predictions=predictions, references=references)
        return {k: float(scores[k]) for k in self.metrics}

    def metric_example_stats(self, metric: str, predictions, encoded: EncodedSplit):
        """Per question [best F1 (or exact match) against its references, 1]: the metric is their mean."""
        import numpy as np

        from grain_bench.metrics import metric_module

        if metric not in self.metrics:
            return None
        squad = metric_module("squad")
        score = squad.f1_score if metric == "f1" else squad.exact_match_score
        references = [answers["text"] for answers in list(encoded.raw["answers"])]
        values = [squad.max_over_ground_truths(score, answer, truths)
                  for answer, truths in zip(self.answers(predictions, encoded), references)]
        return "mean", np.stack([np.asarray(values, dtype=float), np.ones(len(values))], axis=1).reshape(-1, 2)

    def chance_predictions(self, encoded: EncodedSplit):
        """The trivial reader: every question answered with the first token of its context (window logits that peak
        there)."""
        import numpy as np

        out = []
        for offsets in encoded.extra["offsets"]:
            logits = np.full(len(offsets), -1e4, dtype=np.float32)
            logits[next((i for i, o in enumerate(offsets) if o is not None), 0)] = 0.0
            out.append((logits, logits.copy()))
        return out

    def prediction_summary(self, predictions, encoded: EncodedSplit) -> dict:
        """How many distinct answers, and how many empty ones."""
        answers = self.answers(predictions, encoded)
        distinct = set(answers)
        out: dict[str, Any] = {"distinct_predictions": len(distinct),
                               "empty": sum(1 for a in answers if not a.strip())}
        if len(distinct) == 1:
            out["only"] = f"the answer {next(iter(distinct))!r}"
        return out

    def prediction_values(self, predictions, encoded: EncodedSplit) -> list:
        """The answer text of every question."""
        return self.answers(predictions, encoded)

    def gold_values(self, encoded: EncodedSplit) -> list:
        """The reference answer texts of every question."""
        return [list(answers["text"]) for answers in list(encoded.raw["answers"])]

    def metric_modules(self) -> tuple[str, ...]:
        """The official SQuAD v1.1 scorer."""
        return ("squad",)


@hookimpl
def register_tasks(register):
    """SQuAD v1.1."""
    register(SquadV1, aliases=("squad1", "squad-v1.1"), suites=())
