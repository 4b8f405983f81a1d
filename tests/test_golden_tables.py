"""A refactor leaves every committed table as it was: each rendering of each committed results directory equals its
golden file (``tests/golden_tables.py`` says how they are made and when to regenerate them)."""

from __future__ import annotations

import difflib
import os

import pytest
from golden_tables import COMMITTED, GOLDEN, RESULTS, render_all


@pytest.mark.parametrize("name", COMMITTED)
def test_committed_tables_render_as_their_golden_files(name, pm):
    rendered = render_all(os.path.join(RESULTS, name))
    expected = sorted(os.listdir(os.path.join(GOLDEN, name)))
    assert sorted(rendered) == expected
    for file, text in rendered.items():
        with open(os.path.join(GOLDEN, name, file), encoding="utf-8") as handle:
            golden = handle.read()
        if text != golden:
            diff = "".join(list(difflib.unified_diff(golden.splitlines(True), text.splitlines(True), f"golden/{file}",
                                                     f"rendered/{file}"))[:40])
            pytest.fail(f"{name}/{file} renders differently from its golden file:\n{diff}")


def test_upgrading_the_old_records_gives_the_committed_tables(tmp_path, pm, capsys):
    """The committed tweets-minilm-long records as they were before schema 3 (schema 1 and 2 side by side, kept in
    tests/data/schema-1-2/), upgraded by `grain-bench leaderboard upgrade`, render exactly the golden tables; before
    the upgrade every command refuses the folder with that command, and the old file is kept beside."""
    import shutil

    from grain_bench.cli import main

    folder = tmp_path / "tweets-minilm-long"
    shutil.copytree(os.path.join(RESULTS, "tweets-minilm-long"), folder)
    committed = (folder / "records.jsonl").read_bytes().splitlines(keepends=True)
    shutil.copyfile(os.path.join(os.path.dirname(GOLDEN), "schema-1-2", "tweets-minilm-long.jsonl"),
                    folder / "records.jsonl")
    # the store is append-only: what it gained after the old records (the CoFi re-runs of issue 29, schema 3,
    # superseding two of them) is appended to them as it was to the store
    with open(folder / "records.jsonl", "ab") as handle:
        handle.writelines(committed[len((folder / "records.jsonl").read_bytes().splitlines()):])
    old = (folder / "records.jsonl").read_bytes()
    assert main(["leaderboard", "show", "--results", str(folder)]) == 2
    assert f"upgrade them once with `grain-bench leaderboard upgrade --results {folder}`" in capsys.readouterr().err
    assert main(["leaderboard", "upgrade", "--results", str(folder)]) == 0
    err = capsys.readouterr().err
    assert "upgraded 4 record(s)" in err and "(3 from schema 1, 1 from schema 2)" in err
    assert (folder / "records.jsonl.pre-schema-3").read_bytes() == old
    rendered = render_all(str(folder))
    for file, text in rendered.items():
        with open(os.path.join(GOLDEN, "tweets-minilm-long", file), encoding="utf-8") as handle:
            assert text == handle.read(), file
    assert main(["leaderboard", "upgrade", "--results", str(folder)]) == 0
    assert "nothing to do" in capsys.readouterr().err


@pytest.mark.parametrize("name", COMMITTED)
def test_committed_run_ids_are_unchanged_and_their_options_keep_their_meaning(name, regs):
    """Every committed record's run id is still its spec's hash, and its stored options read back (``from_spec``) and
    stored again give the same options: an option added since (``cofi.hidden``, declared with ``absent``) leaves the
    ids and the meaning of the runs stored before it alone."""
    import json

    from grain_bench.types import RunSpec

    with open(os.path.join(RESULTS, name, "records.jsonl"), encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle if line.strip()]
    assert records
    for record in records:
        spec = RunSpec.from_dict(record["spec"])
        assert spec.run_id == record["run_id"], (name, record["run_id"])
        if spec.method not in regs.methods.names():
            continue
        method = regs.methods.get(spec.method)
        built = method.from_spec(spec.method_options)
        assert method.canonical_options(built.options.to_dict()) == spec.method_options, (name, record["run_id"])
        if spec.method == "cofi":
            assert built.options.hidden is ("hidden" in spec.method_options)
