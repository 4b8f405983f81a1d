"""Inference runtimes (grain_bench.runtimes): each reproduces the compact model it runs, is selectable when loading and
when timing, and refuses what it cannot do with a clear error."""

from __future__ import annotations

import pytest
import torch
from test_compact import _inputs, _random_masks, _saved


def _compact_with_odd_heads(tiny_model):
    """A compact model with heads of different widths, a head without query units (uniform attention) and a layer
    without FFN neurons: every path of the compact forward pass."""
    from grain_bench.compaction import compact
    from grain_bench.masks import MaskSpace

    model, _ = tiny_model
    space = MaskSpace.from_config(model.config)
    masks = _random_masks(space, seed=5, keep=0.6)
    masks.qk[0, 1] = False
    masks.vo[0, 1, :3] = True
    masks.ffn[1] = False
    return compact(model, masks).eval()


def _outputs_equal(prepared, model, inputs) -> float:
    with torch.inference_mode():
        return float((prepared(**inputs).logits - model(**inputs).logits).abs().max())


@pytest.mark.runtime
def test_compile_runtime_reproduces_the_compact_model(tiny_model):
    from grain_bench.runtimes import TOLERANCE, prepare

    small = _compact_with_odd_heads(tiny_model)
    inputs = _inputs(small.config.vocab_size)
    prepared = prepare(small, "compile", inputs)
    assert _outputs_equal(prepared, small, inputs) <= TOLERANCE
    other = _inputs(small.config.vocab_size, batch=2, length=7, seed=1)  # another shape: compiled again, still equal
    assert _outputs_equal(prepared, small, other) <= TOLERANCE


@pytest.mark.runtime
def test_compile_runtime_compiles_more_models_than_dynamos_default_limit(tiny_model):
    """Every compact model is a recompilation of the same forward code for dynamo; past its recompile limit it would
    run further models eagerly without a word (the outputs still match), so ``prepare`` raises the limit."""
    from torch._dynamo.utils import counters

    from grain_bench.compaction import compact
    from grain_bench.masks import MaskSpace
    from grain_bench.runtimes import RECOMPILE_LIMIT, TOLERANCE, prepare

    model, _ = tiny_model
    space = MaskSpace.from_config(model.config)
    torch._dynamo.reset()
    graphs = counters["stats"]["unique_graphs"]
    with torch._dynamo.config.patch(recompile_limit=1):  # as if other models had used up the default
        for seed in (1, 2):
            small = compact(model, _random_masks(space, seed=seed, keep=0.5)).eval()
            inputs = _inputs(small.config.vocab_size)
            assert _outputs_equal(prepare(small, "compile", inputs), small, inputs) <= TOLERANCE
        assert torch._dynamo.config.recompile_limit == RECOMPILE_LIMIT
    assert counters["stats"]["unique_graphs"] == graphs + 2  # both compiled, none run eagerly


