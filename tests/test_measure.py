"""Measurement: parameter counts, latency protocol, equivalence gate and a run's measurements (``measure_run``)."""

from __future__ import annotations

import json
import math
import os
from types import SimpleNamespace

import pytest
import torch

from grain_bench.cli import main
from grain_bench.errors import GrainBenchError
from grain_bench.masks import UnitMasks
from grain_bench.recipes import get_recipe


def _masks(space, seed=0, keep=0.5):

    generator = torch.Generator().manual_seed(seed)
    full = UnitMasks.full(space)
    masks = UnitMasks(*(torch.rand(t.shape, generator=generator) < keep for _, t in full.items()))
    masks.ffn[1] = False  # an empty FFN block: its kept bias must still be counted
    return masks


def test_param_counts_match_model_shape(tiny_model):
    from grain_bench.compaction import compact
    from grain_bench.masks import MaskSpace
    from grain_bench.measure import check_param_counts

    model, _ = tiny_model
    space = MaskSpace.from_config(model.config)
    dense = check_param_counts(model, UnitMasks.full(space).model_shape(space))
    assert dense["total"] == sum(p.numel() for p in model.parameters())
    assert dense["encoder_linear"] < dense["encoder"] < dense["total"]
    masks = _masks(space)
    small = compact(model, masks)
    counts = check_param_counts(small, masks.model_shape(space))
    assert counts["embeddings"] == dense["embeddings"]
    assert counts["encoder"] < dense["encoder"]
    with pytest.raises(GrainBenchError, match="disagree"):
        check_param_counts(small, UnitMasks.full(space).model_shape(space))


def test_quantiles_and_threads():
    from grain_bench.measure import quantiles, torch_threads

    median, iqr = quantiles([1.0, 2.0, 3.0, 4.0, 100.0])
    assert median == 3.0 and iqr == 2.0
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_timing_refuses_a_runtime_of_another_device(tiny_model):
    """The latency mode is a registered runtime of the timing device: CUDA graphs are refused on the CPU before
    anything is timed."""
    from grain_bench.measure import LatencySettings, time_models
    from grain_bench.runtimes import runtime_names

    assert runtime_names("cpu")[:5] == ["eager", "compile", "aoti", "ragged", "onnx"]  # the built-ins, in this order
    assert runtime_names("cuda:1")[:3] == ["eager", "cuda_graph", "compile"]
    with pytest.raises(GrainBenchError, match=f"latency mode 'cuda_graph' is not one of "
                                              f"{', '.join(runtime_names('cpu'))} on 'cpu'"):
        time_models({"tiny": tiny_model[0]}, LatencySettings(device="cpu", mode="cuda_graph"))
    with pytest.raises(GrainBenchError, match="dtype"):
        LatencySettings(dtype="fp8")


def test_time_models_names_every_setting(tiny_model):
    from grain_bench.compaction import compact
    from grain_bench.masks import MaskSpace
    from grain_bench.measure import LatencySettings, speedup_entries, time_models

    model, _ = tiny_model
    space = MaskSpace.from_config(model.config)
    small = compact(model, _masks(space))
    settings = LatencySettings(batch=4, seq_len=16, threads=1, warmup=1, runs=4)
    results = time_models({"dense": model, "compact": small}, settings)
    assert set(results) == {"dense", "compact"}
    for result in results.values():
        entry = result.to_dict()
        assert {k: entry[k] for k in ("device", "dtype", "batch", "seq_len", "mode", "threads", "runs")} == {
            "device": "cpu", "dtype": "fp32", "batch": 4, "seq_len": 16, "mode": "eager", "threads": 1, "runs": 4}
        assert entry["median_ms"] > 0 and entry["iqr_ms"] >= 0 and len(result.times_ms) == 4
    entries = {e["label"]: e for e in speedup_entries(results, "dense", {"compact": 2.5})}
    assert entries["dense"]["speedup"] == 1.0
    assert entries["compact"]["speedup"] == pytest.approx(results["dense"].median_ms / results["compact"].median_ms)
    assert entries["compact"]["flops_predicted_speedup"] == 2.5


def test_calls_per_round_run_a_model_back_to_back_and_are_recorded(tiny_model):
    from grain_bench.measure import LatencySettings, time_models

    model, _ = tiny_model
    seen = []
    handle = model.register_forward_hook(lambda module, args, output: seen.append(1))
    try:
        results = time_models({"dense": model}, LatencySettings(batch=2, seq_len=8, threads=1, warmup=1, runs=3,
                                                                 calls=5))
    finally:
        handle.remove()
    assert len(seen) == (1 + 3) * 5  # warm-up and timed rounds, five calls each
    assert len(results["dense"].times_ms) == 3 and results["dense"].to_dict()["calls_per_round"] == 5
    assert "calls_per_round" not in time_models({"dense": model}, LatencySettings(
        batch=2, seq_len=8, threads=1, warmup=0, runs=1))["dense"].to_dict()  # one call: records as before
    for calls, device in ((0, "cpu"), (2, "cuda")):
        with pytest.raises(GrainBenchError, match="calls per round"):
            LatencySettings(device=device, calls=calls)


