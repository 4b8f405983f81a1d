"""Everything checked before work starts (issue 28, part C): environment variables, ``--versus``, ``--data-revision``;
exit codes (a sweep whose records wait aside, ``leaderboard show`` on an empty store or an unknown task); the Python
API's errors for every bad argument, types included. One regression test per finding, on the tiny backbone."""

from __future__ import annotations

import math
import os

import pytest
from filelock import FileLock
from helpers import one_line_error, records_aside, run_cli

from grain_bench.cli import main
from grain_bench.errors import UsageError
from grain_bench.hookspecs import hookimpl

SST2 = ("--tasks", "sst2", "--methods", "dense")


# ---- 1. environment variables, before anything trains ----------------------------------------------------------

@pytest.mark.usefixtures("builtin_plugins_only")
@pytest.mark.parametrize("value", ["soon", "-1", "inf", "nan"])
def test_an_invalid_lock_timeout_is_refused_before_a_new_results_directory_trains(value, tmp_path, data_dir,
                                                                                 monkeypatch, capsys):
    """Before: with a new results directory the first run trained, cached its teacher, wrote its masks and
    predictions, and then lost its record at the append (exit 2)."""
    monkeypatch.setenv("GRAIN_BENCH_LOCK_TIMEOUT", value)
    results = tmp_path / "results"
    code, out, err = run_cli(*SST2, "--data-dir", data_dir, results=str(results), capsys=capsys)
    line = one_line_error(code, err)
    assert f"GRAIN_BENCH_LOCK_TIMEOUT={value!r} is not a number of seconds >= 0" in line and "unset it" in line
    assert not results.exists() and out == "" and records_aside(tmp_path) == []


@pytest.mark.usefixtures("builtin_plugins_only")
@pytest.mark.parametrize("below", ["", "sub"])
def test_a_grain_bench_home_that_is_a_file_is_refused_by_run_and_profile(below, tmp_path, data_dir, monkeypatch,
                                                                         capsys):
    """Before: a traceback (NotADirectoryError) when the sweep looked for records kept aside there."""
    home = tmp_path / "home-file"
    home.write_text("not a folder\n")
    monkeypatch.setenv("GRAIN_BENCH_HOME", str(home / below) if below else str(home))
    results = tmp_path / "results"
    code, out, err = run_cli(*SST2, "--data-dir", data_dir, results=str(results), capsys=capsys)
    line = one_line_error(code, err)
    assert line.startswith("grain-bench: error: GRAIN_BENCH_HOME=") and "is a file" in line
    assert not results.exists() and home.read_text() == "not a folder\n"
    code = main(["profile", "--backbone", "test-bert-tiny", "-q"])  # it would keep its model there, after minutes
    assert "GRAIN_BENCH_HOME=" in one_line_error(code, capsys.readouterr().err)


@pytest.mark.usefixtures("builtin_plugins_only")
@pytest.mark.parametrize("form,expected", [("relative/cache", "is not an absolute path"), ("file", "is not a folder")])
def test_an_unusable_kernel_cache_setting_is_refused_before_a_sweep_trains(form, expected, tmp_path, data_dir,
                                                                          monkeypatch, capsys):
    """The sweep's preflight checks GRAIN_BENCH_KERNEL_CACHE's form too (the ragged runtime would fail on it later)."""
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    monkeypatch.setenv("GRAIN_BENCH_KERNEL_CACHE", form if form != "file" else str(blocker / "cache"))
    results = tmp_path / "results"
    code, out, err = run_cli(*SST2, "--data-dir", data_dir, results=str(results), capsys=capsys)
    line = one_line_error(code, err)
    assert "GRAIN_BENCH_KERNEL_CACHE" in line or str(blocker) in line, line
    assert expected in line and not results.exists() and out == ""


# ---- 2. --versus resolved through the registry, before training ------------------------------------------------

@pytest.mark.usefixtures("builtin_plugins_only")
@pytest.mark.parametrize("versus,expected", [
    ("nosuch", "unknown method 'nosuch'"),
    ("gran", "unknown method 'gran'. Did you mean 'grain'"),
    ("", "--versus needs a method of --methods (dense, grain) or none"),
    ("heads", "method 'heads' is not in --methods (dense, grain)"),
])
def test_a_versus_that_names_no_method_of_the_grid_is_refused_before_training(versus, expected, tmp_path, data_dir,
                                                                              capsys):
    """Before: the whole grid trained, and the command exited 0 with a note."""
    results = tmp_path / "results"
    code, out, err = run_cli("--tasks", "sst2", "--methods", "dense,grain", "--data-dir", data_dir, "--versus", versus,
                             results=str(results), capsys=capsys)
    assert expected in one_line_error(code, err)
    assert not results.exists() and out == ""


