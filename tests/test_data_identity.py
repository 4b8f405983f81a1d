"""Data identity: content hashes of local files and pinned hub commits in run ids, teacher keys and records."""

from __future__ import annotations

import os

import pytest

from grain_bench.grid import build_specs
from grain_bench.harness import Harness
from grain_bench.teachers import teacher_folder


def test_an_edited_data_file_trains_a_new_teacher_and_records_its_provenance(regs, pm, tmp_path, data_dir,
                                                                             test_recipe, one_thread):

    results = str(tmp_path / "results")
    harness = Harness(results, regs=regs, pm=pm, progress=False, save_models=False, measure_latency=False)
    (first,) = build_specs(regs, ["dense"], ["sst2"], [1.0], [1], "test-bert-tiny", test_recipe, data_dir=data_dir)
    record = harness.run(first)
    assert record.ok, record.error
    assert record.data.key == first.data and first.data.startswith("sha256:")
    assert record.data.data_dir == data_dir and set(record.data.files) == {"train", "validation"}
    dev = os.path.join(data_dir, "SST-2", "dev.tsv")
    with open(dev, "a") as handle:
        handle.write("a brand new review\t1\n")
    record = harness.run(first)  # planned before the edit: refused, not run on other data
    assert record.status == "error" and "is not the data this run was planned with" in record.error
    (second,) = build_specs(regs, ["dense"], ["sst2"], [1.0], [1], "test-bert-tiny", test_recipe, data_dir=data_dir)
    assert second.data != first.data and second.run_id != first.run_id
    assert harness.run(second).ok
    teachers = [n for n in os.listdir(teacher_folder()) if not n.startswith(".")]
    assert len(teachers) == 2  # a new teacher for the new data, never the stale one


def test_hub_data_is_pinned_to_the_commit_its_ref_names(tmp_path, monkeypatch):
    """Offline, the commit comes from the hub cache (its layout: datasets--ORG--NAME/refs/REF holds the commit)."""
    from grain_bench.errors import DataError
    from grain_bench.tasks.glue import SST2
    from grain_bench.tasks.squad import SquadV1

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    refs = tmp_path / "hub" / "datasets--nyu-mll--glue" / "refs"
    refs.mkdir(parents=True)
    (refs / "main").write_text(commit + "\n")
    identity = SST2().data_identity()
    assert identity.key == f"hub:nyu-mll/glue@{commit}" and identity.revision == commit
    assert SST2(revision="f" * 40).data_identity().key == f"hub:nyu-mll/glue@{'f' * 40}"  # a chosen commit
    with pytest.raises(DataError, match="the hub cache has no copy of rajpurkar/squad"):
        SquadV1().data_identity()