def test_check_equivalence_catches_a_wrong_model(tiny_model):
    from grain_bench.compaction import compact
    from grain_bench.masked import MaskedModel
    from grain_bench.masks import MaskSpace
    from grain_bench.measure import check_equivalence

    model, _ = tiny_model
    space = MaskSpace.from_config(model.config)
    masks = _masks(space)
    masked = MaskedModel(model)
    masked.apply(masks)
    try:
        small = compact(model, masks)
        inputs = {"input_ids": torch.randint(5, 60, (2, 9)), "attention_mask": torch.ones(2, 9, dtype=torch.long)}
        assert check_equivalence(model, small, inputs) <= 1e-4
        with torch.no_grad():
            small.bert.encoder.layer[-1].ffn.LayerNorm.bias += 1.0
        with pytest.raises(GrainBenchError, match="does not match the masked model"):
            check_equivalence(model, small, inputs)
    finally:
        masked.remove()


# ---- measure_run on a masked tiny model ------------------------------------------------------------------------
class _Task:
    head = "sequence"

    def model_inputs(self, batch):
        return {k: v for k, v in batch.items() if k != "labels"}


def _run_parts(tiny_model, results_dir, save_models=True, measure_latency=True):
    from grain_bench.masked import MaskedModel
    from grain_bench.request import SweepRequest
    from grain_bench.types import RunSpec

    model, tokenizer = tiny_model
    masked = MaskedModel(model)
    masks = _masks(masked.space)
    masked.apply(masks)
    rows = [dict(tokenizer(text), labels=i % 2) for i, text in enumerate(["good film", "bad service, awful", "ok"])]

    def collate(batch_rows):
        padded = tokenizer.pad([{k: v for k, v in r.items() if k != "labels"} for r in batch_rows], return_tensors="pt")
        return dict(padded, labels=torch.tensor([r["labels"] for r in batch_rows]))

    recipe = get_recipe("test")
    spec = RunSpec(method="random", task="tweets", backbone="test-bert-tiny", target_density=0.5, seed=0,
                   recipe=recipe.to_dict(), method_options={}, task_version="1", data="default")
    config = SweepRequest(results=results_dir, save_models=save_models, measure_latency=measure_latency)
    from grain_bench.distill import DistillResult

    result = DistillResult(model, masked, masks, masked.space, steps=0, seconds=0.0)
    data = SimpleNamespace(eval=SimpleNamespace(features=rows), collate=collate)
    return config, spec, _Task(), result, data, tokenizer, recipe


def test_measure_run_records_latency_counts_and_saves_the_model(tiny_model, results_dir, monkeypatch):
    import dataclasses

    from grain_bench import load_pruned, measure
    from grain_bench.measure import measure_run

    real_settings = measure.record_settings
    monkeypatch.setattr(measure, "record_settings", lambda *a: dataclasses.replace(real_settings(*a), runs=3))

    config, spec, task, result, data, tokenizer, recipe = _run_parts(tiny_model, results_dir)
    try:
        measured = measure_run(config, spec, task, result, data, tokenizer, recipe)
    finally:
        result.masked.remove()
    latency, artifact, scored, masks = measured.latency, measured.artifact, measured.model, result.masks
    entries = {e.label: e for e in latency}
    assert set(entries) == {"dense", "compact"}
    compact_entry = entries["compact"]
    assert compact_entry.speedup > 0 and compact_entry.flops_predicted_speedup > 1.0
    assert compact_entry.seq_len == 32 and compact_entry.batch == 32 and compact_entry.device == "cpu"
    assert compact_entry.threads >= 1 and compact_entry.runs == 3
    assert measured.compact["max_abs_logit_diff"] <= 1e-4
    assert compact_entry.flops_predicted_speedup == measured.flops.predicted_speedup  # one FLOPs count
    assert measured.density.achieved == masks.density(result.space)
    assert measured.params.total == sum(p.numel() for p in scored.parameters())
    assert artifact == os.path.join("models", spec.run_id)  # relative to the results directory, as masks are
    folder = os.path.join(results_dir, artifact)
    meta = json.load(open(os.path.join(folder, "grain_bench.json")))
    assert meta["run_id"] == spec.run_id and meta["masks"]["ffn"][1] == [0] * 64
    loaded = load_pruned(folder)
    assert loaded.config.layer_shapes[1]["ffn_dim"] == 0
    assert scored is not result.model and scored.config.layer_shapes[1]["ffn_dim"] == 0  # the model that gets scored


