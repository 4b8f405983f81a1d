"""SQuAD v1.1 adapter: JSON loading, splits by article, doc-stride windows, n-best post-processing, span KD."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from conftest import datapack_path

from grain_bench.errors import DataError

FIXTURES = os.path.join(os.path.dirname(__file__), "data", "squad")


@pytest.fixture
def dev_only(tmp_path):
    shutil.copy(os.path.join(FIXTURES, "dev-v1.1.json"), tmp_path / "dev-v1.1.json")
    return str(tmp_path)


def test_train_and_dev_files(regs):
    splits = regs.tasks.get("squad")(FIXTURES).splits()
    assert len(splits["validation"]) == 36  # 6 articles x 2 paragraphs x 3 questions
    titles = {name: set(split["title"]) for name, split in splits.items()}
    assert (len(titles["train"]), len(titles["dev"])) == (5, 1)
    assert not titles["train"] & titles["dev"]


def test_dev_only_is_split_by_article(regs, dev_only):
    splits = regs.tasks.get("squad")(dev_only).splits()
    titles = {name: set(split["title"]) for name, split in splits.items()}
    assert (len(titles["validation"]), len(titles["dev"]), len(titles["train"])) == (2, 1, 3)
    assert sum(len(s) for s in splits.values()) == 36
    assert not (titles["validation"] & titles["train"]) and not (titles["dev"] & titles["train"])
    again = regs.tasks.get("squad")(dev_only).splits()
    assert list(again["validation"]["id"]) == list(splits["validation"]["id"])


def test_windows_scale_with_length():
    from grain_bench.tasks.squad import SquadV1

    assert SquadV1.windows(384) == (64, 128)
    assert SquadV1.windows(32) == (14, 10)


def test_windows_contain_the_answer(regs, tiny_model):
    _, tokenizer = tiny_model
    task = regs.tasks.get("squad")(FIXTURES)
    encoded = task.encode("train", tokenizer, 32, limit=6)
    assert len(encoded.features) > 6  # long contexts give several windows per question
    assert max(len(ids) for ids in encoded.features["input_ids"]) <= 32
    contexts, answers = list(encoded.raw["context"]), list(encoded.raw["answers"])
    found = 0
    for start, end, example, offsets in zip(encoded.features["start_positions"], encoded.features["end_positions"],
                                            encoded.extra["feature_example"], encoded.extra["offsets"]):
        if start == 0:
            continue
        found += 1
        assert contexts[example][offsets[start][0]:offsets[end][1]] == answers[example]["text"][0]
    assert found >= 6


def _gold_logits(encoded, shift_end=0):
    logits = []
    for ids, start, end in zip(encoded.features["input_ids"], encoded.features["start_positions"],
                               encoded.features["end_positions"]):
        s, e = np.zeros(len(ids)), np.zeros(len(ids))
        if start:
            s[start], e[min(len(ids) - 1, end + shift_end)] = 10.0, 10.0
        logits.append((s, e))
    return logits


def test_postprocessing_recovers_gold_answers(regs, tiny_model):
    _, tokenizer = tiny_model
    task = regs.tasks.get("squad")(FIXTURES)
    encoded = task.encode("validation", tokenizer, 48, limit=9)
    scores = task.score(_gold_logits(encoded), encoded)
    assert scores == {"f1": 1.0, "exact_match": 1.0}


def test_postprocessing_respects_max_answer_length(regs, tiny_model):
    from grain_bench.tasks.squad import MAX_ANSWER_LENGTH

    _, tokenizer = tiny_model
    task = regs.tasks.get("squad")(FIXTURES)
    encoded = task.encode("validation", tokenizer, 64, limit=1)
    offsets = encoded.extra["offsets"][0]
    context = [i for i, o in enumerate(offsets) if o is not None]
    s, e = np.zeros(len(offsets)), np.zeros(len(offsets))
    s[context[0]] = e[context[0] + MAX_ANSWER_LENGTH] = 10.0  # a 31-token span: not allowed
    e[context[0] + 3] = 5.0
    logits = [(s, e)] + [(np.zeros(len(o)), np.zeros(len(o))) for o in encoded.extra["offsets"][1:]]
    answer = task.answers(logits, encoded)[0]
    start, stop = offsets[context[0]][0], offsets[context[0] + 3][1]
    assert answer == encoded.raw[0]["context"][start:stop]


def test_span_kd_ignores_padding(regs):
    from types import SimpleNamespace

    import torch

    task = regs.tasks.get("squad")(FIXTURES)
    mask = torch.tensor([[1, 1, 1, 0, 0]])
    teacher = SimpleNamespace(start_logits=torch.randn(1, 5), end_logits=torch.randn(1, 5))
    student_start = torch.randn(1, 5, requires_grad=True)
    student = SimpleNamespace(start_logits=student_start, end_logits=torch.randn(1, 5))
    loss = task.kd_loss(student, teacher, {"attention_mask": mask}, 2.0)
    loss.backward()
    assert torch.isfinite(loss)
    assert student_start.grad[0, 3:].abs().max() == 0 and student_start.grad[0, :3].abs().max() > 0
    teacher.start_logits[0, 3:] = 100.0  # padding values must not change the loss
    assert task.kd_loss(student, teacher, {"attention_mask": mask}, 2.0).item() == pytest.approx(loss.item())


def test_missing_and_malformed_files(regs, tmp_path):
    with pytest.raises(DataError, match="no dev-v1.1.json"):
        regs.tasks.get("squad")(str(tmp_path)).splits()
    (tmp_path / "dev-v1.1.json").write_text('{"data": [{"title": "x", "paragraphs": [{"context": "c", "qas": '
                                            '[{"id": "1", "question": "q"}]}]}]}')
    with pytest.raises(DataError, match=r"dev-v1\.1\.json is malformed at data\[0\]\.paragraphs\[0\]\.qas\[0\]: "
                                        r"missing key 'answers'"):
        regs.tasks.get("squad")(str(tmp_path)).splits()
    (tmp_path / "dev-v1.1.json").write_text("{not json")
    with pytest.raises(DataError, match="could not read .*dev-v1.1.json as JSON"):
        regs.tasks.get("squad")(str(tmp_path)).splits()


def test_datapack_dev_split_by_article(regs):
    path = datapack_path("squad", "dev-v1.1.json")
    splits = regs.tasks.get("squad")(os.path.dirname(path)).splits()
    titles = {name: len(set(split["title"])) for name, split in splits.items()}
    assert titles == {"validation": 16, "dev": 4, "train": 28}
    assert sum(len(s) for s in splits.values()) == 10570
    with open(path) as handle:
        assert len(json.load(handle)["data"]) == 48
