"""The CLI: bad input is one line on stderr, exit 2, no traceback, nothing written; light commands import no torch."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys

import pytest
from helpers import run_cli

from grain_bench.cli import main

BAD_RUNS = [
    (["--methods", "grian"], "unknown method 'grian'. Did you mean 'grain'"),
    (["--tasks", "tweetz"], "unknown task 'tweetz'. Did you mean 'tweets'"),
    (["--densities", "0,0.5"], "option densities=0.0 must be in (0, 1] (give fractions such as 0.05,0.1)"),
    (["--densities", "1.5"], "option densities=1.5 must be in (0, 1]"),
    (["--densities", "half"], "expected comma-separated numbers"),
    (["--seeds", "one"], "expected comma-separated integers"),
    (["-o", "grain.alpah=0.3"], "unknown option 'alpah'. Did you mean 'alpha'"),
    (["-o", "grain.alpha=lots"], "option alpha='lots' must be a number"),
    (["-o", "alpha=0.3"], "malformed option 'alpha=0.3'"),
    (["-o", "heads.head_share=2"], "head_share must be a number in [0, 1]"),
    (["-o", "grain.score=best"], "not one of grad, random, magnitude"),
    (["-o", "magnitude.alpha=1", "--methods", "grain"], "not in --methods"),
    (["--recipe", "quik"], "unknown recipe 'quik'. Did you mean 'quick'"),
    (["-r", "max_stepz=3"], "unknown option 'max_stepz'. Did you mean 'max_steps'"),
    (["-r", "prune_start=0.9"], "prune_start <= prune_end"),
    (["--executor", "slurm"], "unknown executor 'slurm'"),
    (["--data-dir", "/nonexistent/dir"], "is not a directory"),
]


@pytest.mark.parametrize("args,expected", BAD_RUNS)
def test_bad_run_input_is_one_line_and_exit_2(args, expected, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GRAIN_BENCH_LOAD_PLUGINS", "")
    results = tmp_path / "results"
    code = main(["run", "--results", str(results), *args])
    err = capsys.readouterr().err
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert expected in lines[0]
    assert "Traceback" not in err
    assert not results.exists()  # nothing written


def test_unknown_command_and_missing_action(capsys):
    assert main(["frobnicate"]) == 2
    assert main(["leaderboard", "show", "--results", "/nonexistent"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_existing_records_are_not_touched_by_a_bad_command(tmp_path, capsys):
    results = tmp_path / "results"
    results.mkdir()
    store = results / "records.jsonl"
    store.write_text('{"run_id": "x", "spec": {}, "status": "ok"}\n')
    before = store.read_bytes(), os.stat(store).st_mtime_ns
    assert main(["run", "--results", str(results), "--methods", "nope"]) == 2
    assert (store.read_bytes(), os.stat(store).st_mtime_ns) == before


def _imports_torch(*args: str) -> bool:
    code = ("import sys, io, contextlib\nfrom grain_bench.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            f"    main({list(args)!r})\n"
            "print('torch' in sys.modules, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "GRAIN_BENCH_LOAD_PLUGINS": ""})
    return out.stdout.strip() != "False False"


@pytest.mark.parametrize("args", [("--help",), ("methods",), ("tasks",), ("plugins",)])
def test_light_commands_do_not_import_torch(args):
    assert not _imports_torch(*args)


def test_listing_commands(capsys, monkeypatch):
    monkeypatch.setenv("GRAIN_BENCH_LOAD_PLUGINS", "")
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert "grain" in out and "-o grain.alpha=<float>  (default: 0.3)" in out and "heads" in out
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    assert "tweets v1" in out
    assert main(["plugins"]) == 0
    assert "grain_bench.methods.grain  " in capsys.readouterr().out


def test_python_dash_m_entry_point():
    out = subprocess.run([sys.executable, "-m", "grain_bench", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("grain-bench ")


def test_run_options_without_a_command_mean_run(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GRAIN_BENCH_LOAD_PLUGINS", "")
    results = tmp_path / "results"
    assert main(["--methods", "grian,heads", "--tasks", "glue", "--results", str(results)]) == 2
    err = capsys.readouterr().err
    assert "unknown method 'grian'. Did you mean 'grain'" in err and "invalid choice" not in err
    assert not results.exists()
    assert main(["--help"]) == 0 and "Run options without a command mean `run`" in capsys.readouterr().out


@pytest.mark.usefixtures("builtin_plugins_only")
def test_csv_on_stdout_stays_csv_when_runs_fail_and_notes_exist(tmp_path, data_dir, capsys):
    results = tmp_path / "results"
    results.mkdir()
    with open(results / "records.jsonl", "w") as handle:
        handle.write('{"run_id": "torn", "spe\n')  # a note: an unreadable line
    broken = tmp_path / "broken"
    (broken / "RTE").mkdir(parents=True)
    for name in ("train.tsv", "dev.tsv"):  # present (so planned), but malformed: an error record at run time
        (broken / "RTE" / name).write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tmaybe\n")
    code, out, err = run_cli("--tasks", "sst2", "--data-dir", data_dir, "--methods", "dense", "--format", "csv",
                             results=str(results), capsys=capsys)
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["method"] for r in rows] == ["teacher", "chance", "dense"]
    assert "skipped unreadable line 1" in err
    code, out, err = run_cli("--tasks", "rte", "--data-dir", str(broken), "--methods", "dense", "--format", "csv",
                             results=str(results), capsys=capsys)
    assert code == 1 and out == ""  # nothing but the (empty) table on stdout
    assert "failed" in err and "label 'maybe'" in err
