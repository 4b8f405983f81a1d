"""The unit mask space: costs, density, global ranking, coupling, monotone masks, the schedule."""

from __future__ import annotations

import pytest
import torch

from grain_bench.allocate import prune_to_density
from grain_bench.masks import MaskSpace, UnitMasks, UnitTensors
from grain_bench.schedule import CubicSchedule

SPACE = MaskSpace(num_layers=2, num_heads=3, head_dim=4, ffn_dim=10, hidden=12)


def test_unit_costs_and_total():
    d = 12
    assert SPACE.unit_costs == {"qk": 2 * d + 2, "vo": 2 * d + 1, "ffn": 2 * d + 1}
    assert SPACE.total_cost() == 2 * (3 * 4 * (2 * d + 2) + 3 * 4 * (2 * d + 1) + 10 * (2 * d + 1))
    assert UnitMasks.full(SPACE).density(SPACE) == 1.0


def test_density_counts_kept_costs():
    masks = UnitMasks.full(SPACE)
    masks.ffn[0, :5] = False
    masks.qk[1, 2, :] = False
    expected = 1 - (5 * 25 + 4 * 26) / SPACE.total_cost()
    assert masks.density(SPACE) == pytest.approx(expected)


@pytest.mark.parametrize("target", [0.9, 0.5, 0.2, 0.05])
def test_global_ranking_hits_target_within_one_unit(target):
    scores = UnitTensors.from_flat(SPACE, torch.rand(UnitTensors.filled(SPACE, 0).flat().numel(),
                                                      generator=torch.Generator().manual_seed(0)))
    masks = prune_to_density(scores, UnitMasks.full(SPACE), SPACE, target)
    one_unit = max(SPACE.unit_costs.values()) / SPACE.total_cost()
    # coupling may remove the query units of a head that lost all value units: allow that below the target
    assert masks.density(SPACE) <= target + one_unit + 1e-12


def test_ranking_prunes_lowest_scores_first_across_kinds():
    scores = UnitTensors.filled(SPACE, 1.0)
    scores.ffn[1, 3] = 0.1  # the single cheapest-to-lose unit
    scores.vo[0, 1, 2] = 0.2
    cost = SPACE.unit_costs["ffn"] + SPACE.unit_costs["vo"]
    masks = prune_to_density(scores, UnitMasks.full(SPACE), SPACE, 1 - cost / SPACE.total_cost())
    assert masks.counts() == {"qk": 24, "vo": 23, "ffn": 19}
    assert not masks.ffn[1, 3] and not masks.vo[0, 1, 2]


def test_masks_only_shrink_and_pruned_units_never_return():
    generator = torch.Generator().manual_seed(1)
    masks = UnitMasks.full(SPACE)
    for target in (0.8, 0.6, 0.4, 0.2):
        count = UnitTensors.filled(SPACE, 0).flat().numel()
        scores = UnitTensors.from_flat(SPACE, torch.rand(count, generator=generator))
        new = prune_to_density(scores, masks, SPACE, target)
        assert new.is_subset_of(masks)
        masks = new
    # asking for a higher density than already reached changes nothing
    assert prune_to_density(UnitTensors.filled(SPACE, 5.0), masks, SPACE, 0.9) is masks


def test_coupling_drops_query_units_of_heads_without_value_units():
    scores = UnitTensors.filled(SPACE, 1.0)
    scores.vo[0, 0, :] = 0.0  # all value units of head (0, 0) go first
    cost = 4 * SPACE.unit_costs["vo"]
    masks = prune_to_density(scores, UnitMasks.full(SPACE), SPACE, 1 - cost / SPACE.total_cost())
    assert not masks.vo[0, 0].any() and not masks.qk[0, 0].any()
    assert masks.qk[0, 1].all()
    # the reverse is allowed: a head with value units but no query units stays
    scores = UnitTensors.filled(SPACE, 1.0)
    scores.qk[1, 2, :] = 0.0
    masks = prune_to_density(scores, UnitMasks.full(SPACE), SPACE, 1 - 4 * SPACE.unit_costs["qk"] / SPACE.total_cost())
    assert not masks.qk[1, 2].any() and masks.vo[1, 2].all()
    assert masks.model_shape(SPACE).layers[1].heads[2] == (0, 4)


def test_model_shape_drops_dead_heads_and_counts_params():
    masks = UnitMasks.full(SPACE)
    masks.vo[0, 0] = False
    masks = masks.coupled()
    shape = masks.model_shape(SPACE)
    assert len(shape.layers[0].heads) == 2 and len(shape.layers[1].heads) == 3
    full = UnitMasks.full(SPACE).model_shape(SPACE)
    removed = 4 * SPACE.unit_costs["qk"] + 4 * SPACE.unit_costs["vo"]
    assert full.encoder_params() - shape.encoder_params() == removed
    assert shape.encoder_flops(16) < full.encoder_flops(16)


