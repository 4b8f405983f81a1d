"""The one budget allocator (``grain_bench.allocate``): every score-and-cut method goes through it, the parameter cost
reproduces the rules the methods had before it (GRAIN's reference rule, whole heads with a budget split) at every
pruning step of real training, aligned blocks give aligned widths, and a cost model with fixed terms is met."""

from __future__ import annotations

import pytest
import torch
from helpers import tweets_distillation_setup

from grain_bench import allocate as allocation
from grain_bench.allocate import Granularity, allocate, allocate_heads, meet_cost
from grain_bench.backbones import load_tiny
from grain_bench.costs import CostModel, flops_cost, parameter_cost
from grain_bench.distill import distill, set_seed
from grain_bench.errors import UsageError
from grain_bench.masks import MaskSpace, UnitMasks, UnitTensors
from grain_bench.plugins import get_registries, make_plugin_manager
from grain_bench.recipes import get_recipe

BUILTIN = get_registries(make_plugin_manager(load_entry_points=False)).methods
SCORE_AND_CUT = [name for name in BUILTIN.names()
                 if BUILTIN.get(name).prunes and not BUILTIN.get(name).owns_density
                 and not BUILTIN.get(name).calibrates]


# ---- the rules before the allocator, kept here as the oracle it must reproduce --------------------------------------
def reference_prune(scores: UnitTensors, masks: UnitMasks, space: MaskSpace, density: float) -> UnitMasks:
    """``prune_to_density`` as it was in ``masks.py`` (airaria/GRAIN ``FineISPruner``, with the coupling bisection)."""
    flat_scores = scores.flat().double().clone()
    kept = masks.flat()
    flat_scores[~kept] = float("-inf")
    order = torch.argsort(flat_scores, stable=True)
    cumulative = torch.cumsum((space.cost_vector() / space.total_cost())[order], dim=0)
    n_prune = int(torch.searchsorted(cumulative, torch.tensor([1.0 - density + 1e-9], dtype=torch.float64),
                                     side="right").item())
    already = int((~kept).sum())
    if n_prune <= already:
        return masks

    def coupled(count: int) -> UnitMasks:
        flat = kept.clone()
        flat[order[:count]] = False
        return UnitMasks.from_tensors(UnitTensors.from_flat(space, flat)).coupled()

    result = coupled(n_prune)
    if result.density(space) >= density - space.head_dim * space.unit_costs["qk"] / space.total_cost():
        return result
    low, high = already, n_prune
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if coupled(middle).density(space) >= density - 1e-12 else (low, middle)
    if low <= already:
        return masks
    above, below = coupled(low), coupled(high)
    return below if density - below.density(space) < above.density(space) - density else above


def reference_heads(head_scores, ffn_scores, masks: UnitMasks, space: MaskSpace, density: float,
                    share: float) -> UnitMasks:
    """``heads``' allocation as it was: whole heads and FFN neurons under a budget split."""
    costs = space.unit_costs
    head_cost = space.head_dim * (costs["qk"] + costs["vo"])
    attention_total = space.num_layers * space.num_heads * head_cost
    ffn_total = space.num_layers * space.ffn_dim * costs["ffn"]
    budget = (1.0 - density) * space.total_cost()
    head_alive, ffn_alive = masks.vo.any(-1).reshape(-1), masks.ffn.reshape(-1)
    attention_budget = min(share * budget, attention_total)
    attention_budget = max(attention_budget, budget - ffn_total, int((~head_alive).sum()) * head_cost)
    attention_budget = min(attention_budget, budget - int((~ffn_alive).sum()) * costs["ffn"])

    def prefix(scores, cost, limit):
        order = torch.argsort(scores, stable=True)
        cumulative = torch.cumsum(torch.full_like(scores, float(cost))[order], dim=0)
        return order[:int(torch.searchsorted(cumulative, torch.tensor([limit + 1e-6], dtype=cumulative.dtype),
                                             side="right"))]

    heads = head_scores.reshape(-1).clone()
    heads[~head_alive] = float("-inf")
    pruned_heads = prefix(heads, head_cost, attention_budget)
    neurons = ffn_scores.reshape(-1).clone()
    neurons[~ffn_alive] = float("-inf")
    pruned_ffn = prefix(neurons, costs["ffn"], min(budget - pruned_heads.numel() * head_cost, ffn_total))
    keep_head, keep_ffn = head_alive.clone(), ffn_alive.clone()
    keep_head[pruned_heads], keep_ffn[pruned_ffn] = False, False
    keep_head = keep_head.reshape(space.num_layers, space.num_heads, 1)
    return UnitMasks(masks.qk & keep_head, masks.vo & keep_head, masks.ffn & keep_ffn.reshape(space.num_layers, -1))


