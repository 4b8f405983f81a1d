"""GLUE adapters: canonical TSV loading, the train/dev carve, MNLI matched/mismatched, errors, the glue suite."""

from __future__ import annotations

import os
import shutil
import time

import numpy as np
import pytest
from conftest import datapack_path

from grain_bench.errors import DataError

FIXTURES = os.path.join(os.path.dirname(__file__), "data", "glue")
EIGHT = ["cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte"]


def test_glue_suite_is_the_eight_tasks(regs):
    assert regs.expand_tasks(["glue"]) == EIGHT
    assert "wnli" not in regs.tasks
    assert regs.expand_tasks(["SST-2", "sts-b"]) == ["sst2", "stsb"]


def test_declared_metrics(regs):
    expected = {"cola": ("matthews_correlation",), "sst2": ("accuracy",), "mrpc": ("f1", "accuracy"),
                "stsb": ("pearson", "spearmanr"), "qqp": ("accuracy", "f1"),
                "mnli": ("accuracy_matched", "accuracy_mismatched"), "qnli": ("accuracy",), "rte": ("accuracy",)}
    for name, metrics in expected.items():
        cls = regs.tasks.get(name)
        assert cls.metrics == metrics
        assert cls.primary_metric == metrics[0]
        assert all(cls.higher_is_better(m) for m in metrics)
        assert cls.eval_split == "validation"
    assert regs.tasks.get("stsb").head == "regression"


@pytest.mark.parametrize("name", EIGHT)
def test_fixture_splits_and_carve(regs, name):
    task = regs.tasks.get(name)(FIXTURES)
    splits = task.splits()
    # 40 official train rows: 4 held out as dev (n // 10), 36 left
    assert (len(splits["train"]), len(splits["dev"])) == (36, 4)
    assert len(splits["validation"]) == (16 if name == "mnli" else 12)
    assert set(task.text_fields) <= set(splits["train"].column_names)
    labels = list(splits["train"]["label"])
    if name == "stsb":
        assert all(isinstance(v, float) for v in labels) and max(labels) <= 5
    else:
        assert set(labels) <= set(range(task.num_labels)) and len(set(labels)) > 1


def test_carve_is_deterministic_and_disjoint(regs):
    a = regs.tasks.get("sst2")(FIXTURES).splits()
    b = regs.tasks.get("sst2")(FIXTURES).splits()
    assert list(a["dev"]["sentence"]) == list(b["dev"]["sentence"])
    assert not set(a["dev"]["sentence"]) & set(a["train"]["sentence"])


def test_cola_headerless_and_mrpc_bom(regs):
    cola = regs.tasks.get("cola")(FIXTURES).splits()["validation"]
    with open(os.path.join(FIXTURES, "CoLA", "dev.tsv")) as handle:
        first = handle.readline().rstrip("\n").split("\t")
    assert cola[0]["sentence"] == first[3] and cola[0]["label"] == int(first[1])
    mrpc = regs.tasks.get("mrpc")(FIXTURES).splits()["validation"]
    assert mrpc[1]["sentence1"] == mrpc[1]["sentence2"] and mrpc[1]["label"] == 1


def test_mnli_matched_and_mismatched(regs, tiny_model):
    _, tokenizer = tiny_model
    task = regs.tasks.get("mnli")(FIXTURES)
    encoded = task.encode("validation", tokenizer, 32, limit=5)
    assert list(encoded.raw["subset"]) == [0, 0, 0, 1, 1]
    labels = np.asarray(encoded.features["labels"])
    logits = np.eye(3)[labels]
    logits[3] = np.roll(logits[3], 1)  # one mismatched row wrong
    scores = task.score(logits, encoded)
    assert scores == {"accuracy_matched": 1.0, "accuracy_mismatched": 0.5}
    dev = task.encode("dev", tokenizer, 32)
    assert set(task.score(np.eye(3)[np.asarray(dev.features["labels"])], dev)) == {"accuracy_matched"}


def test_stsb_regression_scores(regs, tiny_model):
    _, tokenizer = tiny_model
    task = regs.tasks.get("stsb")(FIXTURES)
    encoded = task.encode("validation", tokenizer, 32)
    gold = np.asarray(encoded.features["labels"], dtype=np.float64)
    scores = task.score((2 * gold + 1)[:, None], encoded)
    assert scores["pearson"] == pytest.approx(1.0) and scores["spearmanr"] == pytest.approx(1.0)