def test_measure_run_honours_the_switches(tiny_model, results_dir):
    from grain_bench.measure import measure_run

    parts = _run_parts(tiny_model, results_dir, save_models=False, measure_latency=False)
    try:
        measured = measure_run(*parts)
    finally:
        parts[3].masked.remove()
    assert measured.latency == [] and measured.artifact is None
    assert not os.path.exists(os.path.join(results_dir, "models"))


def test_measure_run_refuses_to_time_a_wrong_model(tiny_model, results_dir, monkeypatch):
    import grain_bench.compaction as compact_module
    from grain_bench import measure

    real = compact_module.compact

    def broken(model, masks, space=None):
        out = real(model, masks, space)
        with torch.no_grad():
            out.bert.encoder.layer[-1].ffn.LayerNorm.bias += 1.0
        return out

    def no_timing(*args, **kwargs):
        raise AssertionError("latency was measured for a model that failed the equivalence check")

    monkeypatch.setattr(compact_module, "compact", broken)
    monkeypatch.setattr(measure, "time_models", no_timing)
    parts = _run_parts(tiny_model, results_dir)
    try:
        with pytest.raises(GrainBenchError, match="does not match"):
            measure.measure_run(*parts)
    finally:
        parts[3].masked.remove()
    assert not os.path.exists(os.path.join(results_dir, "models"))


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["eager", "cuda_graph", "compile"])
def test_gpu_latency_modes(tiny_model, mode):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from grain_bench.compaction import compact
    from grain_bench.masks import MaskSpace
    from grain_bench.measure import LatencySettings, time_models

    model, _ = tiny_model
    space = MaskSpace.from_config(model.config)
    small = compact(model, _masks(space))
    settings = LatencySettings(device="cuda", dtype="fp16", batch=8, seq_len=32, mode=mode, threads=0, warmup=2, runs=5)
    results = time_models({"dense": model, "compact": small}, settings)
    for result in results.values():
        assert result.mode == mode and result.dtype == "fp16" and result.median_ms > 0
        assert result.device.startswith("cuda") and result.threads is None


@pytest.mark.parametrize("seq_len", [16, 40])
def test_dense_encoder_flops_match_torch_flop_counter(seq_len):
    """The FLOPs model's matrix products equal what torch's FLOP counter counts on a dense BERT encoder (eager
    attention, so the score and context products are counted too)."""
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import BertConfig, BertModel

    from grain_bench.masks import MaskSpace

    config = BertConfig(vocab_size=50, hidden_size=48, num_hidden_layers=3, num_attention_heads=6,
                        intermediate_size=96, attn_implementation="eager")
    model = BertModel(config).eval()
    space = MaskSpace.from_config(config)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.encoder(torch.randn(1, seq_len, config.hidden_size))
    assert UnitMasks.full(space).model_shape(space).encoder_flops(seq_len) == counter.get_total_flops()


def test_many_narrow_heads_predict_less_speedup_than_few_wide_ones():
    """Same total widths, 46 narrow heads against 5 wide ones: the per-head softmax over T x T makes the former cost
    more, so its FLOPs-predicted speedup is lower."""
    from grain_bench.shape import LayerShape, ModelShape

    narrow = ModelShape(384, tuple(LayerShape(((4, 4),) * 8, 96) for _ in range(6)), original_head_dim=32)
    wide = ModelShape(384, tuple(LayerShape(((32, 32),), 96) for _ in range(6)), original_head_dim=32)
    assert narrow.encoder_flops(64) == wide.encoder_flops(64)
    assert narrow.total_flops(64) - wide.total_flops(64) == 6 * 7 * 64 * 64 * (8 - 1)