def test_masks_round_trip_through_dict():
    masks = UnitMasks.full(SPACE)
    masks.ffn[1, 2:5] = False
    back = UnitMasks.from_dict(masks.to_dict())
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(masks.items(), back.items()))


def test_cubic_schedule_matches_reference_formula():
    schedule = CubicSchedule(total_steps=100, target=0.05, prune_start=0.2, prune_end=0.4)
    assert (schedule.start, schedule.end) == (20, 40)
    assert schedule.density(1) == schedule.density(20) == 1.0
    assert schedule.density(30) == pytest.approx(0.05 + 0.95 * 0.5 ** 3)
    assert schedule.density(40) == schedule.density(100) == 0.05
    densities = [schedule.density(t) for t in range(1, 101)]
    assert all(a >= b for a, b in zip(densities, densities[1:]))
    assert [t for t in range(1, 101) if schedule.is_pruning_step(t)] == list(range(20, 41))
    assert not CubicSchedule(100, 1.0).is_pruning_step(30)


def test_one_shot_schedule_prunes_at_start():
    schedule = CubicSchedule(total_steps=50, target=0.3, prune_start=0.2, prune_end=0.2)
    assert schedule.density(9) == 1.0 and schedule.density(10) == 0.3
    assert [t for t in range(1, 51) if schedule.is_pruning_step(t)] == [10]


def test_coupling_overshoot_is_bounded_when_scores_empty_many_heads():
    scores = UnitTensors.filled(SPACE, 1.0)
    scores.vo[:, :, :] = 0.0  # value units rank first: every head would lose all of them, and its query units too
    masks = prune_to_density(scores, UnitMasks.full(SPACE), SPACE, 0.5)
    one_unit = max(SPACE.unit_costs.values()) / SPACE.total_cost()
    assert 0.5 - 4 * SPACE.unit_costs["qk"] / SPACE.total_cost() <= masks.density(SPACE) <= 0.5 + 4 * one_unit
    assert masks.heads_kept() >= 1


# ---- hidden dimensions (the optional fourth kind) -----------------------------------------------------------------
def test_masks_without_the_hidden_kind_are_what_they_were():
    """A method that does not prune hidden dimensions leaves ``hidden`` None: its masks file has no ``hidden`` key, its
    density and shape are the three kinds' alone, and a file read back is the same masks."""
    masks = UnitMasks.full(SPACE)
    masks.ffn[0, :5] = False
    assert masks.hidden is None and not masks.prunes_hidden()
    assert set(masks.to_dict()) == {"qk", "vo", "ffn"} and "hidden" not in masks.counts()
    assert masks.model_shape(SPACE).hidden == SPACE.hidden
    back = UnitMasks.from_dict(masks.to_dict())
    assert back.hidden is None and back.density(SPACE) == masks.density(SPACE)


def test_hidden_dimensions_narrow_every_unit_they_feed():
    """With d' of d dimensions kept a query unit costs 2d'+2 and a value unit or neuron 2d'+1; the density stays kept
    cost over the dense total; the compact shape's hidden width is d'; an all-kept hidden mask is the full density."""
    masks = UnitMasks.full(SPACE)
    masks.hidden = torch.ones(SPACE.hidden, dtype=torch.bool)
    assert masks.density(SPACE) == 1.0 and not masks.prunes_hidden()
    masks.hidden[:4] = False  # d' = 8
    masks.ffn[1, :3] = False
    kept = 2 * 3 * 4 * (2 * 8 + 2) + 2 * 3 * 4 * (2 * 8 + 1) + 17 * (2 * 8 + 1)
    assert masks.density(SPACE) == pytest.approx(kept / SPACE.total_cost())
    assert masks.prunes_hidden() and masks.hidden_kept(SPACE) == 8 and masks.counts()["hidden"] == 8
    assert masks.model_shape(SPACE).hidden == 8
    back = UnitMasks.from_dict(masks.to_dict())
    assert torch.equal(back.hidden, masks.hidden) and back.density(SPACE) == masks.density(SPACE)
    assert masks.coupled().hidden is not masks.hidden and torch.equal(masks.coupled().hidden, masks.hidden)


def test_subsets_count_hidden_dimensions():
    """Masks only shrink: dropping a hidden dimension is a subset, bringing one back is not; masks without the kind
    keep every dimension."""
    full, fewer = UnitMasks.full(SPACE), UnitMasks.full(SPACE)
    fewer.hidden = torch.ones(SPACE.hidden, dtype=torch.bool)
    fewer.hidden[0] = False
    assert fewer.is_subset_of(full) and not full.is_subset_of(fewer)
    more = UnitMasks.from_tensors(fewer.clone())
    more.hidden[0], more.hidden[1] = True, False
    assert not more.is_subset_of(fewer) and not fewer.is_subset_of(more)
