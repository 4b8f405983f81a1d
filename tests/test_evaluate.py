"""``grain-bench evaluate`` / ``grain_bench.evaluate``: score a model the suite did not just train, with the same
adapters and metrics, recorded as an ``evaluated`` run; a saved compact model is recognised and loaded without a
prompt (stdin is pytest's here: a prompt would fail the test)."""

from __future__ import annotations

import json
import os

import pytest

from grain_bench.cli import main
from grain_bench.leaderboard.store import RecordStore


def _recorded(results: str) -> list:
    return list(RecordStore(results).latest().values())


def test_a_saved_compact_model_scores_as_its_run_did(tmp_path, data_dir, capsys, builtin_plugins_only, one_thread):
    runs = str(tmp_path / "runs")
    assert main(["run", "--methods", "grain", "--tasks", "sst2", "--data-dir", data_dir, "--densities", "0.5",
                 "--seeds", "1", "--backbone", "test-bert-tiny", "--recipe", "test", "--results", runs, "-q",
                 "--no-latency"]) == 0
    (run,) = _recorded(runs)
    folder = os.path.join(runs, run.artifact)
    evaluations = str(tmp_path / "evaluations")
    capsys.readouterr()
    assert main(["evaluate", "--model", folder, "--tasks", "sst2", "--data-dir", data_dir, "--recipe", "test",
                 "--results", evaluations, "-q"]) == 0
    assert f"sst2: accuracy {run.scores['accuracy']:.4f}" in capsys.readouterr().out
    (evaluated,) = _recorded(evaluations)
    assert evaluated.ok and evaluated.spec.method == "evaluated" and evaluated.spec.method_options == {"model": folder}
    assert evaluated.scores == run.scores  # the same adapter, encoding, split and metrics as the run that made it
    assert evaluated.method_info["compact"] is True and evaluated.method_info["examples_seen"]["scoring"] > 0
    assert evaluated.params.total == run.params.total and evaluated.latency[0].median_ms > 0
    # timed beside a dense model of the shape it was pruned from, so its row has a measured speedup like a run's
    assert [entry.label for entry in evaluated.latency] == ["dense", "compact"]
    assert evaluated.latency_of("dense").speedup == 1.0 and evaluated.latency_of("compact").speedup > 0
    assert set(evaluated.standard_errors) == {"accuracy"}
    # its examples are there like a run's
    assert main(["leaderboard", "samples", evaluated.run_id, "--results", evaluations, "--format", "jsonl"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sum(r["prediction"] == r["gold"] for r in rows) / len(rows) == pytest.approx(run.scores["accuracy"])
    # as a backbone to prune it is refused with the way to score it, before transformers could prompt
    assert main(["run", "--methods", "grain", "--tasks", "sst2", "--data-dir", data_dir, "--backbone", folder,
                 "--recipe", "test", "--results", str(tmp_path / "again"), "-q"]) == 2
    assert "grain-bench evaluate --model" in capsys.readouterr().err


def test_a_plain_bert_and_an_in_memory_model_through_the_python_api(tmp_path, data_dir, tiny_model,
                                                                   builtin_plugins_only, one_thread):
    import grain_bench

    model, tokenizer = tiny_model
    folder = str(tmp_path / "plain-bert")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    results = str(tmp_path / "evaluations")
    from_folder = grain_bench.evaluate(model=folder, tasks=["sst2"], data_dir=data_dir, recipe="test",
                                       results=results, measure_latency=False, progress=False)
    in_memory = grain_bench.evaluate(model=model, tokenizer=tokenizer, tasks="sst2", data_dir=data_dir,
                                     recipe="test", results=results, measure_latency=False, progress=False)
    assert (from_folder["status"] == "ok").all() and (in_memory["status"] == "ok").all()
    assert from_folder["score"].iloc[0] == in_memory["score"].iloc[0]  # the same weights, the same score
    assert in_memory["options"].iloc[0] == {"model": "in-memory"} and len(_recorded(results)) == 2
    with pytest.raises(grain_bench_errors().UsageError, match="needs its tokenizer"):
        grain_bench.evaluate(model=model, tasks="sst2", data_dir=data_dir, results=results)


def test_bad_models_are_clear_errors(tmp_path, data_dir, capsys, builtin_plugins_only):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["evaluate", "--model", str(empty), "--tasks", "sst2", "--data-dir", data_dir, "--results",
                 str(tmp_path / "r"), "-q"]) == 2
    assert "could not be loaded as AutoModelForSequenceClassification" in capsys.readouterr().err
    assert main(["evaluate", "--model", "x", "--tasks", "nosuchtask", "--results", str(tmp_path / "r"), "-q"]) == 2


def grain_bench_errors():
    import grain_bench.errors

    return grain_bench.errors