@pytest.mark.runtime
def test_compiled_cpu_attention_is_written_out_and_exported_attention_stays_fused(tiny_model):
    """Under torch.compile on CPU each bucket's attention is matmul, softmax, matmul (inductor fuses the softmax part);
    torch.export (the ONNX runtime's tracer) and eager keep the fused SDPA call. What the compile runtime compiles is
    a copy (``for_compile``): the model it came from is unchanged."""
    from grain_bench.modeling_pruned_bert import PrunedBertAttention
    from grain_bench.prepared import for_compile

    small = _compact_with_odd_heads(tiny_model)
    inputs = _inputs(small.config.vocab_size)
    graphs = []

    def capture(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module.forward

    torch._dynamo.reset()
    with torch.inference_mode():
        compiled = torch.compile(for_compile(small), backend=capture, dynamic=False)(**inputs)
        assert float((compiled.logits - small(**inputs).logits).abs().max()) <= 1e-5
    traced = {str(node.target) for graph in graphs for node in graph.graph.nodes}
    assert graphs and not any("scaled_dot_product" in target for target in traced)
    assert any("softmax" in target for target in traced)
    exported = torch.export.export(small, (), kwargs=inputs)
    assert any("scaled_dot_product" in str(node.target) for node in exported.graph.nodes)
    blocks = [block for block in small.modules() if isinstance(block, PrunedBertAttention)]
    assert blocks and all(type(block) is PrunedBertAttention for block in blocks)


@pytest.mark.runtime
def test_onnx_runtime_reproduces_the_compact_model_at_other_shapes(tiny_model):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from grain_bench.runtimes import TOLERANCE, prepare

    small = _compact_with_odd_heads(tiny_model)
    inputs = _inputs(small.config.vocab_size)
    prepared = prepare(small, "onnx", inputs)
    for batch, length in ((3, 11), (1, 5), (4, 16)):  # exported at 3 x 11; the batch and length axes are dynamic
        other = _inputs(small.config.vocab_size, batch=max(batch, 2), length=max(length, 8), seed=batch)
        assert _outputs_equal(prepared, small, other) <= TOLERANCE


@pytest.mark.runtime
def test_aoti_runtime_loads_a_saved_model_and_reproduces_it_at_every_shape(tmp_path, tiny_model):
    """``load_pruned(path, runtime="aoti")``: exported with dynamic batch and length, compiled ahead of time, checked;
    one package serves batch 1 (which a trace at batch 1 would have frozen) and other lengths. The saved model has a
    head without query units and a layer without FFN neurons."""
    from grain_bench import load_pruned
    from grain_bench.prepared import AotiModel
    from grain_bench.runtimes import TOLERANCE

    _, path, _ = _saved(tmp_path, tiny_model)
    small = load_pruned(path)
    inputs = _inputs(small.config.vocab_size, batch=1, length=9)
    prepared = load_pruned(path, runtime="aoti", example_inputs=inputs)
    assert isinstance(prepared, AotiModel)
    for batch, length in ((1, 9), (1, 40), (3, 11), (5, 2)):
        other = _inputs(small.config.vocab_size, batch=batch, length=length, seed=batch + length)
        assert _outputs_equal(prepared, small, other) <= TOLERANCE


def test_ragged_runtime_loads_a_saved_model_and_reproduces_it_at_every_shape(tmp_path, tiny_model):
    """``load_pruned(path, runtime="ragged")``: every attention block with heads runs the ragged kernel (the tiny
    model's heads are 8 units wide), the model it was made from keeps its own attention, and the outputs match at
    batch 1 and other lengths, with padding. The saved model has a head without query units and a layer without FFN
    neurons."""
    from grain_bench import load_pruned
    from grain_bench.modeling_pruned_bert import PrunedBertAttention
    from grain_bench.ragged import RaggedModel, kernel_of
    from grain_bench.runtimes import TOLERANCE, prepare

    _, path, _ = _saved(tmp_path, tiny_model)
    small = load_pruned(path)
    prepared = load_pruned(path, runtime="ragged")
    assert isinstance(prepared, RaggedModel)
    blocks = [block for block in prepared.model.modules() if isinstance(block, PrunedBertAttention) and block.num_heads]
    assert blocks and prepared.kernel_layers == len(blocks) and all(kernel_of(block) is not None for block in blocks)
    for batch, length in ((1, 9), (1, 40), (3, 11), (5, 2), (2, 70)):
        other = _inputs(small.config.vocab_size, batch=batch, length=length, seed=batch + length)
        assert _outputs_equal(prepared, small, other) <= TOLERANCE
    again = prepare(small, "ragged", _inputs(small.config.vocab_size))
    assert all(kernel_of(block) is None for block in small.modules() if isinstance(block, PrunedBertAttention))
    assert again.model is not small and next(again.model.parameters()) is next(small.parameters())  # shared weights


def test_ragged_runtime_is_a_timing_mode(tiny_model):
    """``grain-bench measure --mode ragged`` and ``time_models``: the dense model (no compact attention) and the compact
    one are both prepared under the runtime and timed."""
    from grain_bench.measure import LatencySettings, time_models

    model, _ = tiny_model
    small = _compact_with_odd_heads(tiny_model)
    settings = LatencySettings(batch=2, seq_len=9, threads=1, warmup=1, runs=2, mode="ragged")
    results = time_models({"dense": model, "compact": small}, settings)
    assert {label: result.mode for label, result in results.items()} == {"dense": "ragged", "compact": "ragged"}
    assert all(result.median_ms > 0 and len(result.times_ms) == 2 for result in results.values())


def test_ragged_runtime_refuses_what_it_cannot_run(tiny_model):
    from grain_bench.errors import GrainBenchError
    from grain_bench.runtimes import prepare

    small = _compact_with_odd_heads(tiny_model).half()
    with pytest.raises(GrainBenchError, match="the ragged runtime runs fp32 models on the CPU; this one is "
                                              "torch.float16 on cpu"):
        prepare(small, "ragged", _inputs(small.config.vocab_size))


def test_a_runtime_that_changes_outputs_is_refused(tiny_model):
    from grain_bench.errors import GrainBenchError
    from grain_bench.runtimes import check_equivalent

    small = _compact_with_odd_heads(tiny_model)
    inputs = _inputs(small.config.vocab_size)

    def wrong(**kwargs):
        out = small(**kwargs)
        out.logits = out.logits + 1e-2
        return out

    with pytest.raises(GrainBenchError, match="does not reproduce the model"):
        check_equivalent(wrong, small, inputs, "wrong")


@pytest.mark.runtime
def test_load_pruned_selects_a_runtime(tmp_path, tiny_model):
    from grain_bench import load_pruned
    from grain_bench.errors import UsageError
    from grain_bench.runtimes import TOLERANCE

    small, path, _ = _saved(tmp_path, tiny_model)
    inputs = _inputs(small.config.vocab_size)
    compiled = load_pruned(path, runtime="compile", example_inputs=inputs)
    assert _outputs_equal(compiled, small, inputs) <= TOLERANCE
    from grain_bench.runtimes import runtime_names

    assert runtime_names("cpu")[:5] == ["eager", "compile", "aoti", "ragged", "onnx"]  # the built-ins, in this order
    with pytest.raises(UsageError, match=f"runtime 'fast' is not one of {', '.join(runtime_names('cpu'))} on 'cpu'"):
        load_pruned(path, runtime="fast")


def test_measure_cli_refuses_an_unknown_mode(tmp_path, capsys):
    from grain_bench.cli import main

    assert main(["measure", "--results", str(tmp_path), "--mode", "turbo"]) == 2
    from grain_bench.runtimes import runtime_names

    assert f"--mode 'turbo' is not one of {', '.join(runtime_names('cpu'))} on 'cpu'" in capsys.readouterr().err
