"""The GPU layout (one aligned attention call per layer) and mixed-precision training, both checked on CPU: the
layout is device-agnostic, and bf16/fp16 autocast run on CPU as on CUDA."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from test_compact import EDGE_CASES, _edge_masks, _inputs, _logits, _sharpen

from grain_bench.backbones import load_tiny
from grain_bench.distill import distill, set_seed
from grain_bench.errors import UsageError
from grain_bench.masks import MaskSpace
from grain_bench.recipes import get_recipe


def _compact(case: str):
    from grain_bench.compaction import compact

    model, _ = load_tiny("sequence", 2)
    model = _sharpen(model)
    return compact(model, _edge_masks(MaskSpace.from_config(model.config), case)).eval()


@pytest.mark.parametrize("case", EDGE_CASES)
def test_gpu_layout_reproduces_the_model_in_fp32(case):
    from grain_bench.modeling_pruned_bert import PrunedBertAttention
    from grain_bench.prepared import GPU_WIDTH_MULTIPLE, gpu_layout

    small = _compact(case)
    inputs = _inputs(small.config.vocab_size)
    laid_out = gpu_layout(small)
    with torch.no_grad():
        expected, got = _logits(small(**inputs)), _logits(laid_out(**inputs))
    assert (expected - got).abs().max().item() <= 1e-5
    for block in laid_out.modules():
        if isinstance(block, PrunedBertAttention) and block.num_heads:
            scored = [bucket for bucket in block.buckets if bucket[1]]
            assert len(scored) <= 1, "one attention call per layer for the heads with query units"
            assert all(qk % GPU_WIDTH_MULTIPLE == 0 and vo % GPU_WIDTH_MULTIPLE == 0 for _, qk, vo in block.buckets)
    # the model handed in keeps its own layout
    originals = [b.buckets for b in small.modules() if isinstance(b, PrunedBertAttention)]
    assert originals == [b.buckets for b in _compact(case).modules() if isinstance(b, PrunedBertAttention)]


def test_gpu_layout_pads_the_widths_of_a_real_plan():
    """Random masks leave odd widths: the GPU layout rounds every bucket up to multiples of 8 in one bucket."""
    from grain_bench.modeling_pruned_bert import PrunedBertAttention
    from grain_bench.prepared import gpu_layout

    small = _compact("random")
    before = [b.buckets for b in small.modules() if isinstance(b, PrunedBertAttention) and b.num_heads]
    after = [b.buckets for b in gpu_layout(small).modules() if isinstance(b, PrunedBertAttention) and b.num_heads]
    assert any(qk % 8 or vo % 8 for layer in before for _, qk, vo in layer), "the CPU plan keeps exact widths"
    assert all(len([b for b in layer if b[1]]) == 1 for layer in after)


@pytest.mark.parametrize("case", ["random", "head_without_queries", "layer_without_heads", "layer_without_ffn"])
def test_gpu_layout_in_bf16_matches_fp32(case):
    """In bf16 the laid-out model is as close to the fp32 model as the CPU plan in bf16 is (rounding, not layout)."""
    from grain_bench.prepared import gpu_layout

    small = _compact(case)
    inputs = _inputs(small.config.vocab_size)
    with torch.no_grad():
        reference = _logits(small(**inputs))
        half = small.to(torch.bfloat16)
        plain, laid_out = _logits(half(**inputs)).float(), _logits(gpu_layout(half)(**inputs)).float()
    scale = reference.abs().max().item()
    plain_error = (plain - reference).abs().max().item()
    layout_error = (laid_out - reference).abs().max().item()
    assert layout_error <= max(2 * plain_error, 2e-2 * scale)
    assert (laid_out - plain).abs().max().item() <= 4e-2 * scale


# ---- mixed-precision training ---------------------------------------------------------------------------------------
def test_precision_is_resolved_for_the_device_and_refused_where_it_cannot_run():
    from grain_bench.precision import resolve_precision

    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"
    with pytest.raises(UsageError, match="tf32.*CUDA"):
        resolve_precision("tf32", "cpu")
    with pytest.raises(UsageError):
        get_recipe("test", {"precision": "fp8"})


def test_fp32_keeps_every_run_id_and_teacher_key():
    """An fp32 recipe's spec and teacher key do not mention the precision (every stored id stays as it was); any
    other precision is part of both."""
    recipe = get_recipe("quick")
    assert "precision" not in recipe.to_dict() and "precision" not in recipe.teacher_dict()
    bf16 = dataclasses.replace(recipe, precision="bf16")
    assert bf16.to_dict()["precision"] == "bf16" and bf16.teacher_dict()["precision"] == "bf16"
    assert "bf16 training" in bf16.caption() and "training" not in recipe.caption().rpartition(";")[2]


def test_a_cpu_sweep_trains_in_fp32_unless_asked(regs, results_dir):
    from grain_bench.api import prepare_sweep

    common = dict(methods=["grain"], tasks=["tweets"], densities=[0.5], seeds=[1], backbone="test-bert-tiny",
                  recipe="test", results=results_dir, device="cpu")
    default = prepare_sweep(regs=regs, dry_run=True, **common).specs[0]
    assert "precision" not in default.recipe
    asked = prepare_sweep(regs=regs, dry_run=True, recipe_options={"precision": "bf16"}, **common).specs[0]
    assert asked.recipe["precision"] == "bf16" and asked.run_id != default.run_id
    with pytest.raises(UsageError, match="tf32"):
        prepare_sweep(regs=regs, dry_run=True, recipe_options={"precision": "tf32"}, **common)


@pytest.fixture(scope="module")
def distillation():
    from grain_bench.harness import TaskData
    from grain_bench.plugins import get_registries
    from grain_bench.tasks.tweets import TweetSentiment

    task = TweetSentiment()
    teacher, tokenizer = load_tiny("sequence", 2)
    with torch.no_grad():  # a teacher unlike the student's initialisation, so that every loss has gradients
        generator = torch.Generator().manual_seed(7)
        for param in teacher.parameters():
            param.add_(0.5 * torch.randn(param.shape, generator=generator))
    train = task.encode("train", tokenizer, 32, limit=64)
    data = TaskData(task, tokenizer, train, train, train, task.collate(tokenizer))
    runs = {}
    for precision in ("fp32", "bf16", "fp16"):
        set_seed(0)
        student, _ = load_tiny("sequence", 2)
        recipe = get_recipe("test", {"max_steps": 30, "precision": precision})
        runs[precision] = distill(get_registries().methods.get("grain")(), task, teacher.eval(), student, data, recipe,
                                  0.3, seed=0, progress=False)
    return runs


def _kept(masks) -> torch.Tensor:
    return torch.cat([masks.qk.flatten(), masks.vo.flatten(), masks.ffn.flatten()])


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_and_chooses_masks_close_to_fp32s(distillation, precision):
    """GRAIN on the tiny model in bf16 / fp16 autocast: the weights stay fp32, the losses fall as in fp32 and the
    kept units overlap fp32's (measured: Jaccard 0.97 for bf16, 1.0 for fp16 on this model and seed)."""
    fp32, mixed = distillation["fp32"], distillation[precision]
    assert all(p.dtype == torch.float32 for p in mixed.model.parameters())
    assert mixed.precision["precision"] == precision and fp32.precision == {}
    first, last = mixed.history[0]["logit_loss"], mixed.history[-1]["logit_loss"]
    assert last < first
    assert abs(last - fp32.history[-1]["logit_loss"]) <= 0.05 * fp32.history[-1]["logit_loss"]
    assert mixed.masks.density(mixed.space) == pytest.approx(fp32.masks.density(fp32.space))
    a, b = _kept(fp32.masks), _kept(mixed.masks)
    assert (a & b).sum().item() / (a | b).sum().item() >= 0.9


