"""The compact model equals the masked model, for edge-case masks, every task head and every registered method's masks;
it saves and loads back, also where grain_bench cannot be imported."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

from grain_bench.backbones import load_tiny
from grain_bench.errors import UsageError
from grain_bench.heads import HEADS
from grain_bench.masks import UnitMasks

ATOL = 1e-4


def _sharpen(model, seed: int = 0):
    """Re-draw every weight with std 0.3: the random-init tiny model's logits are ~0.02, too flat to show a 1e-4
    error."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    return model.eval()


@pytest.fixture
def tiny_model(tiny_model):
    """The tiny model with logits of order 1."""
    model, tokenizer = tiny_model
    return _sharpen(model), tokenizer


def _inputs(vocab: int, batch: int = 3, length: int = 11, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (batch, length), generator=generator)
    mask = torch.ones_like(ids)
    if batch > 1:
        mask[1, 7:] = 0  # padding in one row: the masks must be honoured
    types = torch.zeros_like(ids)
    types[:, 5:] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def _logits(outputs) -> torch.Tensor:
    keys = [k for k in ("logits", "start_logits", "end_logits") if k in outputs]
    return torch.cat([outputs[k].reshape(outputs[k].shape[0], -1) for k in keys], dim=-1)


def _masked_vs_compact(model, masks, inputs):
    """(masked logits, compact logits, dense logits, compact model)."""
    from grain_bench.compaction import compact
    from grain_bench.masked import MaskedModel

    model.eval()
    with torch.no_grad():
        dense = _logits(model(**inputs))
    masked = MaskedModel(model)
    masked.apply(masks)
    try:
        small = compact(model, masks).eval()
        with torch.no_grad():
            expected = _logits(model(**inputs))
            got = _logits(small(**inputs))
    finally:
        masked.remove()
    return expected, got, dense, small


def _random_masks(space, seed: int, keep: float = 0.5):

    generator = torch.Generator().manual_seed(seed)
    full = UnitMasks.full(space)
    return UnitMasks(*(torch.rand(t.shape, generator=generator) < keep for _, t in full.items()))


def _edge_masks(space, case: str):

    masks = _random_masks(space, seed=3, keep=0.6)
    if case == "full":
        return UnitMasks.full(space)
    if case == "random":
        return masks
    if case == "head_without_queries":  # value units but no query units: uniform attention over non-pad tokens
        masks.qk[0, 1] = False
        masks.vo[0, 1, :3] = True
    elif case == "layer_all_heads_without_queries":
        masks.qk[1] = False
        masks.vo[1, :, 0] = True
    elif case == "head_without_values":  # query units only: the head contributes nothing and is dropped
        masks.vo[0, 2] = False
        masks.qk[0, 2] = True
    elif case == "layer_without_heads":
        masks.qk[0] = False
        masks.vo[0] = False
    elif case == "layer_without_ffn":
        masks.ffn[1] = False
    elif case == "one_unit_each":
        masks = UnitMasks(torch.zeros_like(masks.qk), torch.zeros_like(masks.vo), torch.zeros_like(masks.ffn))
        masks.qk[0, 0, 0] = masks.vo[0, 0, 0] = masks.ffn[1, 5] = True
        masks.vo[1, 3, 7] = True
    elif case == "all_pruned":
        masks = UnitMasks(torch.zeros_like(masks.qk), torch.zeros_like(masks.vo), torch.zeros_like(masks.ffn))
    elif case == "uniform_heads":  # every head the same widths: the reshape-only fast path
        masks = UnitMasks.full(space)
        masks.qk[:, :, 4:] = False
        masks.vo[:, :, 6:] = False
    else:
        raise AssertionError(case)
    return masks


EDGE_CASES = ["full", "random", "head_without_queries", "layer_all_heads_without_queries", "head_without_values",
              "layer_without_heads", "layer_without_ffn", "one_unit_each", "all_pruned", "uniform_heads"]