def test_measure_retimes_stored_masks_and_tables_prefer_it(tmp_path, data_dir, capsys, monkeypatch, one_thread):
    """``grain-bench measure`` rebuilds each run's compact model from its stored masks, times it against the dense
    backbone in one process, stores the measurement, and tables then show it (and say so) instead of the run's own."""
    import grain_bench
    from grain_bench import plugins
    from grain_bench.leaderboard.store import load_measurements
    from grain_bench.leaderboard.tables import build_report

    monkeypatch.setenv("GRAIN_BENCH_LOAD_PLUGINS", "")
    plugins.reset()
    results = str(tmp_path / "results")
    frame = grain_bench.run(methods=["grain", "heads"], tasks=["sst2"], densities=[0.5], backbone="test-bert-tiny",
                            recipe="test", data_dir=data_dir, results=results, measure_latency=False,
                            save_models=False, progress=False)
    assert frame["speedup"].isna().all()  # no in-run timing
    by_method = frame.set_index("method")["run_id"]
    assert main(["measure", "--results", results, "--methods", "heads", "--runs", "3", "--batch", "2", "--threads",
                 "1", "-q"]) == 0  # only the heads run
    assert set(load_measurements(results)) == {by_method["heads"]}
    assert main(["measure", "--results", results, "--methods", "cofi", "-q"]) == 2  # no such runs: nothing timed
    assert "no runs of method(s) cofi" in capsys.readouterr().err and len(load_measurements(results)) == 1
    assert main(["measure", "--results", results, "--runs", "3", "--batch", "2", "--threads", "1", "-q"]) == 0
    out = capsys.readouterr().out
    measured = load_measurements(results)
    assert set(measured) == set(frame["run_id"])
    for entry in measured.values():
        assert entry["settings"]["batch"] == 2 and entry["settings"]["seq_len"] == 32
        assert entry["compact"]["speedup"] == pytest.approx(entry["dense"]["median_ms"] / entry["compact"]["median_ms"])
        assert entry["compact"]["flops_predicted_speedup"] > 1 and entry["heads"] >= 1
    table = build_report(results, versus=None).comparison.table.set_index("method")
    assert table.loc["grain", "speedup"] == pytest.approx(measured[frame.set_index("method").loc["grain", "run_id"]]
                                                          ["compact"]["speedup"])
    assert "re-timed by grain-bench measure" in out
    # a later record of the same run id (a rerun) keeps the re-timing only when it is of the same compact shape
    import dataclasses

    from grain_bench.leaderboard.store import RecordStore

    store = RecordStore(results)
    grain = store.latest()[frame.set_index("method").loc["grain", "run_id"]]
    store.append(dataclasses.replace(grain, created="2999-01-01T00:00:00+00:00"))  # same masks, rerun
    table = build_report(results, versus=None).comparison.table.set_index("method")
    assert table.loc["grain", "speedup"] == pytest.approx(measured[grain.run_id]["compact"]["speedup"])
    first, *rest = grain.shape.head_widths
    other = dataclasses.replace(grain.shape, head_widths=(first[:-1], *rest))  # one head fewer: other masks
    store.append(dataclasses.replace(grain, shape=other, created="2999-01-02T00:00:00+00:00"))
    table = build_report(results, versus=None).comparison.table.set_index("method")
    assert math.isnan(table.loc["grain", "speedup"]) and not math.isnan(table.loc["heads", "speedup"])


def test_timing_in_another_dtype_leaves_the_model_untouched(tiny_model):
    """Timing in another dtype (fp16 on a GPU, bf16 here) times a copy: the weights that are scored and saved are
    bit-for-bit those of before, still fp32."""
    import torch

    from grain_bench.measure import LatencySettings, time_models

    model, _ = tiny_model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    settings = LatencySettings(device="cpu", dtype="bf16", batch=2, seq_len=8, threads=1, warmup=1, runs=2)
    results = time_models({"tiny": model}, settings)
    assert results["tiny"].dtype == "bf16" and results["tiny"].runs == 2
    for name, value in model.state_dict().items():
        assert value.dtype == torch.float32 and torch.equal(value, before[name]), name


def test_a_time_budget_stops_no_earlier_than_the_fewest_rounds(tiny_model):
    from grain_bench.measure import MIN_ROUNDS, LatencySettings, time_models

    model, _ = tiny_model
    settings = LatencySettings(batch=2, seq_len=8, threads=1, warmup=0, runs=MIN_ROUNDS + 4, budget_s=0.0)
    result = time_models({"dense": model}, settings)["dense"]
    assert result.runs == MIN_ROUNDS == len(result.times_ms)  # over budget from the first round, still 5 rounds



def test_torch_flop_counter_runs_on_a_compact_model_with_empty_blocks():
    """A saved model whose first attention block and second FFN block lost every unit: torch's FlopCounterMode under
    no_grad (what a user counting FLOPs writes) runs, counts, and leaves the outputs as they were."""
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import BertConfig, BertForSequenceClassification

    from grain_bench.compaction import compact
    from grain_bench.masks import MaskSpace

    config = BertConfig(vocab_size=50, hidden_size=48, num_hidden_layers=2, num_attention_heads=6,
                        intermediate_size=96)
    model = BertForSequenceClassification(config).eval()
    space = MaskSpace.from_config(config)
    masks = UnitMasks.full(space)
    masks.qk[0], masks.vo[0], masks.ffn[1] = False, False, False
    small = compact(model, masks, space).eval()
    ids = torch.arange(8).reshape(1, 8) % 50
    with torch.no_grad():
        expected = small(input_ids=ids).logits
        with FlopCounterMode(display=False) as counter:
            counted = small(input_ids=ids).logits
    assert counter.get_total_flops() > 0 and torch.equal(counted, expected)