def test_pair_encoding_uses_both_sentences(regs, tiny_model):
    _, tokenizer = tiny_model
    encoded = regs.tasks.get("rte")(FIXTURES).encode("train", tokenizer, 32, limit=3)
    assert len(encoded.features) == 3
    assert all(len(ids) <= 32 for ids in encoded.features["input_ids"])
    assert all(1 in types for types in encoded.features["token_type_ids"])  # second segment present


def _copy(tmp_path, folder):
    shutil.copytree(os.path.join(FIXTURES, folder), tmp_path / folder)
    return tmp_path / folder


def test_missing_file_names_the_file(regs, tmp_path):
    (tmp_path / "QQP").mkdir()
    with pytest.raises(DataError, match=r"QQP/train\.tsv not found"):
        regs.tasks.get("qqp")(str(tmp_path)).splits()
    with pytest.raises(DataError, match=r"no GLUE folder 'MNLI'"):
        regs.tasks.get("mnli")(str(tmp_path)).splits()


def test_malformed_rows_name_file_and_line(regs, tmp_path):
    folder = _copy(tmp_path, "RTE")
    lines = (folder / "train.tsv").read_text().split("\n")
    lines[3] = lines[3].split("\t", 1)[1]
    (folder / "train.tsv").write_text("\n".join(lines))
    with pytest.raises(DataError, match=r"RTE/train\.tsv line 4 has 3 tab-separated fields, expected 4"):
        regs.tasks.get("rte")(str(tmp_path)).splits()


def test_bad_label_and_missing_column(regs, tmp_path):
    folder = _copy(tmp_path, "QNLI")
    text = (folder / "dev.tsv").read_text()
    (folder / "dev.tsv").write_text(text.replace("not_entailment", "maybe", 1))
    with pytest.raises(DataError, match=r"label 'maybe' is not entailment, not_entailment"):
        regs.tasks.get("qnli")(str(tmp_path)).splits()
    folder = _copy(tmp_path, "SST-2")
    (folder / "train.tsv").write_text("text\tlabel\nfine .\t1\nbad .\t0\n")
    with pytest.raises(DataError, match=r"no column 'sentence'"):
        regs.tasks.get("sst2")(str(tmp_path)).splits()


def test_hub_offline_fails_fast_with_a_hint(regs, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    start = time.time()
    with pytest.raises(DataError, match="--data-dir"):
        regs.tasks.get("rte")(None).splits()
    assert time.time() - start < 10


def test_datapack_rte(regs):
    folder = datapack_path("glue", "RTE")
    task = regs.tasks.get("rte")(os.path.dirname(folder))
    splits = task.splits()
    assert (len(splits["train"]), len(splits["dev"]), len(splits["validation"])) == (2241, 249, 277)
    assert sorted(np.bincount(list(splits["validation"]["label"]))) == [131, 146]


def test_datapack_glue_files_load(regs):
    glue = datapack_path("glue")
    sizes = {"sst2": (67349, 872), "mrpc": (3668, 408), "stsb": (5749, 1500)}
    for name, (n_train, n_dev) in sizes.items():
        splits = regs.tasks.get(name)(glue).splits()
        assert len(splits["train"]) + len(splits["dev"]) == n_train
        assert len(splits["validation"]) == n_dev
    with pytest.raises(DataError, match=r"CoLA/train\.tsv not found"):
        regs.tasks.get("cola")(glue).splits()


@pytest.mark.usefixtures("builtin_plugins_only")
@pytest.mark.parametrize("label", ["nan", "1e308000", "inf"])
def test_non_finite_regression_labels_are_a_data_error(label, tmp_path):
    from grain_bench.errors import DataError
    from grain_bench.tasks.glue import STSB

    folder = tmp_path / "glue" / "STS-B"
    folder.mkdir(parents=True)
    rows = "".join(f"a{i}\tb{i}\t{i % 5}.0\n" for i in range(20))
    (folder / "train.tsv").write_text("sentence1\tsentence2\tscore\n" + rows.replace("3.0", label, 1))
    (folder / "dev.tsv").write_text("sentence1\tsentence2\tscore\n" + rows)
    with pytest.raises(DataError, match=rf"label '{label}' is not a finite number"):
        STSB(str(tmp_path / "glue")).splits()