@pytest.mark.parametrize("case", EDGE_CASES)
def test_compact_equals_masked_on_edge_cases(tiny_model, case):
    from grain_bench.masks import MaskSpace
    from grain_bench.measure import param_counts

    model, _ = tiny_model
    space = MaskSpace.from_config(model.config)
    masks = _edge_masks(space, case)
    expected, got, dense, small = _masked_vs_compact(model, masks, _inputs(model.config.vocab_size))
    assert (expected - got).abs().max().item() <= ATOL
    if case != "full":
        assert (dense - expected).abs().max().item() > 1e-2, "the masks should change the outputs"
    shape = masks.model_shape(space)
    assert param_counts(small)["encoder"] == shape.encoder_params()
    assert param_counts(small)["encoder_linear"] == shape.encoder_linear_params()


def test_compact_removes_units_physically(tiny_model):
    from grain_bench.masks import MaskSpace

    model, _ = tiny_model
    space = MaskSpace.from_config(model.config)
    masks = _edge_masks(space, "layer_without_heads")
    masks.ffn[1] = False
    small = _masked_vs_compact(model, masks, _inputs(model.config.vocab_size))[3]
    layer0, layer1 = small.bert.encoder.layer
    assert layer0.attention.qkv is None and not hasattr(layer0.attention, "dense")
    assert layer1.ffn.ffn_dim == 0 and not hasattr(layer1.ffn, "intermediate")
    kept_q = int(masks.qk[1][masks.vo[1].any(-1)].sum())
    assert layer1.attention.qkv.weight.shape == (2 * kept_q + int(masks.vo[1].sum()), space.hidden)
    assert layer1.attention.dense.weight.shape == (space.hidden, int(masks.vo[1].sum()))
    assert layer1.attention.scaling == pytest.approx(space.head_dim ** -0.5)  # original head size, not pruned widths


@pytest.mark.parametrize("head", list(HEADS))
def test_compact_keeps_every_task_head(head):
    from grain_bench.masks import MaskSpace

    model, _ = load_tiny(head, 3)
    _sharpen(model)
    space = MaskSpace.from_config(model.config)
    masks = _random_masks(space, seed=7)
    expected, got, _, small = _masked_vs_compact(model, masks, _inputs(model.config.vocab_size))
    assert type(small).__name__ == "Pruned" + type(model).__name__
    assert (expected - got).abs().max().item() <= ATOL


def _method_masks(regs, name: str, model, density: float):
    """Masks a registered method produces on the tiny model after a few observed steps of a toy loss."""
    from grain_bench.masked import MaskedModel
    from grain_bench.method import TrainState

    method = regs.methods.get(name).from_options({}, seed=0)
    masked = MaskedModel(model)
    state = TrainState(step=0, total_steps=10, model=model, space=masked.space, masks=masked.masks, seed=0)
    method.setup(state)
    try:
        for step in range(1, 3):
            masked.zero_grad()
            model.zero_grad()
            out = _logits(model(**_inputs(model.config.vocab_size, seed=step)))
            out.pow(2).sum().backward()
            state.step, state.masks, state.unit_grads = step, masked.masks, masked.unit_grads()
            method.observe(state)
        masks = method.masks_for(state, density) if getattr(method, "prunes", True) else masked.masks
    finally:
        masked.remove()
        model.zero_grad()
    return masks


def test_compact_equals_masked_for_every_registered_method(regs, tiny_model):
    from grain_bench.masks import MaskSpace

    model, _ = tiny_model
    space = MaskSpace.from_config(model.config)
    names = regs.methods.names()
    assert len(names) >= 5
    for name in names:
        masks = _method_masks(regs, name, model, 0.2)
        expected, got, _, _ = _masked_vs_compact(model, masks, _inputs(model.config.vocab_size))
        diff = (expected - got).abs().max().item()
        assert diff <= ATOL, f"{name}: {diff}"
        if name != "dense":
            assert masks.density(space) < 0.9, f"{name} did not prune"


def test_compact_rejects_wrong_inputs(tiny_model):
    from grain_bench.compaction import compact
    from grain_bench.masks import MaskSpace

    model, _ = tiny_model
    space = MaskSpace.from_config(model.config)
    wrong = UnitMasks.full(MaskSpace(3, 4, 8, 64, 32))
    with pytest.raises(UsageError, match="mask space"):
        compact(model, wrong)
    small = compact(model, UnitMasks.full(space))
    with pytest.raises(UsageError, match="already compact"):
        compact(small, UnitMasks.full(space))


