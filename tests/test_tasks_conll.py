"""CoNLL-2003 adapter: column files, IOB1 -> IOB2, first-sub-token labels, word-level scoring, token KD."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
import torch
from conftest import datapack_path
from helpers import ROOT

from grain_bench.errors import DataError
from grain_bench.grid import build_specs
from grain_bench.harness import Harness
from grain_bench.task import EncodedSplit
from grain_bench.tasks.conll import LABELS, iob1_to_iob2

FIXTURES = os.path.join(os.path.dirname(__file__), "data", "conll2003")


def test_iob1_to_iob2():
    assert iob1_to_iob2(["I-PER", "I-PER", "O", "I-LOC"]) == ["B-PER", "I-PER", "O", "B-LOC"]
    assert iob1_to_iob2(["I-PER", "B-PER", "I-PER"]) == ["B-PER", "B-PER", "I-PER"]  # IOB1 B- kept
    assert iob1_to_iob2(["I-ORG", "I-LOC"]) == ["B-ORG", "B-LOC"]
    iob2 = ["B-MISC", "I-MISC", "O", "B-PER"]
    assert iob1_to_iob2(iob2) == iob2  # idempotent on IOB2


def test_fixture_files_load_as_iob2(regs):
    splits = regs.tasks.get("conll2003")(FIXTURES).splits()
    assert [len(splits[s]) for s in ("train", "dev", "test")] == [40, 12, 12]
    for tags in splits["train"]["ner_tags"]:
        names = [LABELS[t] for t in tags]
        for prev, tag in zip(["O", *names], names):
            assert not (tag.startswith("I-") and prev[2:] != tag[2:]), names


def test_first_subtoken_labels(regs, tiny_model):
    _, tokenizer = tiny_model
    task = regs.tasks.get("conll2003")(FIXTURES)
    encoded = task.encode("train", tokenizer, 128, limit=5)
    for labels, tags in zip(encoded.features["labels"], encoded.raw["ner_tags"]):
        assert [label for label in labels if label != -100] == list(tags)  # one label per word, in order
        assert len(labels) > len(tags)  # char-level sub-tokens: more positions than words
        assert labels[0] == -100 and labels[-1] == -100


def test_entity_spanning_subtokens_scored_by_first_subtoken(regs):
    task = regs.tasks.get("conll2003")(FIXTURES)
    # words: "John" (3 sub-tokens) "Smith" (2) "visits" (1); gold B-PER I-PER O
    raw = [{"tokens": ["John", "Smith", "visits"], "ner_tags": [1, 2, 0]}]
    word_ids = [[None, 0, 0, 0, 1, 1, 2, None]]
    encoded = EncodedSplit("test", None, _Rows(raw), {"word_ids": word_ids})
    # later sub-tokens predict other labels: ignored; only first sub-tokens count
    predicted = [[0, 1, 5, 5, 2, 0, 0, 0]]
    assert task.word_tags(predicted, encoded) == [["B-PER", "I-PER", "O"]]
    assert task.score(predicted, encoded)["f1"] == 1.0
    wrong = [[0, 1, 2, 2, 0, 2, 0, 0]]  # second word's first sub-token says O: the entity is cut short
    assert task.score(wrong, encoded)["f1"] == 0.0


def test_truncated_words_count_as_o(regs):
    task = regs.tasks.get("conll2003")(FIXTURES)
    raw = [{"tokens": ["Paris", "and", "Rome"], "ner_tags": [5, 0, 5]}]
    encoded = EncodedSplit("test", None, _Rows(raw), {"word_ids": [[None, 0, 1, None]]})  # "Rome" cut off
    scores = task.score([[0, 5, 0, 0]], encoded)
    assert scores["precision"] == 1.0 and scores["recall"] == 0.5


def test_token_kd_masks_unscored_positions(regs):

    task = regs.tasks.get("conll2003")(FIXTURES)
    labels = torch.tensor([[-100, 3, -100, 0, -100]])
    student = torch.randn(1, 5, 9, requires_grad=True)
    teacher = torch.randn(1, 5, 9)
    loss = task.kd_loss(SimpleNamespace(logits=student), SimpleNamespace(logits=teacher), {"labels": labels}, 2.0)
    loss.backward()
    grad = student.grad[0].abs().sum(-1)
    assert grad[1] > 0 and grad[3] > 0 and grad[0] == 0 and grad[2] == 0 and grad[4] == 0


def test_bad_files(regs, tmp_path):
    with pytest.raises(DataError, match="no CoNLL-2003 files"):
        regs.tasks.get("conll2003")(str(tmp_path)).splits()
    (tmp_path / "train.txt").write_text("EU NNP I-NP I-ORG\nrejects VBZ I-VP X-ORG\n")
    with pytest.raises(DataError, match=r"train\.txt line 2: tag 'X-ORG'"):
        regs.tasks.get("conll2003")(str(tmp_path)).splits()
    (tmp_path / "train.txt").write_text("EU NNP I-NP I-ORG\n")
    with pytest.raises(DataError, match=r"valid\.txt not found"):
        regs.tasks.get("conll2003")(str(tmp_path)).splits()


def test_datapack_counts(regs):
    folder = datapack_path("conll2003")
    splits = regs.tasks.get("conll2003")(folder).splits()
    assert [len(splits[s]) for s in ("train", "dev", "test")] == [14041, 3250, 3453]
    assert sum(len(t) for t in splits["train"]["tokens"]) == 203621
    first = splits["train"][0]
    assert first["tokens"][:3] == ["EU", "rejects", "German"]
    assert [LABELS[t] for t in first["ner_tags"][:3]] == ["B-ORG", "O", "B-MISC"]


class _Rows:
    """The part of a datasets.Dataset that scoring reads."""

    def __init__(self, rows):
        self.rows = rows

    def __getitem__(self, key):
        return [row[key] for row in self.rows]

    def __len__(self):
        return len(self.rows)


def test_conll_models_name_their_entity_tags(regs, pm, results_dir, test_recipe):

    (spec,) = build_specs(regs, ["dense"], ["conll2003"], [1.0], [1], "test-bert-tiny", test_recipe,
                          data_dir=os.path.join(ROOT, "tests", "data"))
    harness = Harness(results_dir, regs=regs, pm=pm, progress=False)
    model, _ = harness.load_model(spec, regs.tasks.get("conll2003")(spec.data))
    assert model.config.id2label[0] == "O" and model.config.id2label[1] == "B-PER"
    assert len(model.config.id2label) == model.config.num_labels