@pytest.mark.usefixtures("builtin_plugins_only")
def test_a_versus_alias_is_resolved_to_its_method(tmp_path, data_dir, capsys, one_thread):
    """Before: ``--versus head-pruning`` found no rows named so and left the comparison out."""
    from grain_bench.plugins import get_registries

    assert get_registries().methods.entry("head-pruning").name == "heads"
    code, out, err = run_cli("--tasks", "sst2", "--methods", "dense,heads", "--densities", "0.5", "--data-dir",
                             data_dir, "--versus", "head-pruning", "--no-save-models", results=str(tmp_path / "r"),
                             capsys=capsys)
    assert code == 0, err
    assert "vs heads (pts)" in out and "head-pruning" not in out


def test_leaderboard_versus_resolves_an_alias_and_refuses_an_empty_name(tmp_path, capsys, monkeypatch):
    from test_leaderboard import grid, write_store

    monkeypatch.setenv("GRAIN_BENCH_LOAD_PLUGINS", "")
    results = write_store(tmp_path / "results", grid(speedups=False))
    assert main(["leaderboard", "show", "--results", results, "--versus", "head-pruning"]) == 0
    err = capsys.readouterr().err  # the synthetic runs stored no predictions: a note, against heads by its name
    assert "no paired interval against heads" in err and "head-pruning" not in err
    code = main(["leaderboard", "show", "--results", results, "--versus", " "])
    assert "--versus needs a method name" in one_line_error(code, capsys.readouterr().err)


# ---- 3. --data-revision refused where it cannot apply ----------------------------------------------------------

@pytest.mark.usefixtures("builtin_plugins_only")
@pytest.mark.parametrize("args,expected", [
    (["--tasks", "sst2", "--data-dir", "{data}", "--data-revision", "main"],
     "--data-revision applies to hub data, not to --data-dir"),
    (["--tasks", "sst2", "--data-dir", "{data}", "--data-revision", "glue=main"],
     "--data-revision applies to hub data, not to --data-dir"),
    (["--tasks", "tweets", "--data-revision", "main"], "task tweets does not load from the hub"),
    (["--tasks", "tweets", "--data-revision", "tweets=v2"], "task tweets does not load from the hub"),
    (["--tasks", "tweets", "--data-revision", "rte=main"], "'rte' is none of the tasks of --tasks (tweets)"),
    (["--tasks", "rte", "--data-revision", "rte="], "expected a branch, tag or commit"),
])
def test_a_data_revision_that_cannot_apply_is_refused(args, expected, tmp_path, data_dir, capsys):
    """Before: silently ignored, the runs named after data the revision never chose."""
    results = tmp_path / "results"
    args = [data_dir if a == "{data}" else a for a in args]
    code, out, err = run_cli("--methods", "dense", *args, results=str(results), capsys=capsys)
    assert expected in one_line_error(code, err)
    assert not results.exists()


# ---- 4. a sweep whose records had to be kept aside -------------------------------------------------------------

class TakesTheStoreLock:
    """Another writer of the store: takes its lock as the run finishes (``run_finished``), before the sweep appends
    the record, and holds it until the test releases it."""

    def __init__(self, results: str):
        self.lock = FileLock(os.path.join(results, "records.jsonl.lock"))

    @hookimpl
    def run_finished(self, record):
        self.lock.acquire()