# ---- shared set-up: real distillation on the tiny backbone -----------------------------------------------------
@pytest.fixture(scope="module")
def shared():
    """Real distillation on the tiny backbone (``helpers.tweets_distillation_setup``)."""
    return tweets_distillation_setup()[:3]


def _distil(shared, name: str, options=None, target: float = 0.4, cost_model=None):
    task, teacher, data = shared
    method = BUILTIN.get(name).from_options(options or {}, seed=1)
    set_seed(1)
    student, _ = load_tiny("sequence", 2)
    return method, distill(method, task, teacher, student, data, get_recipe("test", {"max_steps": 20}), target,
                           seed=1, progress=False, cost_model=cost_model)


class Calls:
    """Every call of the allocator's entry points while it is installed (each call goes through to the real one)."""

    def __init__(self, monkeypatch):
        self.allocate: list[tuple] = []
        self.heads: list[tuple] = []
        real_allocate, real_heads = allocation.allocate, allocation.allocate_heads

        def allocate_spy(scores, masks, space, budget, cost=None, granularity=None):
            result = real_allocate(scores, masks, space, budget, cost, granularity)
            self.allocate.append((scores.clone(), masks.clone(), space, budget, cost, granularity, result))
            return result

        def heads_spy(head_scores, ffn_scores, masks, space, density, share, ffn_granularity=1):
            result = real_heads(head_scores, ffn_scores, masks, space, density, share, ffn_granularity)
            self.heads.append((head_scores.clone(), ffn_scores.clone(), masks.clone(), space, density, share, result))
            return result

        monkeypatch.setattr(allocation, "allocate", allocate_spy)
        monkeypatch.setattr(allocation, "allocate_heads", heads_spy)


def _same(a: UnitMasks, b: UnitMasks) -> bool:
    return all(torch.equal(x, y) for (_, x), (_, y) in zip(a.items(), b.items()))


def test_the_score_and_cut_methods_are_every_pruning_method_but_the_learned_masks():
    assert {"grain", "heads", "movement", "magnitude", "random", "ffn-only"} <= set(SCORE_AND_CUT)
    for name in SCORE_AND_CUT:
        assert BUILTIN.get(name).prunes_to_cost, name  # they take a target speedup
    assert not BUILTIN.get("cofi").prunes_to_cost  # CoFi reaches its density through its Lagrangian


@pytest.mark.parametrize("name", SCORE_AND_CUT)
def test_every_score_and_cut_method_goes_through_the_allocator_and_keeps_its_masks(name, shared, monkeypatch):
    calls = Calls(monkeypatch)
    _, result = _distil(shared, name)
    assert calls.allocate or calls.heads, f"{name} never called grain_bench.allocate"
    last = (calls.allocate + calls.heads)[-1][-1]
    assert _same(last, result.masks)  # the final masks are the allocator's
    # with the parameter cost (the default) every step's masks are the rule the method had before the allocator
    for scores, masks, space, budget, cost, granularity, got in calls.allocate:
        assert cost is None and (granularity is None or granularity.trivial)
        assert _same(got, reference_prune(scores, masks, space, budget)), (name, budget)
    for head_scores, ffn_scores, masks, space, density, share, got in calls.heads:
        assert _same(got, reference_heads(head_scores.double(), ffn_scores.double(), masks, space, density, share))


