"""Pruning to a measured speed: ``grain-bench profile`` writes a cost model, ``--target-speedup`` prunes to it (the
record holds the target, the predicted speedup and the model's identity, the table a ``4x`` target), and every bad
value is one line, exit 2, nothing written."""

from __future__ import annotations

import csv
import io
import json
import os

import pytest
from helpers import BACKBONE, one_line_error, run_cli

from grain_bench.cli import main
from grain_bench.costs import CostModel, load_cost_model

pytestmark = pytest.mark.usefixtures("builtin_plugins_only")
TINY = {"num_layers": 2, "num_heads": 4, "head_dim": 8, "ffn_dim": 64, "hidden": 32}


def cost_model_file(folder, name: str = "cpu-model", backbone=None, device: str = "cpu", seq_len=None,
                    **coefficients) -> str:
    """A cost model file of the tiny backbone (a hand-made latency model: what a user may also write)."""
    values = {"constant": 1.0, "attention_blocks": 0.6, "heads": 0.15, "query_heads": 0.1, "qk_units": 0.004,
              "vo_units": 0.005, "ffn_blocks": 0.3, "ffn_units": 0.002, **coefficients}
    setting = {"device_type": device, **({"seq_len": seq_len} if seq_len else {})}
    model = CostModel(name, "ms per batch", values, dict(backbone or TINY), setting)
    path = os.path.join(str(folder), f"{name}.json")
    with open(path, "wb") as handle:
        handle.write(model.to_json())
    return path


def _records(results) -> list[dict]:
    with open(os.path.join(str(results), "records.jsonl")) as handle:
        return [json.loads(line) for line in handle]


def test_a_run_prunes_to_the_target_speedup_and_records_it(tmp_path, data_dir, capsys):
    model_path = cost_model_file(tmp_path)
    model = load_cost_model(model_path)
    results = tmp_path / "results"
    code, out, err = run_cli("--tasks", "sst2", "--data-dir", data_dir, "--methods", "grain,heads", "--target-speedup",
                             "2.5", "--cost-model", model_path, "--format", "csv", results=str(results),
                             capsys=capsys)
    assert code == 0, err
    records = _records(results)
    assert len(records) == 2 and all(r["status"] == "ok" for r in records)
    for record in records:
        assert record["spec"]["target_speedup"] == 2.5 and record["spec"]["cost_model"] == model.key
        assert record["spec"]["target_density"] == pytest.approx(0.4)
        speed = record["speed"]
        assert speed["target"] == 2.5 and speed["cost_model"] == model.key
        assert 2.5 - 1e-6 <= speed["predicted"] < 3.5  # met, and not far past
        assert speed["measured"] is None  # --no-latency
        stored = load_cost_model(os.path.join(str(results), speed["cost_model_file"]))
        assert stored.key == model.key  # the results directory keeps the model its runs were pruned with
    rows = [row for row in csv.DictReader(io.StringIO(out)) if row["method"] in ("grain", "heads")]
    assert len(rows) == 2 and {row["target_speedup"] for row in rows} == {"2.5"}
    assert main(["leaderboard", "show", "--results", str(results)]) == 0
    table = capsys.readouterr().out
    assert "| grain    | 2.5x     |" in table and "| heads    | 2.5x     |" in table  # the target column


def test_a_cost_model_of_another_length_is_noted_once(tmp_path, data_dir, capsys):
    """A given model profiled at another sequence length than the runs use: planned anyway, with one note."""
    path = cost_model_file(tmp_path, "long", seq_len=4096)
    code, _, err = run_cli("--tasks", "sst2", "--data-dir", data_dir, "--methods", "grain,heads", "--target-speedup",
                           "2", "--cost-model", path, results=str(tmp_path / "results"), capsys=capsys)
    assert code == 0, err
    notes = [line for line in err.splitlines() if "was profiled at length 4096" in line]
    assert len(notes) == 1 and "grain-bench profile --seq-len" in notes[0]


def test_the_cost_model_is_part_of_the_run_id(tmp_path, data_dir, capsys):
    from grain_bench.api import prepare_sweep

    def run_ids(path):
        return prepare_sweep(methods=["grain"], tasks=["sst2"], data_dir=data_dir, backbone=BACKBONE, recipe="test",
                             target_speedups=[2.0], cost_model=path, results=str(tmp_path / "r"),
                             progress=False).run_ids

    one = run_ids(cost_model_file(tmp_path, "one"))
    other = run_ids(cost_model_file(tmp_path, "other", heads=0.3))
    assert one != other
    plain = prepare_sweep(methods=["grain"], tasks=["sst2"], data_dir=data_dir, backbone=BACKBONE, recipe="test",
                          densities=[0.5], results=str(tmp_path / "r"), progress=False).run_ids
    assert len(one) == len(plain) == 1 and plain.isdisjoint(one)  # a 2x target is not density 0.5