@pytest.mark.usefixtures("builtin_plugins_only")
def test_a_sweep_whose_every_record_is_kept_aside_exits_1_and_says_where(tmp_path, data_dir, monkeypatch, capsys):
    """Before: "no records ... run `grain-bench run` first", exit 2, without the "kept in" summary."""
    from grain_bench.leaderboard.store import RecordStore
    from grain_bench.plugins import get_plugin_manager

    results = tmp_path / "results"
    results.mkdir()
    monkeypatch.setenv("GRAIN_BENCH_LOCK_TIMEOUT", "0.1")
    other_writer = TakesTheStoreLock(str(results))
    get_plugin_manager().register(other_writer)
    args = (*SST2, "--data-dir", data_dir, "--no-save-models")
    try:
        code, out, err = run_cli(*args, results=str(results), capsys=capsys)
    finally:
        get_plugin_manager().unregister(other_writer)
        other_writer.lock.release()
    assert code == 1, err
    assert "could not be appended to" in err and "its record is kept in" in err
    assert "no records" not in err and "Traceback" not in err
    assert not (results / "records.jsonl").exists() and len(records_aside(tmp_path)) == 1
    code, out, err = run_cli(*args, results=str(results), capsys=capsys)  # the lock is free again: nothing lost
    assert code == 0, err
    assert "appended 1 record(s) that an earlier run had to keep aside" in err and "1 already recorded" in err
    assert [r.spec.method for r in RecordStore(str(results)).records()] == ["dense"]


@pytest.mark.usefixtures("builtin_plugins_only")
def test_the_python_api_returns_the_runs_whose_records_are_kept_aside(tmp_path, data_dir, monkeypatch, capsys):
    """Before: ``grain_bench.run`` raised "no records ... run `grain-bench run` first" after training the grid."""
    import grain_bench
    from grain_bench.plugins import get_plugin_manager

    results = tmp_path / "results"
    results.mkdir()
    monkeypatch.setenv("GRAIN_BENCH_LOCK_TIMEOUT", "0.1")
    other_writer = TakesTheStoreLock(str(results))
    get_plugin_manager().register(other_writer)
    choices = dict(methods=["dense"], tasks=["sst2"], data_dir=data_dir, backbone="test-bert-tiny", recipe="test",
                   results=str(results), save_models=False, measure_latency=False, progress=False)
    try:
        frame = grain_bench.run(**choices)
    finally:
        get_plugin_manager().unregister(other_writer)
        other_writer.lock.release()
    assert list(frame["method"]) == ["dense"] and list(frame["status"]) == ["ok"]
    assert "its record is kept in" in capsys.readouterr().err and len(records_aside(tmp_path)) == 1
    again = grain_bench.run(**choices)  # appended from aside, not re-run
    assert list(again["run_id"]) == list(frame["run_id"]) and records_aside(tmp_path) == []


# ---- 5. leaderboard show: an empty store, a task it does not hold ----------------------------------------------

@pytest.mark.parametrize("action", [["show"], ["export", "--format", "csv"], ["publish", "--out", "{site}"]])
def test_leaderboard_of_an_empty_store_is_exit_2(action, tmp_path, capsys, monkeypatch):
    """Before: ``show`` printed "(no successful runs)" and exited 0."""
    monkeypatch.setenv("GRAIN_BENCH_LOAD_PLUGINS", "")
    results = tmp_path / "results"
    results.mkdir()
    (results / "records.jsonl").write_text("")
    action = [str(tmp_path / "site") if a == "{site}" else a for a in action]
    code = main(["leaderboard", *action, "--results", str(results)])
    line = one_line_error(code, capsys.readouterr().err)
    assert "no records in" in line and "run `grain-bench run --results" in line
    assert not (tmp_path / "site").exists()


@pytest.mark.parametrize("task,expected", [("nosuch", "no records of task 'nosuch'"),
                                           ("sst-2", "no records of task 'sst-2' in"),
                                           ("tweet", "Did you mean 'tweets'? Tasks there: sst2, tweets")])
def test_leaderboard_show_of_a_task_the_store_does_not_hold_is_exit_2(task, expected, tmp_path, capsys,
                                                                      monkeypatch):
    """Before: an empty table and exit 0."""
    from test_leaderboard import make_record, write_store

    monkeypatch.setenv("GRAIN_BENCH_LOAD_PLUGINS", "")
    results = write_store(tmp_path / "results", [make_record("tweets"), make_record("sst2")])
    code = main(["leaderboard", "show", "--results", results, "--task", task])
    assert expected in one_line_error(code, capsys.readouterr().err)
    assert main(["leaderboard", "show", "--results", results, "--task", "tweets"]) == 0


# ---- 6. the Python API: one UsageError for every bad argument, types included ----------------------------------