def test_fp16_unscales_what_a_method_observes():
    """Under fp16 the gates' gradients are divided by the loss scale before a method sees them, and a step whose
    gradients overflowed is not shown at all."""
    from grain_bench.masks import UnitTensors
    from grain_bench.precision import MixedPrecision

    precision = MixedPrecision("fp16", "cpu")
    loss = torch.ones((), requires_grad=True) * 3.0
    scaled = precision.scale(loss)
    scale = float((scaled / loss).detach())
    assert scale > 1
    grads = UnitTensors(torch.full((1, 2, 2), scale), torch.full((1, 2, 2), 2 * scale), torch.full((1, 3), scale))
    unscaled = precision.unscaled(grads)
    assert torch.allclose(unscaled.vo, torch.full((1, 2, 2), 2.0))
    grads.ffn[0, 1] = float("inf")
    assert precision.unscaled(grads) is None
    assert MixedPrecision("fp32", "cpu").unscaled(grads) is grads


def test_compile_budget_stops_a_compilation_that_runs_past_it():
    """A first call that does not end is stopped with "not compiled in N s" (and the timer is cleared after)."""
    import signal

    from grain_bench.runtimes import CompileTimeout, compile_budget

    with pytest.raises(CompileTimeout, match="not compiled in 0.05 s"), compile_budget(0.05):
        while True:
            pass
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    with compile_budget(60):
        total = sum(range(10))
    assert total == 45 and signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