def test_profile_writes_a_cost_model_that_runs_can_use(tmp_path, capsys, one_thread):
    out = tmp_path / "tiny.json"
    code = main(["profile", "--backbone", BACKBONE, "--batch", "2", "--seq-len", "16", "--shapes", "12",
                 "--held-out", "3", "--runs", "2", "--threads", "1", "--out", str(out), "-q"])
    printed = capsys.readouterr().out
    assert code == 0
    model = load_cost_model(str(out))
    assert f"cost model {model.key}" in printed and "held out: 3 shapes" in printed
    assert model.backbone == TINY and model.setting["device_type"] == "cpu" and model.setting["batch"] == 2
    assert all(value >= 0 for value in model.coefficients.values())  # no unit makes a model faster
    assert model.fit["held_out"]["count"] == 3 and model.fit["held_out"]["median"] >= 0
    assert model.fit["dense"]["measured_ms"] > 0
    data = json.loads(out.read_text())
    data["coefficients"]["heads"] = data["coefficients"].get("heads", 0.0) + 1.0
    out.write_text(json.dumps(data))
    with pytest.raises(Exception, match="does not match its content"):
        load_cost_model(str(out))


def test_a_cost_model_of_the_serving_runtime_is_the_cached_one_of_that_runtime(tmp_path):
    """``--cost-model runtime:ragged``: runs plan on the device's measured model under the ragged kernel (cached per
    backbone and length like the default eager one, which it does not replace), profiled on first use; a dry run
    (``profile=False``) profiles nothing."""
    from dataclasses import replace
    from types import SimpleNamespace

    from grain_bench.costs import save_cost_model
    from grain_bench.profile import ProfileSettings, SweepCostModels, cached_path
    from grain_bench.recipes import get_recipe

    recipe = get_recipe("test")
    spec = SimpleNamespace(recipe=recipe.to_dict(), backbone=BACKBONE, task="sst2")
    settings = ProfileSettings.for_runs("cpu", recipe.max_length)
    ragged = replace(settings, runtime="ragged")
    assert cached_path(BACKBONE, ragged) != cached_path(BACKBONE, settings)
    assert SweepCostModels("runtime:ragged", "cpu", profile=False).of(spec) is None  # not cached: nothing profiled
    assert not os.path.exists(cached_path(BACKBONE, ragged))
    model = load_cost_model(cost_model_file(tmp_path, "latency-cpu-ragged-b32x32", heads=0.01))
    save_cost_model(model, cached_path(BACKBONE, ragged))
    chosen = SweepCostModels("runtime:ragged", "cpu", profile=False).of(spec)
    assert chosen is not None and chosen.key == model.key
    assert SweepCostModels(None, "cpu", profile=False).of(spec) is None  # the eager one is its own


BAD = [
    (["--target-speedup", "1"], "option target_speedups=1.0 must be > 1"),
    (["--target-speedup", "0.5,4"], "option target_speedups=0.5 must be > 1"),
    (["--target-speedup", "nan"], "target_speedups=nan must be a finite number"),
    (["--target-speedup", "fast"], "expected comma-separated numbers such as 4,8,12"),
    (["--target-speedup", "4", "--methods", "grain,cofi"], "method(s) cofi do not prune to a cost model"),
    (["--cost-model", "{model}"], "--cost-model is only used with --target-speedup"),
    (["--target-speedup", "4", "--cost-model", "/nonexistent/model.json"], "does not exist"),
    (["--target-speedup", "4", "--cost-model", "{other_backbone}"], "is for an encoder of 12 layers"),
    (["--target-speedup", "4", "--cost-model", "{cuda}"], "was measured on cuda, but runs are timed on cpu"),
    (["--target-speedup", "4", "--cost-model", "{tampered}"], "does not match its content"),
    (["--target-speedup", "4", "--cost-model", "{not_json}"], "cannot be read as JSON"),
    (["--target-speedup", "4", "--cost-model", "runtime:warp"], "--cost-model runtime: 'warp' is not one of eager"),
    (["-o", "grain.granularity=0"], "granularity=0 must be >= 1"),
    (["-o", "grain.granularity=3"], "granularity=3 must be a whole number >= 1 that divides the width it blocks (8"),
    (["-o", "heads.ffn_granularity=5", "--methods", "heads"], "ffn_granularity=5 must be a whole number"),
]


@pytest.mark.parametrize("args,expected", BAD)
def test_bad_speed_values_are_one_line_exit_2_and_write_nothing(args, expected, tmp_path, data_dir, capsys):
    files = {"model": cost_model_file(tmp_path),
             "other_backbone": cost_model_file(tmp_path, "bert", {"num_layers": 12, "num_heads": 12, "head_dim": 64,
                                                                   "ffn_dim": 3072, "hidden": 768}),
             "cuda": cost_model_file(tmp_path, "gpu", device="cuda"), "not_json": str(tmp_path / "broken.json")}
    (tmp_path / "broken.json").write_text("{not json")
    tampered = json.loads(open(files["model"]).read())
    tampered["coefficients"]["heads"] = 9.0
    files["tampered"] = str(tmp_path / "tampered.json")
    (tmp_path / "tampered.json").write_text(json.dumps(tampered))
    args = [arg.format(**files) for arg in args]
    home = tmp_path / "home" / "cost-models"
    results = tmp_path / "results"
    if "--methods" not in args:
        args += ["--methods", "grain"]
    code, _, err = run_cli("--tasks", "sst2", "--data-dir", data_dir, *args, results=str(results), capsys=capsys)
    assert expected in one_line_error(code, err)
    assert not results.exists()  # nothing written
    assert not home.exists()  # nothing profiled either
