"""Integrity of the artifacts grain-bench writes and later trusts (issue 28): saved compact models, masks files and
predictions files, and ``grain-bench measure``'s checks before it times anything.

Fault injection over each artifact kind (truncate, flip bytes, replace with another run's file, make it a directory,
make its folder read-only): each either loads correctly or fails with one line naming the file and what to do;
nothing wrong is ever served."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import stat

import pytest
import torch

from grain_bench.errors import GrainBenchError, UsageError
from grain_bench.masks import MaskSpace, UnitMasks


def _random_masks(space: MaskSpace, seed: int, keep: float = 0.6) -> UnitMasks:
    generator = torch.Generator().manual_seed(seed)
    return UnitMasks(*(torch.rand(shape, generator=generator) < keep for shape in space.shapes().values()))


def _inputs(vocab: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {"input_ids": torch.randint(0, vocab, (2, 9), generator=generator),
            "attention_mask": torch.ones(2, 9, dtype=torch.long)}


@pytest.fixture
def saved(tmp_path, tiny_model):
    """(compact model, its saved folder, a second run's saved folder of another shape)."""
    from grain_bench.compaction import compact, save_pruned

    model, tokenizer = tiny_model
    space = MaskSpace.from_config(model.config)
    small = compact(model, _random_masks(space, 0), space).eval()
    other = compact(model, _random_masks(space, 1, keep=0.4), space).eval()
    return (small, save_pruned(small, str(tmp_path / "model"), tokenizer=tokenizer),
            save_pruned(other, str(tmp_path / "other"), tokenizer=tokenizer))


def _edit_json(file: str, edit) -> None:
    with open(file) as handle:
        values = json.load(handle)
    edit(values)
    with open(file, "w") as handle:
        json.dump(values, handle)


def _unverified(folder: str) -> None:
    """Make ``folder`` look saved before the content hashes were recorded."""
    _edit_json(os.path.join(folder, "grain_bench.json"), lambda meta: meta.pop("sha256"))


def _truncate(file: str) -> None:
    os.truncate(file, os.path.getsize(file) // 2)


def _flip(file: str) -> None:
    data = bytearray(open(file, "rb").read())
    data[len(data) // 2] ^= 0xFF
    with open(file, "wb") as handle:
        handle.write(data)


def _make_directory(file: str) -> None:
    os.remove(file)
    os.mkdir(file)


def _one_line_naming(exc: GrainBenchError, file: str) -> str:
    text = str(exc)
    assert "\n" not in text and file in text, text
    return text


# --- saved models --------------------------------------------------------------------------------------------------

def test_a_saved_model_records_the_hashes_of_its_config_and_weights(saved):
    from grain_bench.compaction import load_pruned
    from grain_bench.files import sha256_of_file

    small, folder, _ = saved
    with open(os.path.join(folder, "grain_bench.json")) as handle:
        hashes = json.load(handle)["sha256"]
    assert hashes == {name: sha256_of_file(os.path.join(folder, name)) for name in ("config.json", "model.safetensors")}
    inputs = _inputs(small.config.vocab_size)
    with torch.no_grad():
        assert torch.equal(small(**inputs).logits, load_pruned(folder)(**inputs).logits)


@pytest.mark.parametrize("fault", ["truncate", "flip", "another run's", "directory", "missing"])
@pytest.mark.parametrize("name", ["model.safetensors", "config.json"])
def test_a_damaged_saved_model_is_refused_naming_the_file(saved, fault, name):
    """Each fault on the weights or the config of a saved model raises one ``UsageError`` line naming the file."""
    from grain_bench.compaction import load_pruned

    _, folder, other = saved
    file = os.path.join(folder, name)
    {"truncate": _truncate, "flip": _flip, "directory": _make_directory, "missing": os.remove,
     "another run's": lambda f: shutil.copyfile(os.path.join(other, name), f)}[fault](file)
    with pytest.raises(UsageError) as caught:
        load_pruned(folder)
    assert "save" in _one_line_naming(caught.value, file)


@pytest.mark.parametrize("fault", ["truncate", "flip", "directory", "missing"])
def test_damaged_metadata_is_refused_or_the_right_model_is_served(saved, fault):
    """``grain_bench.json`` (which holds the hashes) cut short, a directory or missing is refused naming it; with a
    flipped byte either refused or, where the byte is outside what is checked, the right model."""
    from grain_bench.compaction import load_pruned

    small, folder, _ = saved
    file = os.path.join(folder, "grain_bench.json")
    {"truncate": _truncate, "flip": _flip, "directory": _make_directory, "missing": os.remove}[fault](file)
    try:
        loaded = load_pruned(folder)
    except UsageError as exc:
        _one_line_naming(exc, file)
        return
    assert fault == "flip"
    inputs = _inputs(small.config.vocab_size)
    with torch.no_grad():
        assert torch.equal(small(**inputs).logits, loaded(**inputs).logits)


def test_metadata_from_another_run_is_refused(saved):
    from grain_bench.compaction import load_pruned

    _, folder, other = saved
    shutil.copyfile(os.path.join(other, "grain_bench.json"), os.path.join(folder, "grain_bench.json"))
    with pytest.raises(UsageError, match="does not match the SHA-256 recorded"):
        load_pruned(folder)


@pytest.mark.parametrize("change", [1, -1])
def test_a_config_with_a_layer_more_or_fewer_than_the_weights_is_refused(saved, change):
    """Without a hash (a folder saved before them), a config listing one more layer than the weights (which gave a
    randomly initialised layer) or one fewer (which dropped one) is refused on the tensors' names."""
    from grain_bench.compaction import load_pruned

    _, folder, _ = saved
    _unverified(folder)

    def edit(config):
        config["layer_shapes"] = (config["layer_shapes"] + config["layer_shapes"][:1] if change > 0
                                  else config["layer_shapes"][:-1])
        config["num_hidden_layers"] += change

    _edit_json(os.path.join(folder, "config.json"), edit)
    with pytest.raises(UsageError, match="does not fit the widths in config.json") as caught:
        load_pruned(folder)
    _one_line_naming(caught.value, os.path.join(folder, "model.safetensors"))


@pytest.mark.parametrize("field", ["heads", "ffn_dim"])
def test_a_config_with_other_widths_than_the_weights_is_refused(saved, field):
    from grain_bench.compaction import load_pruned

    _, folder, _ = saved
    _unverified(folder)

    def edit(config):
        layer = config["layer_shapes"][0]
        if field == "heads":
            layer["heads"][0][1] += 1
        else:
            layer["ffn_dim"] += 1

    _edit_json(os.path.join(folder, "config.json"), edit)
    with pytest.raises(UsageError, match="of another shape"):
        load_pruned(folder)


def test_non_finite_weights_are_refused(saved):
    """NaN weights (which gave every logit NaN) are refused, also in a folder without hashes."""
    from safetensors.torch import load_file, save_file

    from grain_bench.compaction import load_pruned

    _, folder, _ = saved
    _unverified(folder)
    weights = os.path.join(folder, "model.safetensors")
    tensors = load_file(weights)
    name = sorted(tensors)[-1]
    tensors[name][0] = float("nan")
    save_file(tensors, weights, metadata={"format": "pt"})
    with pytest.raises(UsageError, match=f"non-finite weights .* first {name}"):
        load_pruned(folder)


def test_a_folder_saved_before_hashes_still_loads(saved):
    """Saved before the hashes were recorded: not verified against one, still loaded (shapes and finiteness hold)."""
    from grain_bench.compaction import load_pruned

    small, folder, _ = saved
    _unverified(folder)
    inputs = _inputs(small.config.vocab_size)
    with torch.no_grad():
        assert torch.equal(small(**inputs).logits, load_pruned(folder)(**inputs).logits)


@pytest.mark.parametrize("file, key", [("grain_bench.json", "format_version"), ("grain_bench.json", "format")])
def test_metadata_of_another_format_is_refused(saved, file, key):
    from grain_bench.compaction import load_pruned

    _, folder, _ = saved
    _edit_json(os.path.join(folder, file), lambda meta: meta.update({key: 99}))
    with pytest.raises(UsageError) as caught:
        load_pruned(folder)
    _one_line_naming(caught.value, os.path.join(folder, file))


def test_a_read_only_saved_model_loads_and_nothing_is_written(saved):
    from grain_bench.compaction import load_pruned

    small, folder, _ = saved
    before = sorted(os.listdir(folder))
    os.chmod(folder, stat.S_IRUSR | stat.S_IXUSR)
    try:
        loaded = load_pruned(folder)
    finally:
        os.chmod(folder, stat.S_IRWXU)
    assert sorted(os.listdir(folder)) == before
    inputs = _inputs(small.config.vocab_size)
    with torch.no_grad():
        assert torch.equal(small(**inputs).logits, loaded(**inputs).logits)


def test_an_unreadable_saved_model_is_refused_in_one_line(saved):
    from grain_bench.compaction import load_pruned

    _, folder, _ = saved
    os.chmod(os.path.join(folder, "model.safetensors"), 0)
    try:
        if os.access(os.path.join(folder, "model.safetensors"), os.R_OK):
            pytest.skip("this user reads a file without read permission (root)")
        with pytest.raises(UsageError, match="cannot read"):
            load_pruned(folder)
    finally:
        os.chmod(os.path.join(folder, "model.safetensors"), 0o644)


# --- masks files and `grain-bench measure` -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained_store(tmp_path_factory):
    """A results directory with two finished runs (grain and heads on a small SST-2) that stored masks and
    predictions; each test works on a copy (``store``)."""
    from helpers import write_sst2

    import grain_bench
    from grain_bench import plugins

    base = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GRAIN_BENCH_LOAD_PLUGINS", "")
        patch.setenv("GRAIN_BENCH_HOME", str(base / "home"))
        plugins.reset()
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            frame = grain_bench.run(methods=["grain", "heads"], tasks=["sst2"], densities=[0.5],
                                    backbone="test-bert-tiny", recipe="test", data_dir=write_sst2(base / "data"),
                                    results=str(base / "results"), measure_latency=False, save_models=False,
                                    progress=False)
        finally:
            torch.set_num_threads(before)
            plugins.reset()
    assert (frame["status"] == "ok").all()
    return str(base / "results"), dict(zip(frame["method"], frame["run_id"])), str(base / "data")


@pytest.fixture
def store(trained_store, tmp_path, builtin_plugins_only):
    """(a fresh copy of the trained results directory, {method: run id})."""
    source, ids, _ = trained_store
    results = str(tmp_path / "results")
    shutil.copytree(source, results)
    return results, ids


def _masks_file(results: str, run_id: str) -> str:
    return os.path.join(results, "masks", f"{run_id}.json.gz")


def _read_gz(file: str):
    with gzip.open(file, "rb") as handle:
        return json.loads(handle.read())


def _write_gz(file: str, doc) -> None:
    with gzip.open(file, "wb") as handle:
        handle.write(json.dumps(doc).encode())


def _measure(results: str, capsys, *extra: str) -> tuple[int, str, str]:
    from grain_bench.cli import main

    code = main(["measure", "--results", results, "--runs", "2", "--batch", "2", "--threads", "1", "-q", *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _stored_runs(results: str) -> set[str]:
    from grain_bench.leaderboard.store import load_measurements

    return set(load_measurements(results))


def _forge_all_zero(doc, rehash: bool) -> None:
    from grain_bench.predictions import _masks_digest

    doc["masks"] = {kind: torch.zeros(torch.tensor(values).shape, dtype=torch.uint8).tolist()
                    for kind, values in doc["masks"].items()}
    if rehash:
        doc["sha256"] = _masks_digest(doc)
    else:
        doc.pop("sha256")


def test_masks_files_carry_a_hash_of_their_content(store):
    from grain_bench.predictions import _masks_digest

    results, ids = store
    doc = _read_gz(_masks_file(results, ids["grain"]))
    assert doc["run_id"] == ids["grain"] and doc["sha256"] == _masks_digest(doc)


@pytest.mark.parametrize("rehash", [True, False])
def test_a_forged_all_zero_masks_file_is_refused_and_the_other_run_is_still_retimed(store, capsys, rehash):
    """An all-zero masks file (its hash recomputed, or removed as in a file written before hashes) is refused, not
    timed; the other run is re-timed and stored, and measure exits 1 with one line naming the file."""
    results, ids = store
    file = _masks_file(results, ids["grain"])
    doc = _read_gz(file)
    _forge_all_zero(doc, rehash)
    _write_gz(file, doc)
    code, _, err = _measure(results, capsys)
    assert code == 1, err
    assert _stored_runs(results) == {ids["heads"]}
    lines = [line for line in err.splitlines() if ids["grain"] in line]
    assert len(lines) == 1 and file in lines[0] and "density" in lines[0], err
    assert "Traceback" not in err


def _truncate_gz(file: str) -> None:
    _truncate(file)


def _not_gzip(file: str) -> None:
    with open(file, "wb") as handle:
        handle.write(b"not gzip at all")


def _wrong_shape(file: str) -> None:
    doc = _read_gz(file)
    doc["masks"]["ffn"] = [row[:-1] for row in doc["masks"]["ffn"]]
    doc.pop("sha256")
    _write_gz(file, doc)


def _other_space(file: str) -> None:
    """Consistent masks over another mask space (three layers): fit their own space, not the backbone's."""
    doc = _read_gz(file)
    doc["space"]["num_layers"] += 1
    doc["masks"] = {kind: values + values[:1] for kind, values in doc["masks"].items()}
    doc.pop("sha256")
    _write_gz(file, doc)


def _edited_keeping_the_density(file: str) -> None:
    doc = _read_gz(file)
    row = doc["masks"]["ffn"][0]
    row[row.index(1)], row[row.index(0)] = 0, 1  # the same density, another mask: only the hash shows it
    _write_gz(file, doc)


@pytest.mark.parametrize("fault, expected", [
    (_truncate_gz, "cannot read the masks"), (_flip, "the masks"), (_not_gzip, "cannot read the masks"),
    (_make_directory, "cannot read the masks"), (_wrong_shape, "masks of shape"),
    (_other_space, "not the model's"), (_edited_keeping_the_density, "SHA-256"),
    (lambda f: _write_gz(f, {"format": "grain-bench-masks", "format_version": 7}), "format version 7"),
    (lambda f: _write_gz(f, [1, 2]), "not a grain-bench masks file")])
def test_a_damaged_masks_file_is_reported_and_the_other_run_is_still_retimed(store, capsys, fault, expected):
    results, ids = store
    file = _masks_file(results, ids["grain"])
    fault(file)
    code, _, err = _measure(results, capsys)
    assert code == 1, err
    assert _stored_runs(results) == {ids["heads"]}
    lines = [line for line in err.splitlines() if ids["grain"] in line]
    assert len(lines) == 1 and file in lines[0] and expected in lines[0], err
    assert "Traceback" not in err


def test_another_runs_masks_file_is_refused(store, capsys):
    results, ids = store
    shutil.copyfile(_masks_file(results, ids["heads"]), _masks_file(results, ids["grain"]))
    code, _, err = _measure(results, capsys)
    assert code == 1 and f"belong to run {ids['heads']!r}, not to run {ids['grain']}" in err, err
    assert _stored_runs(results) == {ids["heads"]}


def test_a_read_only_masks_folder_is_read(store, capsys):
    results, ids = store
    folder = os.path.join(results, "masks")
    os.chmod(folder, stat.S_IRUSR | stat.S_IXUSR)
    try:
        code, _, err = _measure(results, capsys)
    finally:
        os.chmod(folder, stat.S_IRWXU)
    assert code == 0, err
    assert _stored_runs(results) == set(ids.values())


def test_committed_masks_files_without_a_hash_are_accepted():
    """The committed benchmark results' masks (written before the hash) still load, checked against their records."""
    import glob

    from helpers import ROOT

    from grain_bench.leaderboard.tables import load_records
    from grain_bench.predictions import load_masks

    checked = 0
    for results in sorted(glob.glob(os.path.join(ROOT, "benchmarks", "results", "*", "masks"))):
        records, _ = load_records(os.path.dirname(results))
        for record in records:
            if record.ok and record.masks:
                masks, space = load_masks(os.path.dirname(results), record.masks, record)
                assert masks.density(space) == pytest.approx(record.density.achieved)
                checked += 1
    if not checked:
        pytest.skip("no committed masks files in this checkout")


# --- measure's checks before any timing ----------------------------------------------------------------------------

def _refused_before_timing(results: str, capsys, *extra: str) -> str:
    from helpers import one_line_error

    code, _, err = _measure(results, capsys, *extra)
    assert not os.path.exists(os.path.join(results, "measurements.jsonl")) or \
        os.path.isdir(os.path.join(results, "measurements.jsonl"))
    return one_line_error(code, err)


def test_measure_refuses_a_measurements_file_that_is_a_directory(store, capsys):
    results, _ = store
    os.mkdir(os.path.join(results, "measurements.jsonl"))
    assert "is not a regular file" in _refused_before_timing(results, capsys)


def test_measure_refuses_a_read_only_results_directory(store, capsys, small_fs):
    """Read-only mode bits (or, for root, a read-only filesystem): refused before any timing, nothing lost."""
    import subprocess

    results, _ = store
    if os.geteuid() != 0:
        os.chmod(results, stat.S_IRUSR | stat.S_IXUSR)
    else:
        point = small_fs("4m")
        results = shutil.copytree(results, os.path.join(point, "results"))
        done = subprocess.run(["mount", "-o", "remount,ro", point], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot remount read-only: {done.stderr.strip()}")
    try:
        assert "cannot store re-timings" in _refused_before_timing(results, capsys)
    finally:
        if os.geteuid() != 0:
            os.chmod(results, stat.S_IRWXU)


def test_measure_refuses_a_results_path_that_is_not_a_directory(tmp_path, capsys, builtin_plugins_only):
    missing = str(tmp_path / "nowhere")
    from helpers import one_line_error

    code, _, err = _measure(missing, capsys)
    assert "is not a results directory" in one_line_error(code, err)


def test_measure_refuses_a_sequence_length_beyond_the_positions(store, capsys):
    results, _ = store
    line = _refused_before_timing(results, capsys, "--seq-len", "4096")
    assert "--seq-len 4096 is longer than backbone 'test-bert-tiny' allows (128 positions)" in line


@pytest.mark.parametrize("task, expected", [("nosuch", "unknown task 'nosuch'"), ("sst", "Did you mean"),
                                             ("rte", "no runs of task 'rte'")])
def test_measure_names_an_unknown_task_or_one_without_runs(store, capsys, task, expected):
    results, _ = store
    line = _refused_before_timing(results, capsys, "--task", task)
    assert expected in line and "before masks were stored" not in line


def test_measure_of_a_store_of_only_failed_runs_says_so(store, capsys):
    from grain_bench.leaderboard.store import RecordStore
    from grain_bench.leaderboard.tables import load_records

    results, _ = store
    records, _ = load_records(results)
    failed = str(tmp_results := os.path.join(os.path.dirname(results), "failed"))
    os.makedirs(tmp_results)
    target = RecordStore(failed)
    for record in records:
        target.append(type(record).from_dict({**record.to_dict(), "status": "error", "error": "diverged"}))
    line = _refused_before_timing(failed, capsys)
    assert "failed (status error): there is nothing to re-time" in line and "--retry-failed" in line


# --- predictions files ---------------------------------------------------------------------------------------------

def _predictions_file(results: str, run_id: str) -> str:
    return os.path.join(results, "predictions", f"{run_id}.json.gz")


def _edit_predictions(edit):
    def fault(file: str) -> None:
        doc = _read_gz(file)
        edit(doc)
        _write_gz(file, doc)
    return fault


PREDICTION_FAULTS = {
    "truncated": _truncate, "flipped": _flip, "not gzip": _not_gzip, "directory": _make_directory,
    "not JSON": lambda f: _write_raw_gz(f, b"{not json"),
    "wrong length": _edit_predictions(lambda doc: doc.update(stats=doc["stats"][:-1])),
    "ragged": _edit_predictions(lambda doc: doc["stats"][0].append(1.0)),
    "unknown kind": _edit_predictions(lambda doc: doc.update(stat_kind="median")),
    "not finite": _edit_predictions(lambda doc: doc["stats"][0].__setitem__(0, 1e999)),
}


def _write_raw_gz(file: str, data: bytes) -> None:
    with gzip.open(file, "wb") as handle:
        handle.write(data)


def _leaderboard(results: str, capsys, command: str, tmp_path) -> tuple[int, str]:
    from grain_bench.cli import main

    extra = ["--out", str(tmp_path / "site")] if command == "publish" else []
    code = main(["leaderboard", command, "--results", results, *extra])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("command", ["show", "publish"])
@pytest.mark.parametrize("fault", sorted(PREDICTION_FAULTS))
def test_a_malformed_predictions_file_is_skipped_with_a_note(store, capsys, tmp_path, command, fault):
    """``leaderboard show``/``publish`` skip a malformed predictions file with a note naming it (no paired interval
    for that row; ``publish`` writes its notes into the page), never a traceback."""
    results, ids = store
    file = _predictions_file(results, ids["heads"])
    PREDICTION_FAULTS[fault](file)
    code, err = _leaderboard(results, capsys, command, tmp_path)
    assert code == 0, err
    assert "Traceback" not in err
    notes = err if command == "show" else (tmp_path / "site" / "index.html").read_text()  # the page lists its notes
    assert f"skipped the malformed predictions file {file}" in notes, err


def test_another_runs_predictions_file_is_skipped(store, capsys, tmp_path):
    results, ids = store
    file = _predictions_file(results, ids["heads"])
    shutil.copyfile(_predictions_file(results, ids["grain"]), file)
    code, err = _leaderboard(results, capsys, "show", tmp_path)
    assert code == 0 and f"the predictions of run {ids['grain']!r}, not of run {ids['heads']}" in err, err


def test_intact_predictions_give_the_paired_interval(store, capsys):
    from grain_bench.leaderboard.tables import build_report

    results, ids = store
    table = build_report(results).comparison.table.set_index("method")
    assert table.loc["heads", "versus"] == "grain" and table.loc["heads", "diff_seeds"] == 1
    os.chmod(os.path.join(results, "predictions"), stat.S_IRUSR | stat.S_IXUSR)  # read-only: still read
    try:
        again = build_report(results).comparison.table.set_index("method")
    finally:
        os.chmod(os.path.join(results, "predictions"), stat.S_IRWXU)
    assert again.loc["heads", "diff"] == table.loc["heads", "diff"]


def test_the_closing_table_of_run_skips_a_malformed_predictions_file(trained_store, tmp_path, capsys,
                                                                     builtin_plugins_only, one_thread):
    """Running the same sweep again skips the finished runs and prints the closing table: a truncated predictions
    file is a note there, not a traceback."""
    from helpers import run_cli

    source, ids, data = trained_store
    results = shutil.copytree(source, str(tmp_path / "results"))
    _truncate(_predictions_file(results, ids["heads"]))
    code, out, err = run_cli("--methods", "grain,heads", "--tasks", "sst2", "--densities", "0.5", "--data-dir", data,
                             "--no-save-models", results=results, capsys=capsys)
    assert code == 0, err
    assert "Traceback" not in err and "skipped the malformed predictions file" in err, err
    assert "heads" in out


def test_measure_of_an_empty_store_says_so(tmp_path, capsys, builtin_plugins_only):
    results = tmp_path / "results"
    results.mkdir()
    (results / "records.jsonl").write_text("")
    line = _refused_before_timing(str(results), capsys)
    # the store's reader refuses an empty store first (the same message as `leaderboard show`'s)
    assert "no records in" in line and "is empty" in line and "grain-bench run" in line


def test_measure_best_mode_stores_each_runs_fastest_runtime(store, capsys):
    """``grain-bench measure --mode best``: every run re-timed, its entry under mode best naming its runtime, one of
    the device's candidates, with every candidate's median beside it."""
    from grain_bench.leaderboard.store import load_measurements
    from grain_bench.measure import best_candidates

    results, ids = store
    code, _, err = _measure(results, capsys, "--mode", "best")
    assert code == 0, err
    measurements = load_measurements(results)
    assert set(ids.values()) <= set(measurements)
    for run_id in ids.values():
        compact = measurements[run_id]["compact"]
        assert compact["mode"] == "best" and compact["runtime"] in best_candidates("cpu")
        assert compact["median_ms"] == compact["candidates_ms"][compact["runtime"]]


def test_stored_masks_with_hidden_dimensions_read_back_and_bad_ones_are_refused(tmp_path):
    """A run's masks file keeps its hidden mask (a masks file without one is the three kinds, as before); a hidden mask
    of another size, with values other than 0 and 1, or keeping no dimension is refused, naming what is wrong."""
    from grain_bench.predictions import _masks_digest, load_masks, save_masks

    space = MaskSpace(num_layers=2, num_heads=3, head_dim=4, ffn_dim=10, hidden=12)
    masks = UnitMasks.full(space)
    masks.ffn[0, :4] = False
    masks.hidden = torch.ones(space.hidden, dtype=torch.bool)
    masks.hidden[:5] = False
    relative = save_masks(str(tmp_path), "run-1", masks, space)
    back, _ = load_masks(str(tmp_path), relative)
    assert torch.equal(back.hidden, masks.hidden) and back.density(space) == masks.density(space)
    path = tmp_path / relative
    opener = gzip.open if relative.endswith(".gz") else open
    for bad, says in (([1] * 11, "not 12 values"), ([2] + [1] * 11, "not 12 values"), ([0] * 12, "keep no dimension")):
        with opener(path, "rt") as handle:
            doc = json.load(handle)
        doc["masks"]["hidden"] = bad
        doc["sha256"] = _masks_digest(doc)
        with opener(path, "wt") as handle:
            json.dump(doc, handle)
        with pytest.raises(GrainBenchError, match=says):
            load_masks(str(tmp_path), relative)


def test_a_run_recorded_again_never_overwrites_the_files_of_the_earlier_record(tmp_path):
    """A rerun of a run id writes its masks next to the earlier ones (``<run_id>.2.json.gz``), so the earlier record,
    which stays the latest ok one when the rerun fails, still names the masks it produced."""
    from grain_bench.predictions import load_masks, save_masks

    space = MaskSpace(num_layers=2, num_heads=3, head_dim=4, ffn_dim=10, hidden=12)
    first, second = UnitMasks.full(space), UnitMasks.full(space)
    first.ffn[0, :4] = False
    second.ffn[1, :7] = False
    paths = [save_masks(str(tmp_path), "run-1", masks, space) for masks in (first, second)]
    assert paths == [os.path.join("masks", "run-1.json.gz"), os.path.join("masks", "run-1.2.json.gz")]
    for path, masks in zip(paths, (first, second)):
        assert torch.equal(load_masks(str(tmp_path), path)[0].ffn, masks.ffn)
    assert save_masks(str(tmp_path), "run-1", first, space) == os.path.join("masks", "run-1.3.json.gz")