BAD_ARGUMENTS = [
    ({"results": None}, "option results=None must be a string"),
    ({"backbone": None}, "option backbone=None must be a string"),
    ({"methods": None}, "option methods=None must be a list"),
    ({"tasks": {"sst2": 1}}, "option tasks={'sst2': 1} must be a list"),
    ({"recipe_options": {"max_steps": math.inf}}, "option max_steps=inf must be an integer"),
    ({"recipe_options": {"lr": 10 ** 400}}, "must be a finite number"),
    ({"seeds": [math.inf]}, "option seeds=inf must be an integer"),
    ({"seeds": [10 ** 400]}, "is not an integer in [0, 2^32)"),
    ({"densities": "half"}, "option densities='half' must be a number"),
    ({"methods": ["dense", "grian"]}, "unknown method 'grian'. Did you mean 'grain'"),
    ({"save_models": None}, "option save_models=None must be true or false"),
    ({"recipe_options": None}, "recipe_options must be a dict"),
    ({"data_revisions": {"glue": 3}}, "data_revisions['glue'] must be a branch, tag or commit as a string, got 3"),
]


@pytest.mark.usefixtures("builtin_plugins_only")
@pytest.mark.parametrize("how", ["keywords", "request"])
@pytest.mark.parametrize("bad,expected", BAD_ARGUMENTS, ids=[next(iter(b)) + "-" + str(i)
                                                             for i, (b, _) in enumerate(BAD_ARGUMENTS)])
def test_the_python_api_raises_one_usage_error_for_every_bad_argument(how, bad, expected, tmp_path):
    """Before: raw ``TypeError``/``OverflowError``, or a request holding None as a path; through ``SweepRequest(...)``
    built directly, "unknown method 'd'" for ``methods="dense"`` (the string split into letters)."""
    import grain_bench
    from grain_bench.request import SweepRequest

    choices = {"backbone": "test-bert-tiny", "recipe": "test", "results": str(tmp_path / "r"), **bad}
    with pytest.raises(UsageError) as raised:
        grain_bench.run(**choices) if how == "keywords" else grain_bench.run(SweepRequest(**choices))
    assert expected in str(raised.value) and "\n" not in str(raised.value)
    assert not (tmp_path / "r").exists()


def test_a_sweep_request_built_directly_holds_what_parse_would():
    """One value or a comma string where a list is expected means the same as through the keywords and the CLI."""
    from grain_bench.request import SweepRequest

    given = {"methods": "dense", "tasks": "tweets", "densities": 0.5, "seeds": 1, "target_speedups": range(2, 4)}
    direct = SweepRequest(**given)
    assert direct == SweepRequest.parse(given)
    assert direct.methods == ("dense",) and direct.tasks == ("tweets",) and direct.densities == (0.5,)
    assert direct.seeds == (1,) and direct.target_speedups == (2.0, 3.0)
    with pytest.raises(UsageError, match="must be a grain_bench.request.SweepRequest, got dict"):
        import grain_bench

        grain_bench.run({"methods": ["dense"]})


def test_run_and_leaderboard_choose_the_same_default_versus(regs):
    """Before: ``run --methods dense,grain`` compared with dense, its first method, while ``leaderboard`` compared
    the same records with grain. Now both take grain when it is there; ``run`` falls back on its first method."""
    from grain_bench.cli import _checked_versus
    from grain_bench.request import SweepRequest

    cases = ((["dense", "grain"], "grain"), (["heads", "dense"], "heads"), (["head-pruning"], "heads"))
    for methods, expected in cases:
        assert _checked_versus(None, SweepRequest.parse({"methods": methods}), regs) == expected


def test_every_missing_data_file_is_named_at_once(tmp_path):
    """Before: one missing file per attempt (fix it, run again, learn of the next)."""
    from grain_bench.data import DataIdentity
    from grain_bench.errors import DataError

    (tmp_path / "train.tsv").write_text("sentence\tlabel\n")
    files = {"train": str(tmp_path / "train.tsv"), "dev": str(tmp_path / "dev.tsv"), "test": str(tmp_path / "t.tsv")}
    with pytest.raises(DataError, match="2 data files not found") as caught:
        DataIdentity.of_files(files, str(tmp_path))
    assert "dev.tsv" in str(caught.value) and "t.tsv" in str(caught.value) and "train.tsv" not in str(caught.value)
    with pytest.raises(DataError, match=r"dev\.tsv not found \(data files expected under"):
        DataIdentity.of_files({"dev": files["dev"]}, str(tmp_path))
