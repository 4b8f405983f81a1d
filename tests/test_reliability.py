"""Nothing meaningless is recorded, and no trained run is lost to storage (issue 12): one test per finding.

Bad input is refused before anything runs (exit 2, one line, nothing written); a run either gives a meaningful record
or an error record that says why; storage failures keep the trained result. Everything runs on the tiny backbone and
a 128-row SST-2 folder; the full-disk and read-only cases use a real small tmpfs where the machine lets the tests
mount one (they skip with the reason otherwise).
"""

from __future__ import annotations

import csv
import io
import json
import os
import stat
import subprocess
import sys

import pytest
from test_leaderboard import make_record, write_store

from grain_bench.cli import main
from grain_bench.leaderboard.store import RecordStore
from grain_bench.types import RunRecord

BACKBONE = "test-bert-tiny"


@pytest.fixture(autouse=True)
def _builtin_plugins_only(monkeypatch, tmp_path):
    from grain_bench import plugins

    monkeypatch.setenv("GRAIN_BENCH_LOAD_PLUGINS", "")
    monkeypatch.setenv("GRAIN_BENCH_HOME", str(tmp_path / "home"))  # records written aside go here
    plugins.reset()
    yield
    plugins.reset()


def run_cli(*args: str, results: str, capsys) -> tuple[int, str, str]:
    """``grain-bench run`` on the tiny backbone; returns (exit code, stdout, stderr)."""
    code = main(["run", "--backbone", BACKBONE, "--recipe", "test", "--results", results, "-q", "--no-latency",
                 *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line_error(code: int, err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# ---- 1 and 2: values and names refused before anything runs ---------------------------------------------------------
@pytest.fixture(scope="module")
def backbones(tmp_path_factory):
    """Local model directories that are not usable backbones."""
    import transformers

    from grain_bench.backbones import load_tiny

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
    (["--densities", "nan"], "density nan is outside (0, 1]"),
]


@pytest.mark.parametrize("args,expected", REFUSED, ids=[" ".join(a) for a, _ in REFUSED])
def test_refused_up_front_with_one_line_and_nothing_written(args, expected, backbones, tmp_path, capsys):
    results = tmp_path / "results"
    args = [a.format(**{p.name: str(p) for p in backbones.iterdir()}) if "{" in a else a for a in args]
    code, out, err = run_cli(*args, results=str(results), capsys=capsys)
    assert expected in one_line_error(code, err)
    assert not results.exists() and out == ""


def test_unknown_plugin_in_load_plugins_is_an_error(monkeypatch, capsys):
    monkeypatch.setenv("GRAIN_BENCH_LOAD_PLUGINS", "nosuch")
    line = one_line_error(main(["methods"]), capsys.readouterr().err)
    assert "GRAIN_BENCH_LOAD_PLUGINS names 'nosuch', which no installed package provides" in line


# ---- 3: the results location -----------------------------------------------------------------------------------
def test_results_that_is_a_file_is_refused(tmp_path, capsys):
    results = tmp_path / "results"
    results.write_text("my notes\n")
    code, _, err = run_cli("--methods", "dense", results=str(results), capsys=capsys)
    assert "is a file; expected a results directory" in one_line_error(code, err)
    assert results.read_text() == "my notes\n"


def test_records_file_that_is_a_directory_is_refused(tmp_path, capsys):
    results = tmp_path / "results"
    (results / "records.jsonl").mkdir(parents=True)
    code, _, err = run_cli("--methods", "dense", results=str(results), capsys=capsys)
    assert "is not a regular file" in one_line_error(code, err)
    assert os.listdir(results) == ["records.jsonl"]


@pytest.fixture
def small_fs(tmp_path):
    """Mount a fresh tmpfs (size given to the returned function) at a new folder; unmounted afterwards."""
    mounts = []

    def mount(size: str = "1m") -> str:
        point = tmp_path / f"fs{len(mounts)}"
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(point)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a small filesystem here ({done.stderr.strip() or 'mount failed'}); "
                        f"the storage-failure tests need root or a user namespace with mount rights")
        mounts.append(point)
        return str(point)

    yield mount
    for point in reversed(mounts):
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


def _read_only(small_fs, tmp_path) -> str:
    """A results directory holding one record on a read-only filesystem (or read-only mode bits, as non-root)."""
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


def test_read_only_results_directory_is_refused(small_fs, tmp_path, capsys):
    results = _read_only(small_fs, tmp_path)
    before = open(os.path.join(results, "records.jsonl"), "rb").read()
    code, _, err = run_cli("--methods", "dense", results=results, capsys=capsys)
    assert "is not writable" in one_line_error(code, err)
    assert open(os.path.join(results, "records.jsonl"), "rb").read() == before


@pytest.fixture
def lock_holder():
    """Start a process that holds a store's lock until the test ends (the test waits for its 'locked' line)."""
    procs = []

    def hold(results: str):
        code = ("import sys; from filelock import FileLock; lock = FileLock(sys.argv[1]); lock.acquire(); "
                "print('locked', flush=True); sys.stdin.read()")
        proc = subprocess.Popen([sys.executable, "-c", code, os.path.join(results, "records.jsonl.lock")],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "locked"
        procs.append(proc)
        return proc

    yield hold
    for proc in procs:
        proc.stdin.close()
        proc.wait(30)


def test_store_lock_held_by_another_process_is_refused(tmp_path, monkeypatch, lock_holder, capsys):
    results = tmp_path / "results"
    results.mkdir()
    lock_holder(str(results))
    monkeypatch.setenv("GRAIN_BENCH_LOCK_TIMEOUT", "0.2")
    code, _, err = run_cli("--methods", "dense", results=str(results), capsys=capsys)
    assert "is held by another process for more than 0.2 s" in one_line_error(code, err)
    assert not (results / "records.jsonl").exists()


def _aside(tmp_path) -> list[str]:
    folder = tmp_path / "home" / "unsaved"
    return sorted(os.listdir(folder)) if folder.exists() else []


def test_lock_held_at_append_time_keeps_the_record_aside_until_the_next_run(tmp_path, monkeypatch, lock_holder):
    results = str(tmp_path / "results")
    store = RecordStore(results)
    first = make_record(seed=1)
    assert store.append(first) is None
    monkeypatch.setenv("GRAIN_BENCH_LOCK_TIMEOUT", "0.1")
    holder = lock_holder(results)
    second = make_record(seed=2)
    path = store.append(second)
    assert path == store.aside_path and os.path.isfile(path)
    assert store.aside == [(second.run_id, path)]
    assert [r.run_id for r in RecordStore(results).records()] == [first.run_id]  # the store itself is untouched
    holder.stdin.close()
    holder.wait(30)
    assert RecordStore(results).recover_aside() == 1
    assert [r.run_id for r in RecordStore(results).records()] == [first.run_id, second.run_id]
    assert RecordStore(results).recover_aside() == 0 and not os.path.exists(path)  # exactly once


def _fill(point: str, leave: int = 4096) -> str:
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


def test_full_disk_append_is_rolled_back_and_the_record_kept_aside(small_fs):
    point = small_fs("256k")
    results = os.path.join(point, "results")
    store = RecordStore(results)
    kept = make_record(seed=1)
    assert store.append(kept) is None
    size = os.path.getsize(store.path)
    filler = _fill(point)
    big = RunRecord(**{**make_record(seed=2).__dict__, "method_info": {"payload": "x" * 20_000}})
    path = store.append(big)  # 20 kB do not fit in the page left: the write stops part-way, then fails
    assert path is not None and path != store.path
    assert os.path.getsize(store.path) == size  # the partial line was cut off again
    assert [r.run_id for r in store.records()] == [kept.run_id] and store.problems == []
    os.remove(filler)
    assert store.recover_aside() == 1
    records = store.records()
    assert [r.run_id for r in records] == [kept.run_id, big.run_id] and store.problems == []
    assert records[1].method_info == big.method_info


def test_full_disk_during_a_sweep_loses_nothing(small_fs, data_dir, tmp_path, capsys):
    """The teacher cache and the record do not fit: the run still ends, its record waits aside, the command exits 1
    and says where; once there is space, the same command stores it (exactly once) and skips the run."""
    point = small_fs("512k")
    results = os.path.join(point, "results")
    os.makedirs(results)
    filler = _fill(point, leave=0)
    args = ("--tasks", "sst2", "--data-dir", data_dir, "--methods", "dense", "--no-save-models")
    code, out, err = run_cli(*args, results=results, capsys=capsys)
    assert code == 1, err
    assert "could not append run" in err and "kept in" in err and "Traceback" not in err
    assert not os.path.exists(os.path.join(results, "records.jsonl")) or \
        os.path.getsize(os.path.join(results, "records.jsonl")) == 0
    assert len(_aside(tmp_path)) == 1
    os.remove(filler)
    code, out, err = run_cli(*args, results=results, capsys=capsys)
    assert code == 0, err
    assert "appended 1 record(s) that an earlier run had to keep aside" in err
    assert "1 runs in the grid, 1 already recorded" in err
    records = RecordStore(results).records()
    assert len(records) == 1 and records[0].ok
    assert any("teacher could not be cached (" in w and "No space left on device" in w for w in records[0].warnings)
    assert _aside(tmp_path) == []


# ---- 4: wrongly typed records -------------------------------------------------------------------------------------
BAD_RECORDS = [
    {"run_id": "a1", "spec": {}, "status": "ok", "schema_version": "1"},
    {"run_id": "a2", "spec": {}, "status": "ok", "schema_version": None},
    {"run_id": ["a3"], "spec": {}, "status": "ok"},
    {"run_id": "a4", "spec": {}, "status": "done"},
    {"run_id": "a5", "spec": [], "status": "ok"},
    {"run_id": "a6", "spec": {}, "status": "ok", "scores": {"accuracy": "high"}},
    {"run_id": "a7", "spec": {}, "status": "ok", "latency": {}},
    {"run_id": "a8", "spec": {}, "status": "ok", "schema_version": True},
]


def test_wrongly_typed_records_are_skipped_with_a_note(tmp_path, capsys, data_dir):
    results = tmp_path / "results"
    write_store(results, [make_record(task="sst2", method="dense", density=1.0)])
    with open(results / "records.jsonl", "a") as handle:
        for record in BAD_RECORDS:
            handle.write(json.dumps(record) + "\n")
    store = RecordStore(str(results))
    assert len(store.records()) == 1
    assert [p.line for p in store.problems] == list(range(2, 2 + len(BAD_RECORDS)))
    assert "field schema_version is str" in str(store.problems[0])
    assert "field run_id is list" in str(store.problems[2])
    assert main(["leaderboard", "show", "--results", str(results)]) == 0
    err = capsys.readouterr().err
    assert err.count("skipped unreadable line") == len(BAD_RECORDS) and "Traceback" not in err
    code, _, err = run_cli("--tasks", "sst2", "--data-dir", data_dir, "--methods", "dense", results=str(results),
                           capsys=capsys)
    assert code == 0 and "Traceback" not in err


def test_non_finite_numbers_are_stored_as_null_with_a_flag(tmp_path):
    record = RunRecord(**{**make_record().__dict__, "scores": {"accuracy": float("nan")},
                          "flops": {"predicted_speedup": float("inf")}, "nonfinite": []})
    assert record.scores == {"accuracy": None} and record.flops == {"predicted_speedup": None}
    assert record.nonfinite == ["flops.predicted_speedup", "scores.accuracy"]
    store = RecordStore(str(tmp_path / "results"))
    store.append(record)

    def refuse(token):
        raise AssertionError(f"bare {token} in records.jsonl")

    line = open(store.path).read()
    assert json.loads(line, parse_constant=refuse)["nonfinite"] == record.nonfinite
    # A file from an older writer with bare NaN/Infinity tokens reads back the same way.
    with open(store.path, "a") as handle:
        handle.write(line.replace('"accuracy": null', '"accuracy": NaN').replace('"run_id": "', '"run_id": "x'))
    assert [r.scores for r in store.records()] == [{"accuracy": None}] * 2
    assert store.records()[1].nonfinite == ["flops.predicted_speedup", "scores.accuracy"]


def test_tables_never_rank_a_non_finite_score_nor_count_its_seed(tmp_path, capsys):
    records = [make_record(method="dense", density=1.0, score=0.8),
               make_record(method="grain", seed=1, score=0.7), make_record(method="grain", seed=2, score=0.72),
               make_record(method="heads", seed=1, score=0.6), make_record(method="heads", seed=2, score=0.65)]
    results = write_store(tmp_path / "results", records)
    with open(os.path.join(results, "records.jsonl"), "a") as handle:  # an old writer's bare tokens
        heads = json.dumps(make_record(method="heads", seed=3, score=0.5).to_dict()).replace("0.5}", "Infinity}", 1)
        grain = json.dumps(make_record(method="grain", seed=3, score=0.5).to_dict()).replace("0.5}", "NaN}", 1)
        handle.write(heads + "\n" + grain + "\n")
    from grain_bench.leaderboard.tables import build_report

    table = build_report(results).comparison.table.set_index("method")
    assert table.loc["heads", "seeds"] == 2 and table.loc["heads", "score_mean"] == pytest.approx(0.625)
    assert table.loc["grain", "seeds"] == 2 and table.loc["grain", "score_mean"] == pytest.approx(0.71)
    assert main(["leaderboard", "show", "--results", results]) == 0
    captured = capsys.readouterr()
    assert "inf" not in captured.out.lower() and "nan" not in captured.out.lower()
    assert "2 run(s) have no finite score" in captured.err
    assert main(["leaderboard", "show", "--results", results, "--format", "json"]) == 0
    json.loads(capsys.readouterr().out, parse_constant=lambda token: pytest.fail(f"bare {token} in JSON export"))


# ---- 5: divergence and poisoned teachers --------------------------------------------------------------------
@pytest.mark.parametrize("override,expected", [
    ("lr=1e6", "training diverged at step"),
    ("teacher_lr=1e6", "teacher fine-tuning diverged at step"),
])
def test_divergence_is_an_error_record_that_says_so(override, expected, tmp_path, capsys, data_dir):
    results = tmp_path / "results"
    code, _, err = run_cli("--tasks", "sst2", "--data-dir", data_dir, "--methods", "dense", "-r", override,
                           results=str(results), capsys=capsys)
    assert code == 1
    (record,) = RecordStore(str(results)).records()
    assert record.status == "error"
    assert expected in record.error and "lower the learning rate" in record.error
    assert "bug in grain_bench" not in record.error
    teachers = results / "teachers"
    cached = [n for n in os.listdir(teachers) if not n.startswith(".")] if teachers.exists() else []
    assert cached == [] if override.startswith("teacher") else len(cached) == 1


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


def test_a_cached_teacher_with_non_finite_weights_is_moved_aside(tmp_path):
    import torch

    from grain_bench.backbones import load_tiny
    from grain_bench.teachers import load_cached_teacher, save_teacher

    model, _ = load_tiny("sequence", 2)
    with torch.no_grad():
        model.classifier.weight.fill_(float("nan"))
    save_teacher(str(tmp_path), "key", model, {"scores": {"accuracy": 0.625}})
    assert load_cached_teacher(str(tmp_path), "key", load_tiny("sequence", 2)[0]) is None
    assert [n.split(".corrupt-")[0] for n in os.listdir(tmp_path)] == ["key"]


# ---- 6: smaller findings ------------------------------------------------------------------------------------
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


def test_rerun_after_a_failed_run_points_at_retry_failed(tmp_path, data_dir, capsys):
    results = tmp_path / "results"
    args = ("--tasks", "sst2", "--data-dir", data_dir, "--methods", "dense", "-r", "teacher_lr=1e6")
    assert run_cli(*args, results=str(results), capsys=capsys)[0] == 1
    code, _, err = run_cli(*args, results=str(results), capsys=capsys)
    assert code == 0
    assert "1 already recorded" in err and "1 of them failed and are skipped: rerun them with --retry-failed" in err


def test_teacher_cache_without_weights_is_repaired(tmp_path, data_dir, capsys):
    results = tmp_path / "results"
    args = ("--tasks", "sst2", "--data-dir", data_dir, "--no-save-models", "--densities", "0.5")
    assert run_cli(*args, "--methods", "dense", results=str(results), capsys=capsys)[0] == 0
    (entry,) = [n for n in os.listdir(results / "teachers") if not n.startswith(".")]
    os.remove(results / "teachers" / entry / "model.safetensors")
    assert run_cli(*args, "--methods", "random", results=str(results), capsys=capsys)[0] == 0
    assert os.path.isfile(results / "teachers" / entry / "model.safetensors")  # rebuilt in place
    moved = [n for n in os.listdir(results / "teachers") if n.startswith(entry + ".corrupt-")]
    assert len(moved) == 1


def test_cache_and_model_folders_are_readable_by_others(tmp_path, data_dir, capsys):
    results = tmp_path / "results"
    previous = os.umask(0o022)
    try:
        code, _, err = run_cli("--tasks", "sst2", "--data-dir", data_dir, "--methods", "dense",
                               results=str(results), capsys=capsys)
    finally:
        os.umask(previous)
    assert code == 0, err
    folders = [os.path.join(results, "teachers", n) for n in os.listdir(results / "teachers")]
    folders += [os.path.join(results, "models", n) for n in os.listdir(results / "models")]
    assert len(folders) == 2
    for folder in folders:
        assert stat.S_IMODE(os.stat(folder).st_mode) == 0o755, folder
        for name in os.listdir(folder):
            assert stat.S_IMODE(os.stat(os.path.join(folder, name)).st_mode) & 0o044 == 0o044, name