# ---- save and load ----------------------------------------------------------------------------------------------
def _saved(tmp_path, tiny_model, head="sequence"):
    from grain_bench.compaction import compact, save_pruned
    from grain_bench.masks import MaskSpace

    model, tokenizer = (load_tiny(head, 2) if head != "sequence" else tiny_model)
    _sharpen(model)
    space = MaskSpace.from_config(model.config)
    masks = _edge_masks(space, "layer_without_ffn")
    masks.qk[0, 1] = False  # a head with value units only
    small = compact(model, masks).eval()
    path = save_pruned(small, str(tmp_path / "model"), tokenizer=tokenizer, metadata={"note": "test"})
    return small, path, masks


def test_save_writes_a_self_contained_directory(tmp_path, tiny_model):
    small, path, masks = _saved(tmp_path, tiny_model)
    files = set(os.listdir(path))
    assert {"config.json", "model.safetensors", "modeling_pruned_bert.py", "grain_bench.json"} <= files
    assert any(f.startswith("tokenizer") or f == "vocab.txt" for f in files)
    config = json.load(open(os.path.join(path, "config.json")))
    assert config["model_type"] == "pruned_bert"
    assert config["auto_map"]["AutoModelForSequenceClassification"].startswith("modeling_pruned_bert.")
    assert config["layer_shapes"][1]["ffn_dim"] == 0
    assert [len(layer["heads"]) for layer in config["layer_shapes"]] == [int(n) for n in masks.vo.any(-1).sum(-1)]
    source = open(os.path.join(path, "modeling_pruned_bert.py")).read()
    imports = [line for line in source.splitlines() if line.lstrip().startswith(("import", "from"))]
    assert "grain_bench" not in "".join(imports)
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".")], "temporary directories left behind"


def test_load_pruned_round_trip(tmp_path, tiny_model):
    from grain_bench import load_pruned

    small, path, _ = _saved(tmp_path, tiny_model)
    loaded = load_pruned(path)
    inputs = _inputs(small.config.vocab_size)
    with torch.no_grad():
        assert torch.equal(_logits(small(**inputs)), _logits(loaded(**inputs)))
    assert not loaded.training


def test_save_replaces_an_existing_model(tmp_path, tiny_model):
    from grain_bench.compaction import save_pruned

    small, path, _ = _saved(tmp_path, tiny_model)
    save_pruned(small, path, metadata={"note": "second"})
    assert json.load(open(os.path.join(path, "grain_bench.json")))["note"] == "second"
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".")]


def test_load_pruned_rejects_other_directories(tmp_path, tiny_model):
    from grain_bench import load_pruned

    with pytest.raises(UsageError, match="no config.json"):
        load_pruned(str(tmp_path))
    model, _ = tiny_model
    model.save_pretrained(str(tmp_path / "dense"))
    with pytest.raises(UsageError, match="not a grain-bench compact model"):
        load_pruned(str(tmp_path / "dense"))


# A child that cannot import grain_bench: a meta-path finder refuses it (the editable install would otherwise find it).
CHILD = textwrap.dedent("""
    import importlib.abc, json, sys
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "grain_bench" or name.startswith("grain_bench."):
                raise ImportError("grain_bench is blocked in this process")
            return None
    sys.meta_path.insert(0, Block())
    try:
        import grain_bench  # noqa: F401
        raise SystemExit("grain_bench was importable")
    except ImportError:
        pass
    import torch
    from transformers import AutoModelForSequenceClassification
    path, inputs_file = sys.argv[1], sys.argv[2]
    inputs = {k: torch.tensor(v) for k, v in json.load(open(inputs_file)).items()}
    model = AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=True).eval()
    with torch.no_grad():
        logits = model(**inputs).logits
    assert not any(m.startswith("grain_bench") for m in sys.modules), "grain_bench got imported"
    hooks = hasattr(type(model.bert.encoder.layer[0].attention), "mirror_dropout")  # format 1's file has them
    print(json.dumps({"class": type(model).__name__, "logits": logits.tolist(), "training_hooks": hooks}))
""")


