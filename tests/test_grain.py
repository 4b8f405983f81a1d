"""GRAIN and whole-head pruning against hand-computed values on the tiny backbone."""

from __future__ import annotations

import math

import pytest
import torch

from grain_bench.arch import encoder_layers
from grain_bench.losses import soft_cross_entropy
from grain_bench.masked import MaskedModel
from grain_bench.masks import MaskSpace, UnitMasks, UnitTensors
from grain_bench.method import TrainState
from grain_bench.methods.grain import Grain, structure_factor
from grain_bench.methods.heads import Heads
from grain_bench.scoring import ScoreEMA


def _batch(tokenizer):
    enc = tokenizer(["the cat sat on the mat", "a short one", "pruning heads inside out"], padding=True,
                    return_tensors="pt")
    return {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids")}


def test_unit_gradients_equal_the_reference_score_formulas(tiny_model):
    model, tokenizer = tiny_model
    masked = MaskedModel(model)
    batch = _batch(tokenizer)
    target = torch.tensor([[2.0, -1.0], [0.5, 0.5], [-3.0, 1.0]])
    model.zero_grad()
    loss = soft_cross_entropy(model(**batch).logits, target, temperature=2.0)
    loss.backward()
    grads = masked.unit_grads()
    space = masked.space
    for index, layer in enumerate(encoder_layers(model)):
        q = layer.attention.self.query
        o = layer.attention.output.dense
        w2 = layer.output.dense
        query = (q.weight.grad * q.weight).sum(1) + q.bias.grad * q.bias  # sum over columns, plus the bias term
        value = (o.weight.grad * o.weight).sum(0)  # sum over rows of W_O, per column
        ffn = (w2.weight.grad * w2.weight).sum(0)  # sum over rows of W_2, per column
        torch.testing.assert_close(grads.qk[index].reshape(-1), query, rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(grads.vo[index].reshape(-1), value, rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(grads.ffn[index], ffn, rtol=1e-4, atol=1e-7)
    assert grads.qk.shape == (space.num_layers, space.num_heads, space.head_dim)
    assert grads.qk.abs().sum() > 0 and grads.ffn.abs().sum() > 0


def test_structure_regularisation_factor():
    vo = torch.ones(1, 3, 10, dtype=torch.bool)
    vo[0, 1, :5] = False
    vo[0, 2, :] = False
    factor = structure_factor(vo, alpha=0.3).reshape(-1)
    assert factor[0].item() == pytest.approx(math.tanh(1 / 0.3))  # a full head is scaled by 0.9975, not 1
    assert factor[1].item() == pytest.approx(math.tanh(0.5 / 0.3))
    assert factor[2].item() == 0.0


def test_grain_step_scores_regularise_value_units_only():
    space = MaskSpace(1, 2, 4, 6, 8)
    grads = UnitTensors(-torch.ones(1, 2, 4), -2 * torch.ones(1, 2, 4), 3 * torch.ones(1, 6))
    masks = UnitMasks.full(space)
    masks.vo[0, 1, :3] = False  # head 1 keeps 1 of 4 value units
    method = Grain.from_options({"alpha": "0.3"})
    scores = method.step_scores(grads, masks)
    assert torch.all(scores.qk == 1.0) and torch.all(scores.ffn == 3.0)  # |.| after the sum, no regularisation
    assert scores.vo[0, 0, 0].item() == pytest.approx(2 * math.tanh(1 / 0.3))
    assert scores.vo[0, 1, 0].item() == pytest.approx(2 * math.tanh(0.25 / 0.3))
    assert Grain.from_options({"alpha": "0"}).step_scores(grads, masks).vo.eq(2.0).all()
    nan = UnitTensors(grads.qk.clone(), grads.vo.clone(), grads.ffn.clone())
    nan.ffn[0, 0] = float("nan")
    assert method.step_scores(nan, masks) is None


def test_ema_from_zero_without_bias_correction_and_nan_steps_decay():
    ema = ScoreEMA(beta=0.9)
    space = MaskSpace(1, 1, 2, 2, 4)
    ema.update(UnitTensors.filled(space, 1.0))
    ema.update(UnitTensors.filled(space, 3.0))
    expected = 0.9 * (0.1 * 1.0) + 0.1 * 3.0
    assert ema.value.ffn[0, 0].item() == pytest.approx(expected)
    ema.update(None)  # a NaN step: no scores, but the average still decays
    assert ema.value.ffn[0, 0].item() == pytest.approx(0.9 * expected)
    assert (ema.updates, ema.skipped) == (2, 1)


def test_grain_gradient_separation_option_selects_the_observed_loss():
    assert Grain.from_options({}).gradient_source == "logit"
    assert Grain.from_options({"gradient_separation": "false"}).gradient_source == "total"


def test_head_without_query_units_attends_uniformly(tiny_model):
    model, tokenizer = tiny_model
    model.set_attn_implementation("eager")
    masked = MaskedModel(model)
    masks = UnitMasks.full(masked.space)
    masks.qk[1, 2, :] = False
    masked.apply(masks)
    batch = _batch(tokenizer)
    with torch.no_grad():
        attentions = model(**batch, output_attentions=True).attentions
    probs = attentions[1][:, 2]  # layer 1, head 2: [batch, query, key]
    lengths = batch["attention_mask"].sum(-1)
    for row, length in enumerate(lengths.tolist()):
        expected = torch.zeros(probs.shape[-1])
        expected[:length] = 1.0 / length
        torch.testing.assert_close(probs[row, :length], expected.expand(length, -1))
    assert not torch.allclose(attentions[1][0, 1, 0, :3], torch.full((3,), 1 / 3))  # other heads are not uniform


def test_heads_never_keeps_part_of_a_head():
    space = MaskSpace(3, 4, 8, 40, 32)
    method = Heads.from_options({"head_share": "0.5"})
    generator = torch.Generator().manual_seed(3)
    masks = UnitMasks.full(space)
    for density in (0.9, 0.7, 0.5, 0.3, 0.1):
        method.ema.update({"heads": torch.rand(3, 4, generator=generator),
                           "ffn": torch.rand(3, 40, generator=generator)})
        state = TrainState(step=1, total_steps=1, model=None, space=space, masks=masks)
        new = method.masks_for(state, density)
        assert new.is_subset_of(masks)
        for mask in (new.qk, new.vo):
            per_head = mask.sum(-1)
            assert torch.all((per_head == 0) | (per_head == space.head_dim))
        assert torch.equal(new.qk, new.vo)
        one_head = space.head_dim * (space.unit_costs["qk"] + space.unit_costs["vo"]) / space.total_cost()
        assert abs(new.density(space) - density) <= one_head
        masks = new
    assert masks.heads_kept() < 12


def test_heads_head_share_splits_the_pruned_cost():
    space = MaskSpace(2, 4, 8, 64, 32)
    state = TrainState(step=1, total_steps=1, model=None, space=space, masks=UnitMasks.full(space))
    low = Heads.from_options({"head_share": "0.1"})
    high = Heads.from_options({"head_share": "0.9"})
    for method in (low, high):
        method.ema.update({"heads": torch.rand(2, 4), "ffn": torch.rand(2, 64)})
    assert low.masks_for(state, 0.6).heads_kept() > high.masks_for(state, 0.6).heads_kept()
    assert [v["head_share"] for v in Heads.from_options({"head_share": "auto"}).variants()] == \
        ["0.2", "proportional", "0.5", "0.7"]