def test_the_parameter_cost_reproduces_the_reference_rule_on_random_scores():
    space = MaskSpace(num_layers=3, num_heads=4, head_dim=8, ffn_dim=32, hidden=32)
    generator = torch.Generator().manual_seed(0)
    masks = UnitMasks.full(space)
    for density in (0.9, 0.7, 0.5, 0.3, 0.2, 0.1, 0.05):
        scores = UnitTensors.from_flat(space, torch.rand(masks.flat().numel(), generator=generator))
        expected = reference_prune(scores, masks, space, density)
        got = allocate(scores, masks, space, density)
        assert _same(got, expected), density
        assert _same(got, allocate(scores, masks, space, density, parameter_cost(space)))
        masks = got  # the next budget starts from these masks, as the schedule does


@pytest.mark.parametrize("blocks", [Granularity(4, 8), Granularity(2, 16), Granularity(8, 1)])
def test_granularity_gives_aligned_widths(blocks):
    space = MaskSpace(num_layers=3, num_heads=4, head_dim=8, ffn_dim=32, hidden=32)
    generator = torch.Generator().manual_seed(1)
    masks = UnitMasks.full(space)
    for density in (0.8, 0.5, 0.3, 0.15):
        scores = UnitTensors.from_flat(space, torch.rand(masks.flat().numel(), generator=generator))
        got = allocate(scores, masks, space, density, granularity=blocks)
        assert got.is_subset_of(masks)
        for kind in ("qk", "vo"):
            widths = getattr(got, kind).reshape(-1, space.head_dim // blocks.units, blocks.units)
            assert (widths.all(-1) | ~widths.any(-1)).all(), (kind, density)  # whole blocks, kept or pruned
        neurons = got.ffn.reshape(space.num_layers, -1, blocks.ffn)
        assert (neurons.all(-1) | ~neurons.any(-1)).all()
        assert abs(got.density(space) - density) < 0.05 + 2 * blocks.units * space.unit_costs["qk"] / \
            space.total_cost() * space.num_heads
        masks = got


def test_granularity_through_a_method_makes_compact_widths_multiples(shared):
    method, result = _distil(shared, "grain", {"granularity": 4})
    shape = result.masks.model_shape(result.space)
    for layer in shape.layers:
        assert all(qk % 4 == 0 and vo % 4 == 0 for qk, vo in zip(layer.qk_dims, layer.vo_dims))
        assert layer.ffn_dim % 4 == 0
    assert result.masks.density(result.space) < 0.5


def _latency_model(space) -> CostModel:
    """A latency model shaped like a CPU's (per block and per head overheads beside per-unit costs)."""
    return CostModel("synthetic", "ms per batch", {"constant": 2.0, "attention_blocks": 1.5, "heads": 0.4,
                                                   "query_heads": 0.3, "qk_units": 0.01, "vo_units": 0.012,
                                                   "ffn_blocks": 0.5, "ffn_units": 0.004},
                     {"num_layers": space.num_layers, "num_heads": space.num_heads, "head_dim": space.head_dim,
                      "ffn_dim": space.ffn_dim, "hidden": space.hidden})


@pytest.mark.parametrize("granularity", [Granularity(), Granularity(4, 8)])
def test_a_cost_with_fixed_terms_is_met_by_paying_marginal_costs(granularity):
    space = MaskSpace(num_layers=3, num_heads=4, head_dim=8, ffn_dim=32, hidden=32)
    cost = _latency_model(space)
    generator = torch.Generator().manual_seed(2)
    masks = UnitMasks.full(space)
    constant = cost.coefficients["constant"] / cost.dense_cost(space)
    for budget in (0.8, 0.6, 0.4, 0.3):
        scores = UnitTensors.from_flat(space, torch.rand(masks.flat().numel(), generator=generator))
        got = allocate(scores, masks, space, budget, cost, granularity)
        assert got.is_subset_of(masks)
        assert cost.fraction(got, space) <= budget + 1e-9
        assert cost.fraction(got, space) > max(constant, budget - 0.1)  # greedy keeps what fits
        assert not (got.qk.any(-1) & ~got.vo.any(-1)).any()  # no query units in a head without value units
        masks = got


def test_heads_meet_a_latency_budget_and_the_parameter_cost_is_their_density():
    space = MaskSpace(num_layers=3, num_heads=4, head_dim=8, ffn_dim=32, hidden=32)
    generator = torch.Generator().manual_seed(3)
    heads, ffn = torch.rand(3, 4, generator=generator).double(), torch.rand(3, 32, generator=generator).double()
    full = UnitMasks.full(space)

    def masks_at(density: float) -> UnitMasks:
        return allocate_heads(heads, ffn, full, space, density, 0.5)

    for budget in (0.7, 0.4, 0.2):
        assert _same(meet_cost(masks_at, budget, None, space), masks_at(budget))
        assert _same(meet_cost(masks_at, budget, parameter_cost(space), space), masks_at(budget))
        cost = _latency_model(space)
        got = meet_cost(masks_at, budget, cost, space)
        assert cost.fraction(got, space) <= budget + 1e-9


def test_flops_cost_is_the_flops_every_table_shows():
    space = MaskSpace(num_layers=3, num_heads=4, head_dim=8, ffn_dim=32, hidden=32)
    generator = torch.Generator().manual_seed(4)
    masks = allocate(UnitTensors.from_flat(space, torch.rand(UnitMasks.full(space).flat().numel(),
                                                             generator=generator)),
                     UnitMasks.full(space), space, 0.3)
    for seq_len in (16, 64):
        cost = flops_cost(space, seq_len)
        assert cost.cost(masks.model_shape(space)) == masks.model_shape(space).total_flops(seq_len)
        assert cost.has_fixed_costs and not parameter_cost(space).has_fixed_costs


def test_costs_of_masks_that_prune_hidden_dimensions():
    """At a narrower residual stream the parameter cost is the density and the FLOPs cost the table's FLOPs, exactly
    (both are recomputed at the kept width); a measured model scales its unit terms by the width and keeps its fixed
    terms."""
    space = MaskSpace(num_layers=3, num_heads=4, head_dim=8, ffn_dim=32, hidden=32)
    masks = UnitMasks.full(space)
    masks.ffn[:, :20] = False
    masks.hidden = torch.ones(space.hidden, dtype=torch.bool)
    masks.hidden[:12] = False  # 20 of 32 kept
    shape = masks.model_shape(space)
    assert parameter_cost(space).fraction(masks, space) == pytest.approx(masks.density(space), rel=1e-12)
    assert flops_cost(space, 16).cost(shape) == shape.total_flops(16)
    measured = CostModel("latency", "ms", {"constant": 1.0, "heads": 0.5, "qk_units": 0.01, "ffn_units": 0.02},
                         {"num_layers": 3, "num_heads": 4, "head_dim": 8, "ffn_dim": 32, "hidden": 32})
    assert measured.at_hidden(32) == measured.coefficients
    assert measured.at_hidden(20) == pytest.approx({"constant": 1.0, "heads": 0.5, "qk_units": 0.01 * 20 / 32,
                                                    "ffn_units": 0.02 * 20 / 32})


def test_a_speed_target_through_training_meets_its_predicted_budget(shared):
    _, teacher, data = shared
    space = MaskSpace.from_config(teacher.config)
    cost = _latency_model(space)
    for name in ("grain", "heads", "movement"):
        method, result = _distil(shared, name, target=1 / 3, cost_model=cost)
        assert cost.speedup(result.masks, result.space) >= 3 - 1e-6, name
        assert cost.speedup(result.masks, result.space) < 3.6, name  # not pruned far past the target


def test_bad_granularity_is_refused_with_what_divides(shared):
    _, teacher, _ = shared
    space = MaskSpace.from_config(teacher.config)  # heads of 8, FFN of 64
    with pytest.raises(UsageError, match="granularity=3 must be a whole number >= 1 that divides"):
        BUILTIN.get("grain").check_backbone({"granularity": 3}, space)
    with pytest.raises(UsageError, match="ffn_granularity=48"):
        BUILTIN.get("heads").check_backbone({"ffn_granularity": 48}, space)
    BUILTIN.get("movement").check_backbone({"granularity": 8, "ffn_granularity": 16}, space)  # fine
    with pytest.raises(UsageError, match="granularity=0 must be >= 1"):
        BUILTIN.get("grain").from_options({"granularity": 0})
