"""Every registered method through one contract on the tiny backbone: shapes, density after the schedule, forward."""

from __future__ import annotations

import pytest
import torch
from helpers import tweets_distillation_setup

from grain_bench.backbones import load_tiny
from grain_bench.distill import distill, set_seed
from grain_bench.masks import MaskSpace, UnitMasks
from grain_bench.plugins import get_registries, make_plugin_manager
from grain_bench.recipes import get_recipe

TARGET = 0.5
_BUILTIN = get_registries(make_plugin_manager(load_entry_points=False)).methods
#: the methods the trainer runs (calibration-only ones, kwon, have their contract in test_kwon.py)
METHODS = [name for name in _BUILTIN.names() if not _BUILTIN.get(name).calibrates]


@pytest.fixture(scope="module")
def shared():
    """Real distillation on the tiny backbone (``helpers.tweets_distillation_setup``)."""
    return tweets_distillation_setup()


def granularity(space: MaskSpace) -> float:
    """The coarsest step a method may be off by: one head's query units (coupling) or one whole head (heads)."""
    costs = space.unit_costs
    return space.head_dim * (costs["qk"] + costs["vo"]) / space.total_cost()


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("name", METHODS)
def test_method_contract(name, precision, regs, shared):
    """Also under fp16 autocast with its loss scaler (the method's own optimizers, gates and losses included)."""
    task, teacher, data, tokenizer = shared
    method = regs.methods.get(name).from_options({}, seed=1)
    set_seed(1)
    student, _ = load_tiny("sequence", 2)
    recipe = get_recipe("test", {"max_steps": 20, "precision": precision})
    result = distill(method, task, teacher, student, data, recipe, TARGET, seed=1, progress=False)
    space = result.space
    masks = result.masks
    assert isinstance(masks, UnitMasks)
    assert masks.qk.shape == masks.vo.shape == (space.num_layers, space.num_heads, space.head_dim)
    assert masks.ffn.shape == (space.num_layers, space.ffn_dim)
    assert masks.qk.dtype == torch.bool
    density = masks.density(space)
    if not method.prunes:
        assert density == 1.0
    elif name == "ffn-only":
        attention_share = 1 - space.num_layers * space.ffn_dim * space.unit_costs["ffn"] / space.total_cost()
        assert abs(density - max(TARGET, attention_share)) <= 0.01
        assert masks.qk.all() and masks.vo.all()
    else:
        # within 1% of the target, or of the model's granularity where one head is coarser than that (tiny model)
        assert abs(density - TARGET) <= max(0.01, granularity(space)), density
    batch = data.collate([data.train.features[i] for i in range(4)])
    with torch.no_grad():
        logits = result.model(**task.model_inputs(batch)).logits
    assert logits.shape == (4, 2) and torch.isfinite(logits).all()
    assert any(r["step"] == 20 for r in result.history)
    # the expected density at the freeze (the record's density.expected_at_freeze): learned L0 gates only
    if name == "cofi":
        assert result.expected_at_freeze is not None and 0.0 < result.expected_at_freeze <= 1.0
    else:
        assert result.expected_at_freeze is None
