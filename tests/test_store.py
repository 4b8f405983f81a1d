"""The record store: appends that lose nothing (a held lock, a full disk), wrongly typed and non-finite records,
reading older records."""

from __future__ import annotations

import json
import os

import pytest
from helpers import ROOT, fill_filesystem, run_cli
from test_leaderboard import make_record, write_store

from grain_bench.cli import main
from grain_bench.errors import GrainBenchError
from grain_bench.grid import build_specs
from grain_bench.leaderboard.store import RecordStore, load_measurements
from grain_bench.records import Flops, RunRecord


def test_records_stored_with_default_options_are_upgraded_to_the_canonical_id(regs, test_recipe, tmp_path):
    """Older writers stored every option (schema 2); reading such a store is refused with the upgrade command, and the
    upgrade brings the record under today's id once, so resuming skips its run."""
    from grain_bench.leaderboard.store import RecordStore
    from grain_bench.migrations import UpgradeContext
    from grain_bench.types import RunSpec

    (new,) = build_specs(regs, ["grain"], ["tweets"], [0.05], [1], "test-bert-tiny", test_recipe,
                         {"grain": {"alpha": "0"}})
    full = {"alpha": 0.0, "beta": 0.998, "score": "grad", "gradient_separation": True, "embedding_rank": None}
    old = RunSpec.from_dict({**new.to_dict(), "method_options": full})
    assert old.run_id != new.run_id
    store = RecordStore(str(tmp_path / "results"))
    os.makedirs(store.directory)
    with open(store.path, "w") as handle:  # as a schema-2 writer wrote it
        handle.write(json.dumps({"run_id": old.run_id, "spec": old.to_dict(), "status": "ok", "schema_version": 2,
                                 "scores": {"accuracy": 0.8}, "primary_metric": "accuracy",
                                 "higher_is_better": {"accuracy": True}}) + "\n")
        handle.write('{"run_id": "torn", "spe\n')  # a line cut short: kept as it is, reported
    with open(os.path.join(store.directory, "measurements.jsonl"), "w") as handle:  # a re-timing under the old id
        handle.write(json.dumps({"run_id": old.run_id, "command": "grain-bench measure"}) + "\n")
    assert store.records() == [] and store.outdated == [1] and [p.line for p in store.problems] == [2]
    refused = r"1 record\(s\) of an older schema .* `grain-bench leaderboard upgrade --results"
    with pytest.raises(GrainBenchError, match=refused):
        store.check_current()
    result = store.upgrade(UpgradeContext(regs))
    assert result.upgraded == {2: 1} and os.path.isfile(result.backup) and [p.line for p in result.kept] == [2]
    assert open(store.path).read().splitlines()[1] == '{"run_id": "torn", "spe'
    (record,) = store.records()
    assert record.run_id == new.run_id and record.spec.method_options == {"alpha": 0.0}
    assert record.method_info["previous_run_id"] == old.run_id
    assert store.done() == {new.run_id} and store.outdated == []
    assert result.moved == {old.run_id: new.run_id} and set(load_measurements(store.directory)) == {new.run_id}
    assert store.upgrade(UpgradeContext(regs)).upgraded == {}  # once: a second upgrade writes nothing


@pytest.mark.parametrize("folder", sorted(d for d in os.listdir(os.path.join(ROOT, "benchmarks", "results"))
                                          if os.path.isfile(os.path.join(ROOT, "benchmarks", "results", d,
                                                                         "records.jsonl"))))
def test_committed_results_are_at_the_current_schema_and_show_without_allow_mixed(folder, capsys, monkeypatch):
    """Every committed results directory was upgraded (``leaderboard upgrade``): each record reads as schema 3 with its
    typed parts (directions from the task, the encoder-parameter density, data identities) and renders with no
    --allow-mixed."""
    from grain_bench.leaderboard.store import RecordStore
    from grain_bench.records import SCHEMA_VERSION

    monkeypatch.setenv("GRAIN_BENCH_LOAD_PLUGINS", "")
    path = os.path.join(ROOT, "benchmarks", "results", folder)
    store = RecordStore(path)
    records = [r for r in store.records() if r.ok]
    assert records and store.problems == [] and store.outdated == []
    for record in records:
        assert record.schema_version == SCHEMA_VERSION
        assert record.higher_is_better[record.primary_metric] is True  # accuracy, F1, Pearson: higher is better
        assert 0 < record.density.encoder_params <= 1
        assert record.spec.data.startswith("sha256:") and record.spec.run_id == record.run_id
    assert main(["leaderboard", "show", "--results", path]) == 0, capsys.readouterr().err


@pytest.mark.usefixtures("builtin_plugins_only")
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


@pytest.mark.usefixtures("builtin_plugins_only")
def test_full_disk_append_is_rolled_back_and_the_record_kept_aside(small_fs):
    point = small_fs("256k")
    results = os.path.join(point, "results")
    store = RecordStore(results)
    kept = make_record(seed=1)
    assert store.append(kept) is None
    size = os.path.getsize(store.path)
    filler = fill_filesystem(point)
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


SPEC = make_record().spec.to_dict()
BAD_RECORDS = [
    {"run_id": "a1", "spec": SPEC, "status": "ok", "schema_version": "1"},
    {"run_id": "a2", "spec": SPEC, "status": "ok", "schema_version": None},
    {"run_id": ["a3"], "spec": SPEC, "status": "ok", "schema_version": 3},
    {"run_id": "a4", "spec": SPEC, "status": "done", "schema_version": 3},
    {"run_id": "a5", "spec": [], "status": "ok", "schema_version": 3},
    {"run_id": "a6", "spec": SPEC, "status": "ok", "scores": {"accuracy": "high"}, "schema_version": 3},
    {"run_id": "a7", "spec": SPEC, "status": "ok", "latency": {}, "schema_version": 3},
    {"run_id": "a8", "spec": SPEC, "status": "ok", "schema_version": True},
    {"run_id": "a9", "spec": {**SPEC, "seed": "one"}, "status": "ok", "schema_version": 3},
]


@pytest.mark.usefixtures("builtin_plugins_only")
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


@pytest.mark.usefixtures("builtin_plugins_only")
def test_non_finite_numbers_are_stored_as_null_with_a_flag(tmp_path):
    record = RunRecord(**{**make_record().__dict__, "scores": {"accuracy": float("nan")},
                          "flops": Flops(predicted_speedup=float("inf")), "nonfinite": []})
    assert record.scores == {"accuracy": None} and record.flops == Flops(predicted_speedup=None)
    assert record.nonfinite == ("flops.predicted_speedup", "scores.accuracy")
    store = RecordStore(str(tmp_path / "results"))
    store.append(record)

    def refuse(token):
        raise AssertionError(f"bare {token} in records.jsonl")

    line = open(store.path).read()
    assert tuple(json.loads(line, parse_constant=refuse)["nonfinite"]) == record.nonfinite
    # A file from an older writer with bare NaN/Infinity tokens reads back the same way.
    with open(store.path, "a") as handle:
        handle.write(line.replace('"accuracy": null', '"accuracy": NaN').replace('"run_id": "', '"run_id": "x'))
    assert [r.scores for r in store.records()] == [{"accuracy": None}] * 2
    assert store.records()[1].nonfinite == ("flops.predicted_speedup", "scores.accuracy")
