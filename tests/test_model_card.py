"""Saved models: label names in the config and a model card from the run's record."""

from __future__ import annotations

import json
import os

import yaml
from huggingface_hub import ModelCard
from transformers import AutoModelForSequenceClassification, AutoTokenizer


def test_saved_models_carry_label_names_and_a_model_card(tmp_path, data_dir, monkeypatch, one_thread):

    import grain_bench
    from grain_bench import plugins

    monkeypatch.setenv("GRAIN_BENCH_LOAD_PLUGINS", "")
    plugins.reset()
    frame = grain_bench.run(methods=["grain"], tasks=["sst2"], densities=[0.5], seeds=[1], backbone="test-bert-tiny",
                            recipe="test", data_dir=data_dir, results=str(tmp_path / "results"), progress=False)
    folder = frame["artifact"].iloc[0]
    with open(os.path.join(folder, "config.json")) as handle:
        config = json.load(handle)
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    assert config["label2id"] == {"negative": 0, "positive": 1}
    with open(os.path.join(folder, "README.md")) as handle:
        card = handle.read()
    front = yaml.safe_load(card.split("---")[1])
    assert front["library_name"] == "transformers" and front["pipeline_tag"] == "text-classification"
    assert "base_model" not in front and "license" not in front  # the tiny test backbone has no hub id, no licence
    assert front["datasets"] == ["nyu-mll/glue"] and front["metrics"] == ["accuracy"]
    # what the Hub reads: every score of the record as a model-index result, on the scored split and its data
    results = ModelCard.load(os.path.join(folder, "README.md")).data.eval_results
    record = grain_bench.load_results(str(tmp_path / "results")).iloc[0]
    assert [(r.metric_type, r.metric_value) for r in results] == [("accuracy", record["score.accuracy"])]
    (result,) = results
    assert (result.task_type, result.dataset_type, result.dataset_config, result.dataset_split) == (
        "text-classification", "nyu-mll/glue", "sst2", "validation")
    assert result.dataset_revision == record["data"]  # the local files' content hash: what was scored
    # the card's snippet loads tokenizer and model with transformers alone, no prompt (stdin is pytest's: a prompt
    # would fail here)
    assert "AutoTokenizer.from_pretrained(path, trust_remote_code=True)" in card
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    loaded = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)
    assert loaded(**tokenizer(["a fine film"], return_tensors="pt")).logits.shape == (1, 2)
    score = frame["score"].iloc[0]
    assert f"accuracy {score:.4f}" in card and "`grain` (defaults)" in card and "target 0.5" in card
    assert "AutoModelForSequenceClassification.from_pretrained" in card and frame["run_id"].iloc[0] in card
    model = grain_bench.load_pruned(folder)
    assert model.config.id2label == {0: "negative", 1: "positive"}
