"""Saved models: label names in the config and a model card from the run's record."""

from __future__ import annotations

import json
import os


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
    assert card.startswith("---\nlibrary_name: transformers\npipeline_tag: text-classification\n")
    assert "base_model" not in card.split("---")[1]  # the tiny test backbone has no hub id
    score = frame["score"].iloc[0]
    assert f"accuracy {score:.4f}" in card and "`grain` (defaults)" in card and "target 0.5" in card
    assert "AutoModelForSequenceClassification.from_pretrained" in card and frame["run_id"].iloc[0] in card
    model = grain_bench.load_pruned(folder)
    assert model.config.id2label == {0: "negative", 1: "positive"}