@pytest.mark.gpu
def test_cuda_graphs_of_many_models_replay_side_by_side_and_match_eager():
    """Every edge case's compact model captured in one process (the H100 run's side-by-side assert), each replay equal
    to its eager model in fp16."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from grain_bench.runtimes import prepare

    models = {case: _compact(case).to("cuda", torch.float16) for case in EDGE_CASES}
    inputs = {k: v.cuda() for k, v in _inputs(next(iter(models.values())).config.vocab_size).items()}
    graphs = {case: prepare(model, "cuda_graph", dict(inputs), check=False) for case, model in models.items()}
    for _ in range(2):
        for case, graph in graphs.items():
            with torch.inference_mode():
                expected = _logits(models[case](**inputs)).float()
                got = _logits(graph(**inputs)).float()
            assert (got - expected).abs().max().item() <= 2e-2 * max(1.0, expected.abs().max().item()), case


def test_best_mode_keeps_each_models_fastest_correct_runtime():
    """``mode="best"`` times every candidate runtime of the device and keeps each model's fastest, naming it; the
    record's latency entry keeps the runtime."""
    from grain_bench.measure import BEST, LatencySettings, best_candidates, speedup_entries, time_models
    from grain_bench.records import latency_entry

    small = _compact("random")
    dense, _ = load_tiny("sequence", 2)
    settings = LatencySettings(device="cpu", batch=2, seq_len=16, mode=BEST, threads=1, warmup=1, runs=2)
    results = time_models({"dense": dense.eval(), "compact": small}, settings)
    assert "eager" in best_candidates("cpu") and "cuda_graph" in best_candidates("cuda")
    for result in results.values():
        candidates = result.extra["candidates_ms"]
        assert result.mode == BEST and set(candidates) <= set(best_candidates("cpu")) and "eager" in candidates
        assert result.extra["runtime"] == min(candidates, key=candidates.get)
        assert result.median_ms == candidates[result.extra["runtime"]]
    entry = latency_entry(speedup_entries(results, "dense")[1])
    assert entry.mode == BEST and entry.runtime == results["compact"].extra["runtime"]


def test_compile_budget_is_read_when_a_model_is_compiled(monkeypatch):
    """The budget comes from the environment at compile time; a value that is no number is a clear usage error, not
    an import-time crash."""
    from grain_bench.runtimes import COMPILE_BUDGET_S, compile_budget_s

    monkeypatch.delenv("GRAIN_BENCH_COMPILE_BUDGET_S", raising=False)
    assert compile_budget_s() == COMPILE_BUDGET_S
    monkeypatch.setenv("GRAIN_BENCH_COMPILE_BUDGET_S", "45")
    assert compile_budget_s() == 45.0
    monkeypatch.setenv("GRAIN_BENCH_COMPILE_BUDGET_S", "soon")
    with pytest.raises(UsageError, match="GRAIN_BENCH_COMPILE_BUDGET_S='soon' is not a number"):
        compile_budget_s()