def _child_logits(tmp_path, path, inputs):
    """The child's class, logits and whether its modeling file has format 1's training hooks."""
    inputs_file = tmp_path / "inputs.json"
    inputs_file.write_text(json.dumps({k: v.tolist() for k, v in inputs.items()}))
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    done = subprocess.run([sys.executable, str(script), path, str(inputs_file)], capture_output=True, text=True,
                          env=env, cwd=str(tmp_path), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_loads_with_trust_remote_code_without_grain_bench(tmp_path, tiny_model):
    small, path, _ = _saved(tmp_path, tiny_model)
    inputs = _inputs(small.config.vocab_size)
    result = _child_logits(tmp_path, path, inputs)
    assert result["class"] == "PrunedBertForSequenceClassification"
    with torch.no_grad():
        expected = small(**inputs).logits
    assert (torch.tensor(result["logits"]) - expected).abs().max().item() <= 1e-6
    assert not result["training_hooks"]  # the saved file is format 2's: what inference and plain training need


def test_a_compact_model_of_format_1_still_loads(tmp_path, tiny_model):
    """A folder written before format 2 (the same config and weights, with format 1's modeling file, which carried
    training and runtime hooks: tests/data/compact-format-1 holds it as commit bd54c4a saved it) loads through
    ``load_pruned`` and, with its own modeling file, through ``trust_remote_code`` without grain-bench; re-saved, it
    is format 2."""
    from grain_bench.compaction import METADATA_FILE, MODELING_FILE, load_pruned, save_pruned

    small, path, _ = _saved(tmp_path, tiny_model)
    for name, key in (("config.json", "pruned_format_version"), (METADATA_FILE, "format_version")):
        with open(os.path.join(path, name)) as handle:
            values = json.load(handle)
        values[key] = 1
        values.pop("sha256", None)  # format-1 folders were saved before the content hashes were recorded
        with open(os.path.join(path, name), "w") as handle:
            json.dump(values, handle)
    shutil.copyfile(os.path.join(os.path.dirname(__file__), "data", "compact-format-1", MODELING_FILE),
                    os.path.join(path, MODELING_FILE))
    inputs = _inputs(small.config.vocab_size)
    with torch.no_grad():
        expected = small(**inputs).logits
        loaded = load_pruned(path)
        assert loaded.config.pruned_format_version == 1
        assert (loaded(**inputs).logits - expected).abs().max().item() <= 1e-6
    result = _child_logits(tmp_path, path, inputs)
    assert result["class"] == "PrunedBertForSequenceClassification" and result["training_hooks"]
    assert (torch.tensor(result["logits"]) - expected).abs().max().item() <= 1e-6
    again = save_pruned(loaded, str(tmp_path / "again"))
    with open(os.path.join(again, "config.json")) as handle:
        assert json.load(handle)["pruned_format_version"] == 2
    with open(os.path.join(again, METADATA_FILE)) as handle:
        assert json.load(handle)["format_version"] == 2


@pytest.mark.slow
def test_compact_equals_masked_on_minilm(regs):
    from grain_bench.allocate import prune_to_density
    from grain_bench.backbones import load_minilm
    from grain_bench.masked import unit_weight_norms
    from grain_bench.masks import MaskSpace

    model, tokenizer = load_minilm("sequence", 2)
    model.eval()
    space = MaskSpace.from_config(model.config)
    batch = tokenizer(["a quietly good film", "the worst service i have ever had, never again"] * 2,
                      padding=True, return_tensors="pt")
    inputs = dict(batch)
    for density in (0.5, 0.1, 0.05):
        masks = prune_to_density(unit_weight_norms(model), UnitMasks.full(space), space, density)
        expected, got, _, _ = _masked_vs_compact(model, masks, inputs)
        assert (expected - got).abs().max().item() <= ATOL
    for name in ("grain", "heads", "ffn-only", "random"):
        masks = _method_masks(regs, name, model, 0.1)
        expected, got, _, _ = _masked_vs_compact(model, masks, inputs)
        assert (expected - got).abs().max().item() <= ATOL, name


# ---- the run-time layout: buckets of heads, aligned GEMM widths, the padded-weight cache -------------------------
def test_plan_buckets_covers_every_head_and_trades_padding_for_calls():
    from grain_bench.modeling_pruned_bert import plan_buckets

    generator = torch.Generator().manual_seed(3)
    for _ in range(50):
        heads = int(torch.randint(1, 13, (1,), generator=generator))
        qk = torch.randint(0, 33, (heads,), generator=generator).tolist()
        vo = torch.randint(1, 33, (heads,), generator=generator).tolist()
        for cost in (0.0, 16.0, 1e9):
            buckets = plan_buckets(qk, vo, cost)
            members = sorted(h for bucket, _, _ in buckets for h in bucket)
            assert members == list(range(heads))  # every head exactly once
            for bucket, qk_width, vo_width in buckets:
                assert qk_width == max(qk[h] for h in bucket) and vo_width == max(vo[h] for h in bucket)
                # heads without query units (uniform attention, no scores needed) never share a bucket with others
                assert len({qk[h] == 0 for h in bucket}) == 1
            if cost == 1e9:  # calls are expensive: one bucket with queries, one without
                assert len(buckets) == len({q == 0 for q in qk})
            if cost == 0.0:  # calls are free: no head is padded at all
                assert all(qk_width == qk[h] and vo_width == vo[h]
                           for bucket, qk_width, vo_width in buckets for h in bucket)


@pytest.mark.parametrize("layout", [dict(call_cost=0.0), dict(call_cost=1e9), dict(align=1), dict(align=16)])
def test_every_layout_gives_the_same_outputs(tiny_model, layout):
    from grain_bench.compaction import compact
    from grain_bench.masks import MaskSpace

    model, _ = tiny_model
    space = MaskSpace.from_config(model.config)
    small = compact(model, _random_masks(space, seed=4)).eval()
    inputs = _inputs(model.config.vocab_size)
    with torch.no_grad():
        before = _logits(small(**inputs))
        for layer in small.bert.encoder.layer:
            if layer.attention.qkv is not None:
                layer.attention.set_layout(**layout)
            if "align" in layout:
                layer.ffn.set_layout(align=layout["align"])
        after = _logits(small(**inputs))
    assert (before - after).abs().max().item() <= 1e-5


def test_padded_weight_cache_follows_parameter_changes_and_gradients_flow(tiny_model):
    from grain_bench.compaction import compact
    from grain_bench.masks import MaskSpace

    model, _ = tiny_model
    space = MaskSpace.from_config(model.config)
    small = compact(model, _random_masks(space, seed=5)).eval()
    inputs = _inputs(model.config.vocab_size)
    layer = next(layer for layer in small.bert.encoder.layer if layer.attention.qkv is not None)
    assert not layer.attention.identity and layer.ffn.ffn_dim % layer.ffn.align  # both paddings are exercised
    with torch.no_grad():
        first = _logits(small(**inputs))
        layer.attention.qkv.weight.mul_(1.5)  # in place: the cached padded copy must be rebuilt
        layer.ffn.intermediate.weight.mul_(0.5)
        second = _logits(small(**inputs))
    assert (first - second).abs().max().item() > 1e-3
    # With gradients on, the padded copies are rebuilt differentiably: same outputs, gradients reach the parameters.
    out = _logits(small(**inputs))
    assert (out.detach() - second).abs().max().item() <= 1e-5
    out.square().sum().backward()
    for param in (layer.attention.qkv.weight, layer.attention.dense.weight, layer.ffn.intermediate.weight):
        assert param.grad is not None and param.grad.abs().sum() > 0


def test_heads_without_queries_without_an_attention_mask(tiny_model):
    """No mask at all (the encoder then gets None): heads without query units take the plain mean of the values."""
    from grain_bench.masks import MaskSpace

    model, _ = tiny_model
    space = MaskSpace.from_config(model.config)
    inputs = {k: v for k, v in _inputs(model.config.vocab_size).items() if k != "attention_mask"}
    expected, got, _, small = _masked_vs_compact(model, _edge_masks(space, "layer_all_heads_without_queries"), inputs)
    assert any(qk == 0 for layer in small.bert.encoder.layer for _, qk, _ in layer.attention.buckets)
    assert (expected - got).abs().max().item() <= ATOL


def test_a_compact_model_of_another_format_version_is_refused_clearly(tmp_path, tiny_model):
    import json

    from grain_bench.compaction import compact, load_pruned, save_pruned
    from grain_bench.errors import UsageError
    from grain_bench.masks import MaskSpace

    model, tokenizer = tiny_model
    space = MaskSpace.from_config(model.config)
    folder = save_pruned(compact(model, UnitMasks.full(space), space), str(tmp_path / "m"), tokenizer=tokenizer)
    with open(os.path.join(folder, "config.json")) as handle:
        config = json.load(handle)
    config["pruned_format_version"] = 99
    with open(os.path.join(folder, "config.json"), "w") as handle:
        json.dump(config, handle)
    with pytest.raises(UsageError, match="format version 99; this grain-bench .* reads formats 1, 2 and 3: load it "
                                         "with the grain-bench that wrote it"):
        load_pruned(folder)


# ---- hidden dimensions ------------------------------------------------------------------------------------------
def _hidden_masks(space, seed: int):
    """Random masks of every kind, a third of the hidden dimensions pruned (the widths then fit no head count)."""
    generator = torch.Generator().manual_seed(seed)
    masks = _random_masks(space, seed=seed, keep=0.6)
    masks.hidden = torch.ones(space.hidden, dtype=torch.bool)
    masks.hidden[torch.randperm(space.hidden, generator=generator)[:space.hidden // 3 + 1]] = False
    assert masks.prunes_hidden() and masks.hidden_kept(space) % space.num_heads
    return masks.coupled()


def _scales(space, seed: int):
    from grain_bench.masks import UnitTensors

    generator = torch.Generator().manual_seed(seed)
    scales = UnitTensors.filled(space, 0.0).map(lambda t: torch.rand(t.shape, generator=generator) + 0.5)
    scales.hidden = torch.rand(space.hidden, generator=generator) + 0.5
    return scales


@pytest.mark.parametrize("head", [*HEADS, "bare"])
def test_hidden_dimensions_compact_to_a_narrower_residual_stream(tmp_path, head):
    """Masks that prune hidden dimensions, with real-valued gates on every kind (as CoFi trains them): the masked model
    (each LayerNorm over the open dimensions, as CoFi's) equals the model with the gates folded into its weights under
    0/1 gates, which equals the compact model whose residual stream is the kept dimensions, for every task head; the
    pooler maps back to the original width. Saved, the folder is format 3 and loads back to the same outputs, also
    through the ragged runtime."""
    from grain_bench.compaction import compact, load_pruned, save_pruned
    from grain_bench.masked import MaskedModel, fold_unit_scales
    from grain_bench.masks import MaskSpace

    model, _ = load_tiny("sequence" if head == "bare" else head, 3)
    if head == "bare":
        model = model.base_model
    _sharpen(model)
    space = MaskSpace.from_config(model.config)
    masks, scales = _hidden_masks(space, seed=5), _scales(space, seed=6)
    inputs = _inputs(model.config.vocab_size)
    kept = masks.hidden

    def outputs(m):
        with torch.no_grad():
            out = m(**inputs)
        return out.pooler_output if head == "bare" else _logits(out)

    dense = outputs(model)
    masked = MaskedModel(model, space)
    masked.apply(masks)
    masked.set_values(scales)
    soft = outputs(model)
    masked.set_values(None)
    with torch.no_grad():
        fold_unit_scales(model, space, masks, scales)
    folded = outputs(model)
    masked.remove()
    small = compact(model, masks, space).eval()
    got = outputs(small)
    assert (soft - dense).abs().max().item() > 0.1  # the masks and gates change the outputs
    assert (soft - folded).abs().max().item() <= ATOL and (folded - got).abs().max().item() <= ATOL
    assert small.config.hidden_size == int(kept.sum()) and small.config.pooler_size == space.hidden
    assert small.base_model.embeddings.word_embeddings.weight.shape[1] == int(kept.sum())
    if head != "bare":  # evaluate()'s latency baseline is the dense model the compact one came from, full width
        from types import SimpleNamespace

        from grain_bench.evaluation import dense_twin

        twin = dense_twin(small, SimpleNamespace(head=head))
        assert twin.config.hidden_size == space.hidden and type(twin) is type(model)
        assert sum(p.numel() for p in twin.parameters()) == sum(p.numel() for p in model.parameters())
    path = save_pruned(small, str(tmp_path / "model"))
    with open(os.path.join(path, "config.json")) as handle:
        assert json.load(handle)["pruned_format_version"] == 3
    for runtime in ("eager", "ragged"):
        loaded = load_pruned(path, runtime=runtime, example_inputs=inputs)
        assert (outputs(loaded) - got).abs().max().item() <= ATOL, runtime


def test_a_hidden_pruned_model_loads_with_trust_remote_code_without_grain_bench(tmp_path, tiny_model):
    """The saved modeling file alone builds the narrower residual stream and the pooler back to the full width."""
    from grain_bench.compaction import compact, save_pruned
    from grain_bench.masks import MaskSpace

    model, tokenizer = tiny_model
    space = MaskSpace.from_config(model.config)
    small = compact(model, _hidden_masks(space, seed=2), space).eval()
    path = save_pruned(small, str(tmp_path / "model"), tokenizer=tokenizer)
    inputs = _inputs(small.config.vocab_size)
    result = _child_logits(tmp_path, path, inputs)
    with torch.no_grad():
        expected = small(**inputs).logits
    assert (torch.tensor(result["logits"]) - expected).abs().max().item() <= 1e-6


def test_an_all_kept_hidden_mask_is_the_model_without_the_kind(tmp_path, tiny_model):
    """Every hidden dimension kept compacts to exactly the model of masks without the kind, saved as format 2 (which
    older grain-bench reads); masks that keep no hidden dimension are refused."""
    from grain_bench.compaction import compact, save_pruned
    from grain_bench.masks import MaskSpace

    model, _ = tiny_model
    space = MaskSpace.from_config(model.config)
    masks = _random_masks(space, seed=4, keep=0.6).coupled()
    plain = compact(model, masks, space).eval()
    masks.hidden = torch.ones(space.hidden, dtype=torch.bool)
    same = compact(model, masks, space).eval()
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), same.state_dict().values()))
    path = save_pruned(same, str(tmp_path / "model"))
    with open(os.path.join(path, "config.json")) as handle:
        assert json.load(handle)["pruned_format_version"] == 2
    masks.hidden = torch.zeros(space.hidden, dtype=torch.bool)
    with pytest.raises(UsageError, match="no hidden dimension"):
        compact(model, masks, space)


def test_gather_and_scatter_round_trip_through_hidden_dimensions(tiny_model):
    """Compact training's copies: every compact tensor gathered from the dense state and scattered back into a zeroed
    copy restores exactly the kept entries and leaves the pruned ones zero."""
    from grain_bench.compaction import gather, model_sources, scatter
    from grain_bench.masks import MaskSpace

    model, _ = tiny_model
    space = MaskSpace.from_config(model.config)
    masks = _hidden_masks(space, seed=8)
    dense = {k: v.clone() for k, v in model.state_dict().items()}
    zeroed = {k: torch.zeros_like(v) for k, v in dense.items()}
    sources = model_sources(model, masks, space)
    assert "bert.embeddings.word_embeddings.weight" in sources and "bert.pooler.dense.weight" in sources
    for pieces in sources.values():
        scatter(pieces, gather(pieces, dense), zeroed)
    for name, pieces in sources.items():
        assert torch.equal(gather(pieces, zeroed), gather(pieces, dense)), name
    word = "bert.embeddings.word_embeddings.weight"
    assert bool((zeroed[word][:, ~masks.hidden] == 0).all()) and torch.equal(zeroed[word][:, masks.hidden],
                                                                             dense[word][:, masks.hidden])
