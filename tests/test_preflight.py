"""Checks before a sweep: bad values, names, backbones and results locations are refused up front with one line, exit
2, and nothing written."""

from __future__ import annotations

import os

import pytest
from helpers import one_line_error, read_only_results, run_cli

from grain_bench.backbones import load_tiny


@pytest.fixture(scope="module")
def backbones(tmp_path_factory):
    """Local model directories that are not usable backbones."""
    import transformers

    root = tmp_path_factory.mktemp("backbones")
    model, tokenizer = load_tiny("sequence", 2)
    model.save_pretrained(root / "no-tokenizer")  # config and weights, no vocabulary: every word would be [UNK]
    tiny = dict(vocab_size=tokenizer.vocab_size)
    transformers.GPT2Model(transformers.GPT2Config(n_layer=1, n_embd=8, n_head=2, n_positions=64, **tiny)
                           ).save_pretrained(root / "gpt2")
    transformers.DistilBertModel(transformers.DistilBertConfig(n_layers=1, dim=8, n_heads=2, hidden_dim=16, **tiny)
                                 ).save_pretrained(root / "distilbert")
    for name in ("gpt2", "distilbert"):
        tokenizer.save_pretrained(root / name)
    os.makedirs(root / "config-only")
    model.config.save_pretrained(root / "config-only")
    return root


REFUSED = [
    # meaningless recipe values and method options (finding 1)
    (["-r", "max_steps=-5"], "option max_steps=-5 must be >= 1 (or none to train for `epochs`)"),
    (["-r", "max_steps=0"], "option max_steps=0 must be >= 1"),
    (["-r", "teacher_max_steps=-1"], "option teacher_max_steps=-1 must be >= 1"),
    (["-r", "clip=-1"], "option clip=-1.0 must be > 0"),
    (["-r", "warmup=-1"], "option warmup=-1.0 must be in [0, 1]"),
    (["-r", "temperature=inf"], "option temperature=inf must be a finite number > 0"),
    (["-o", "grain.alpha=nan"], "option alpha=nan must be a finite number >= 0"),
    (["-o", "grain.alpha=inf"], "option alpha=inf must be a finite number >= 0"),
    (["-o", "grain.beta=1"], "option beta=1.0 must be in [0, 1)"),
    (["--backbone", "{no-tokenizer}"], "maps every word to '[UNK]'"),
    # refused too late before (finding 2)
    (["--backbone", "minilm-l7"], "unknown backbone 'minilm-l7'. Did you mean 'minilm-l6'"),
    (["--backbone", "/nonexistent/model"], "backbone path '/nonexistent/model' does not exist"),
    (["--backbone", "{gpt2}"], "is a 'gpt2' model; grain-bench prunes and compacts BERT-family encoders"),
    (["--backbone", "{distilbert}"], "is a 'distilbert' model; grain-bench prunes and compacts BERT-family"),
    (["--backbone", "{config-only}"], "has no weights"),
    (["--device", "tpu"], "--device 'tpu'"),
    (["--seeds=-1"], "seed -1 is not an integer in [0, 2^32)"),
    (["--seeds", "4294967296"], "seed 4294967296 is not an integer in [0, 2^32)"),
    (["-r", "max_eval_examples=0"], "option max_eval_examples=0 must be >= 1"),
    (["-r", "max_train_examples=0"], "option max_train_examples=0 must be >= 1"),
    (["-r", "max_length=1"], "option max_length=1 must be >= 16"),
    (["-r", "max_length=4096"], "max_length 4096 is longer than backbone 'test-bert-tiny' allows (128 positions)"),
    (["-r", "lr=nan"], "option lr=nan must be a finite number > 0"),
    (["-r", "lr=inf"], "option lr=inf must be a finite number > 0"),
    (["--methods", ""], "argument --methods: expected at least one method"),
    (["--densities", ""], "argument --densities: expected at least one density"),
    (["--seeds", ""], "argument --seeds: expected at least one seed"),
    (["--tasks", ","], "argument --tasks: expected at least one task"),
    (["--densities", "0.1,,0.2"], "empty item in '0.1,,0.2'"),
    (["--densities", "nan"], "option densities=nan must be a finite number in (0, 1]"),
]


@pytest.mark.usefixtures("builtin_plugins_only")
@pytest.mark.parametrize("args,expected", REFUSED, ids=[" ".join(a) for a, _ in REFUSED])
def test_refused_up_front_with_one_line_and_nothing_written(args, expected, backbones, tmp_path, capsys):
    results = tmp_path / "results"
    args = [a.format(**{p.name: str(p) for p in backbones.iterdir()}) if "{" in a else a for a in args]
    code, out, err = run_cli(*args, results=str(results), capsys=capsys)
    assert expected in one_line_error(code, err)
    assert not results.exists() and out == ""


@pytest.mark.usefixtures("builtin_plugins_only")
def test_results_that_is_a_file_is_refused(tmp_path, capsys):
    results = tmp_path / "results"
    results.write_text("my notes\n")
    code, _, err = run_cli("--methods", "dense", results=str(results), capsys=capsys)
    assert "is a file; expected a results directory" in one_line_error(code, err)
    assert results.read_text() == "my notes\n"


@pytest.mark.usefixtures("builtin_plugins_only")
def test_records_file_that_is_a_directory_is_refused(tmp_path, capsys):
    results = tmp_path / "results"
    (results / "records.jsonl").mkdir(parents=True)
    code, _, err = run_cli("--methods", "dense", results=str(results), capsys=capsys)
    assert "is not a regular file" in one_line_error(code, err)
    assert os.listdir(results) == ["records.jsonl"]


@pytest.mark.usefixtures("builtin_plugins_only")
def test_read_only_results_directory_is_refused(small_fs, tmp_path, capsys):
    results = read_only_results(small_fs, tmp_path)
    before = open(os.path.join(results, "records.jsonl"), "rb").read()
    code, _, err = run_cli("--methods", "dense", results=results, capsys=capsys)
    assert "is not writable" in one_line_error(code, err)
    assert open(os.path.join(results, "records.jsonl"), "rb").read() == before


@pytest.mark.usefixtures("builtin_plugins_only")
def test_store_lock_held_by_another_process_is_refused(tmp_path, monkeypatch, lock_holder, capsys):
    results = tmp_path / "results"
    results.mkdir()
    lock_holder(str(results))
    monkeypatch.setenv("GRAIN_BENCH_LOCK_TIMEOUT", "0.2")
    code, _, err = run_cli("--methods", "dense", results=str(results), capsys=capsys)
    assert "is held by another process for more than 0.2 s" in one_line_error(code, err)
    assert not (results / "records.jsonl").exists()
