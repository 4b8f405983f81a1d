"""Helpers shared by several test modules (``tests/`` is on ``sys.path``: there is no ``tests/__init__.py``)."""

from __future__ import annotations

import os
import stat
import subprocess

import pytest


def write_sst2(folder) -> str:
    """A small SST-2 folder in the GLUE download layout (96 train rows, 32 dev rows); loads in well under a second,
    where the tweets corpus takes tens of seconds on a busy 2-core machine."""
    import random as _random

    rng = _random.Random(0)
    positive, negative = ["good", "great", "fine", "happy"], ["bad", "awful", "poor", "sad"]
    filler = ["the", "movie", "was", "plot", "very", "and", "a", "film"]

    def rows(n):
        out = []
        for i in range(n):
            words = [rng.choice(filler) for _ in range(5)] + [rng.choice(positive if i % 2 else negative)] * 2
            rng.shuffle(words)
            out.append(f"{' '.join(words)}\t{i % 2}\n")
        return "sentence\tlabel\n" + "".join(out)

    os.makedirs(os.path.join(folder, "SST-2"), exist_ok=True)
    for name, n in (("train.tsv", 96), ("dev.tsv", 32)):
        with open(os.path.join(folder, "SST-2", name), "w") as handle:
            handle.write(rows(n))
    return str(folder)


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: the tiny random-init backbone every CLI test runs on
BACKBONE = "test-bert-tiny"


def run_cli(*args: str, results: str, capsys) -> tuple[int, str, str]:
    """``grain-bench run`` on the tiny backbone; returns (exit code, stdout, stderr)."""
    from grain_bench.cli import main

    code = main(["run", "--backbone", BACKBONE, "--recipe", "test", "--results", results, "-q", "--no-latency",
                 *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line_error(code: int, err: str) -> str:
    """The one line of a refused command's stderr (asserting exit 2, one line and no traceback)."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def read_only_results(small_fs, tmp_path) -> str:
    """A results directory holding one record on a read-only filesystem (or read-only mode bits, as non-root)."""
    from test_leaderboard import make_record, write_store

    if os.geteuid() != 0:
        results = tmp_path / "ro-results"
        write_store(results, [make_record()])
        os.chmod(results, stat.S_IRUSR | stat.S_IXUSR)
        return str(results)
    point = small_fs()
    write_store(os.path.join(point, "results"), [make_record()])
    done = subprocess.run(["mount", "-o", "remount,ro", point], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot remount read-only: {done.stderr.strip()}")
    return os.path.join(point, "results")


def records_aside(tmp_path) -> list[str]:
    """The files of records kept aside under the test's ``GRAIN_BENCH_HOME`` (``builtin_plugins_only``)."""
    folder = tmp_path / "home" / "unsaved"
    return sorted(os.listdir(folder)) if folder.exists() else []


def fill_filesystem(point: str, leave: int = 4096) -> str:
    """Fill the filesystem at ``point`` but for about ``leave`` bytes; returns the filler's path."""
    filler = os.path.join(point, "filler")
    with open(filler, "wb", buffering=0) as handle:
        try:
            while handle.write(b"\0" * 4096):
                pass
        except OSError:  # ENOSPC: full
            pass
    size = os.path.getsize(filler)
    os.truncate(filler, max(0, size - leave))
    return filler


def tweets_distillation_setup():
    """(task, teacher, TaskData, tokenizer) for real distillation on the tiny backbone: tweets, a teacher perturbed
    away from its initialisation (so that it has something to teach), 64 training tweets of length 32."""
    import torch

    from grain_bench.backbones import load_tiny
    from grain_bench.harness import TaskData
    from grain_bench.tasks.tweets import TweetSentiment

    task = TweetSentiment()
    teacher, tokenizer = load_tiny("sequence", 2)
    with torch.no_grad():
        generator = torch.Generator().manual_seed(5)
        for param in teacher.parameters():
            param.add_(0.3 * torch.randn(param.shape, generator=generator))
    train = task.encode("train", tokenizer, 32, limit=64)
    return task, teacher.eval(), TaskData(task, tokenizer, train, train, train, task.collate(tokenizer)), tokenizer
