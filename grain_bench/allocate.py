"""Budgets into kept units, in one place: every score-and-cut method hands its scores, the run's cost model
(``grain_bench.costs``) and the scheduled budget (a fraction of the dense model's cost) to ``allocate``, or, for
whole heads, ``allocate_heads``; methods with an allocation of their own meet a cost budget through ``meet_cost``.

The structural rules every method shares: masks only shrink (a pruned unit never returns); a head's query units go
with its value units (a head without value units loses its query units); units are pruned in aligned blocks of
``Granularity`` within a head (query and value units) and within a layer's FFN, so compact widths are multiples of
the block size.

Under a cost without fixed terms (the parameter cost, whose fraction is the density tables show) the rule is GRAIN's
reference rule (airaria/GRAIN ``FineISPruner``): one ascending sort of all units (blocks) by score, prune the longest
prefix whose cost stays within 1 - budget, couple, and never overshoot the target by more than one head's query
units. Under a cost with fixed terms (a measured latency model) the best-scoring units are kept while the predicted
cost fits the budget, each paying its marginal cost: the first unit kept in a head pays the head's overhead, the
first in an empty block the block's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from grain_bench.costs import CostModel, parameter_cost
from grain_bench.errors import UsageError
from grain_bench.masks import KINDS, MaskSpace, UnitMasks, UnitTensors


@dataclass(frozen=True)
class Granularity:
    """How many units are pruned together: query and value units in aligned blocks of ``units`` within a head, FFN
    neurons in blocks of ``ffn`` within a layer (1, 1: unit by unit, GRAIN's reference)."""

    units: int = 1
    ffn: int = 1

    @property
    def trivial(self) -> bool:
        """True for unit-by-unit pruning."""
        return self.units == 1 and self.ffn == 1

    def block(self, kind: str) -> int:
        """The block size of a unit kind."""
        return self.ffn if kind == "ffn" else self.units

    def check(self, space: MaskSpace, what: str = "granularity") -> None:
        """``UsageError`` unless the blocks tile the head width and the FFN width of ``space``."""
        for name, size, width in (("granularity", self.units, space.head_dim),
                                  ("ffn_granularity", self.ffn, space.ffn_dim)):
            if size < 1 or width % size:
                raise UsageError(f"{what}: {name}={size} must be a whole number >= 1 that divides the width it "
                                 f"blocks ({width}: {'the head size' if name == 'granularity' else 'the FFN size'})")


@dataclass
class _Items:
    """The prunable items (units, or blocks of them) of one mask space, flat in ``UnitTensors.flat`` order."""

    of_unit: torch.Tensor  # item index of every unit
    count: int
    kind: list[str]  # per item
    position: list[tuple[int, int]]  # per item: (layer, head) for qk/vo, (layer, -1) for ffn
    size: list[int]  # units per item

    @classmethod
    def of(cls, space: MaskSpace, granularity: Granularity) -> _Items:
        """Items of ``space``: each kind's units in order, in blocks of ``granularity`` along their last axis (a head's
        units, a layer's neurons)."""
        parts, kinds, positions, sizes, offset = [], [], [], [], 0
        for kind in KINDS:
            shape, block = space.shapes()[kind], granularity.block(kind)
            width, rows = shape[-1], int(torch.tensor(shape[:-1]).prod())
            per_row = width // block
            row = torch.arange(rows).repeat_interleave(width)
            column = torch.arange(width).repeat(rows)
            parts.append(offset + row * per_row + column.div(block, rounding_mode="floor"))
            for index in range(rows * per_row):
                kinds.append(kind)
                positions.append(divmod(index // per_row, space.num_heads) if kind != "ffn" else (index // per_row, -1))
                sizes.append(block)
            offset += rows * per_row
        return cls(torch.cat(parts), offset, kinds, positions, sizes)

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """Per-item sums of per-unit ``values`` (float64)."""
        return torch.zeros(self.count, dtype=torch.float64).index_add_(0, self.of_unit, values.double())


def allocate(scores: UnitTensors, masks: UnitMasks, space: MaskSpace, budget: float, cost: CostModel | None = None,
             granularity: Granularity | None = None) -> UnitMasks:
    """The units to keep: at most ``budget`` (a fraction of the dense model's cost under ``cost``, by default the
    parameter cost: the density) of the best-scored units of ``masks``, in blocks of ``granularity``."""
    cost = cost or parameter_cost(space)
    granularity = granularity or Granularity()
    if cost.has_fixed_costs:
        return _keep_within(scores, masks, space, budget, cost, _Items.of(space, granularity))
    if granularity.trivial:  # GRAIN's reference: the items are the units themselves
        items = _Items(torch.arange(scores.flat().numel()), scores.flat().numel(), [], [], [])
        return _prune_prefix(scores, masks, space, budget, cost, items)
    return _prune_prefix(scores, masks, space, budget, cost, _Items.of(space, granularity))


def _unit_costs(cost: CostModel, space: MaskSpace) -> torch.Tensor:
    """Every unit's cost in ``UnitTensors.flat`` order, as a fraction of the dense model's (a cost without fixed
    terms: the parameter cost gives ``MaskSpace.cost_vector``)."""
    if cost.key == parameter_cost(space).key:
        return space.cost_vector() / space.total_cost()
    per_kind = {"qk": cost.coefficients.get("qk_units", 0.0), "vo": cost.coefficients.get("vo_units", 0.0),
                "ffn": cost.coefficients.get("ffn_units", 0.0)}
    vector = torch.cat([torch.full((int(torch.tensor(shape).prod()),), per_kind[kind], dtype=torch.float64)
                        for kind, shape in space.shapes().items()])
    return vector / (cost.dense_cost(space) - cost.coefficients.get("constant", 0.0))


def _prune_prefix(scores, masks, space, budget, cost, items: _Items) -> UnitMasks:
    """GRAIN's reference rule over ``items``: prune the longest lowest-scored prefix within 1 - budget, couple, and
    shorten the prefix when coupling would overshoot the target by more than one head's query units."""
    kept = masks.flat()
    item_kept = items.sum(kept.double()) > 0
    item_scores = items.sum(scores.flat())
    item_scores[~item_kept] = float("-inf")
    item_costs = items.sum(_unit_costs(cost, space))  # already-pruned items count: the prefix starts with them
    order = torch.argsort(item_scores, stable=True)
    cumulative = torch.cumsum(item_costs[order], dim=0)
    # Largest prefix whose cumulative cost stays within 1 - budget, so kept cost >= target (within one item).
    # The tolerance keeps float round-off from sparing a unit when the target is hit exactly.
    limit = torch.tensor([1.0 - budget + 1e-9], dtype=torch.float64)
    n_prune = int(torch.searchsorted(cumulative, limit, side="right").item())
    already = int((~item_kept).sum())
    if n_prune <= already:
        return masks

    def coupled(count: int) -> UnitMasks:
        pruned = torch.zeros(items.count, dtype=torch.bool)
        pruned[order[:count]] = True
        return UnitMasks.from_tensors(UnitTensors.from_flat(space, kept & ~pruned[items.of_unit])).coupled()

    result = coupled(n_prune)
    one_head_of_queries = space.head_dim * space.unit_costs["qk"] / space.total_cost()
    if result.density(space) >= budget - one_head_of_queries:
        return result
    return _closest_coupled(coupled, already, n_prune, space, budget) or masks


def _closest_coupled(coupled, already: int, n_prune: int, space: MaskSpace, density: float) -> UnitMasks | None:
    """Of the prefixes between ``already`` and ``n_prune`` items (``coupled(count)``: their masks, coupled), the
    coupled masks closest to ``density`` around it, by bisection; None when no prefix longer than ``already`` keeps
    the target."""
    low, high = already, n_prune  # coupled(low) keeps >= density; coupled(high) does not
    while high - low > 1:
        middle = (low + high) // 2
        if coupled(middle).density(space) >= density - 1e-12:
            low = middle
        else:
            high = middle
    if low <= already:
        return None
    # of the two prefixes around the target, keep the one whose coupled density is closer to it
    above, below = coupled(low), coupled(high)
    return below if density - below.density(space) < above.density(space) - density else above


class _Ledger:
    """What the units kept so far cost under a cost model with fixed terms, and what one more item would add."""

    def __init__(self, space: MaskSpace, cost: CostModel):
        self.c = {name: cost.coefficients.get(name, 0.0) for name in
                  ("attention_blocks", "heads", "query_heads", "qk_units", "vo_units", "ffn_blocks", "ffn_units")}
        self.spent = cost.coefficients.get("constant", 0.0)
        self.qk = [[0] * space.num_heads for _ in range(space.num_layers)]
        self.vo = [[0] * space.num_heads for _ in range(space.num_layers)]
        self.ffn = [0] * space.num_layers

    def marginal(self, kind: str, layer: int, head: int, size: int) -> float:
        """The cost ``size`` more units of ``kind`` at (``layer``, ``head``) add, fixed costs included."""
        c = self.c
        if kind == "ffn":
            return c["ffn_units"] * size + (c["ffn_blocks"] if not self.ffn[layer] else 0.0)
        if kind == "qk":
            return c["qk_units"] * size + (c["query_heads"] if not self.qk[layer][head] else 0.0)
        opens_block = not any(self.vo[layer])
        return (c["vo_units"] * size + (c["heads"] if not self.vo[layer][head] else 0.0)
                + (c["attention_blocks"] if opens_block else 0.0))

    def add(self, kind: str, layer: int, head: int, size: int) -> None:
        """Count ``size`` units of ``kind`` at (``layer``, ``head``) as kept."""
        self.spent += self.marginal(kind, layer, head, size)
        if kind == "ffn":
            self.ffn[layer] += size
        else:
            getattr(self, kind)[layer][head] += size


def _keep_within(scores, masks, space, budget, cost: CostModel, items: _Items) -> UnitMasks:
    """Keep the best-scored items of ``masks`` while the predicted cost fits ``budget`` of the dense model's, each
    paying its marginal cost; a head's query units wait until the head has a value unit."""
    kept = masks.flat()
    item_kept = items.sum(kept.double()) >= torch.tensor(items.size, dtype=torch.float64)  # whole blocks only
    item_scores = items.sum(scores.flat())
    limit = budget * cost.dense_cost(space) * (1 + 1e-9)
    ledger, keep = _Ledger(space, cost), torch.zeros(items.count, dtype=torch.bool)
    waiting: dict[tuple[int, int], list[int]] = {}
    for index in torch.argsort(item_scores, descending=True, stable=True).tolist():
        if not item_kept[index]:
            continue
        kind, (layer, head), size = items.kind[index], items.position[index], items.size[index]
        if kind == "qk" and not ledger.vo[layer][head]:
            waiting.setdefault((layer, head), []).append(index)
            continue
        if ledger.spent + ledger.marginal(kind, layer, head, size) > limit:
            continue
        ledger.add(kind, layer, head, size)
        keep[index] = True
        if kind == "vo":
            for queued in waiting.pop((layer, head), []):  # better-scored query units of a head that opened now
                if ledger.spent + ledger.marginal("qk", layer, head, items.size[queued]) <= limit:
                    ledger.add("qk", layer, head, items.size[queued])
                    keep[queued] = True
    return UnitMasks.from_tensors(UnitTensors.from_flat(space, kept & keep[items.of_unit])).coupled()


def prune_to_density(scores: UnitTensors, masks: UnitMasks, space: MaskSpace, density: float) -> UnitMasks:
    """Global ranking to ``density`` of the parameter cost, as ``FineISPruner`` ranks (airaria/GRAIN,
    ``scripts/pruners_and_distiller/pruners.py``): ``allocate`` with its defaults, the short form for method plugins
    (every built-in calls ``allocate``)."""
    return allocate(scores, masks, space, density)


def allocate_heads(head_scores: torch.Tensor, ffn_scores: torch.Tensor, masks: UnitMasks, space: MaskSpace,
                   density: float, head_share: float, ffn_granularity: int = 1) -> UnitMasks:
    """Whole heads and FFN neurons (or blocks of ``ffn_granularity`` neurons) to ``density`` of the parameter cost,
    each ranked on its own (their scores are not comparable): ``head_share`` of the pruned cost comes from attention,
    never below what attention has pruned already, nor above what the FFN's pruned neurons leave; whole heads rarely
    fit their budget exactly, so the FFN takes the rest."""
    costs = space.unit_costs
    head_cost = space.head_dim * (costs["qk"] + costs["vo"])
    attention_total = space.num_layers * space.num_heads * head_cost
    ffn_total = space.num_layers * space.ffn_dim * costs["ffn"]
    budget = (1.0 - density) * space.total_cost()
    head_alive, ffn_alive = masks.vo.any(-1).reshape(-1), masks.ffn.reshape(-1)
    attention_budget = min(head_share * budget, attention_total)
    attention_budget = max(attention_budget, budget - ffn_total, int((~head_alive).sum()) * head_cost)
    attention_budget = min(attention_budget, budget - int((~ffn_alive).sum()) * costs["ffn"])
    head_scores = head_scores.reshape(-1).double().clone()
    head_scores[~head_alive] = float("-inf")
    pruned_heads = prefix_within(head_scores, torch.full_like(head_scores, float(head_cost)), attention_budget)
    ffn_budget = min(budget - pruned_heads.numel() * head_cost, ffn_total)
    blocks = ffn_alive.reshape(-1, ffn_granularity).all(-1)
    block_scores = ffn_scores.reshape(-1, ffn_granularity).double().sum(-1)
    block_scores[~blocks] = float("-inf")
    pruned_blocks = prefix_within(block_scores, torch.full_like(block_scores, float(costs["ffn"] * ffn_granularity)),
                                  ffn_budget)
    keep_head, keep_block = head_alive.clone(), blocks.clone()
    keep_head[pruned_heads], keep_block[pruned_blocks] = False, False
    keep_ffn = ffn_alive & keep_block.repeat_interleave(ffn_granularity)
    keep_head = keep_head.reshape(space.num_layers, space.num_heads, 1)
    return UnitMasks(masks.qk & keep_head, masks.vo & keep_head, keep_ffn.reshape(space.num_layers, space.ffn_dim))


def prefix_within(scores: torch.Tensor, costs: torch.Tensor, budget: float) -> torch.Tensor:
    """Indices of the longest lowest-score prefix whose cost stays within ``budget`` (in the costs' units)."""
    order = torch.argsort(scores, stable=True)
    cumulative = torch.cumsum(costs[order], dim=0)
    count = int(torch.searchsorted(cumulative, torch.tensor([budget + 1e-6], dtype=cumulative.dtype), side="right"))
    return order[:count]


def meet_cost(masks_at: Callable[[float], UnitMasks], budget: float, cost: CostModel | None, space: MaskSpace,
              steps: int = 30) -> UnitMasks:
    """For a method with its own allocation by density (``masks_at(density)``): its masks at the largest density
    whose cost under ``cost`` fits ``budget`` (bisection; the density itself under the parameter cost)."""
    if cost is None or cost.key == parameter_cost(space).key:
        return masks_at(budget)
    if cost.fraction(masks_at(1.0), space) <= budget:
        return masks_at(1.0)
    low, high = 0.0, 1.0  # masks_at(high) costs too much; masks_at(low) keeps nothing that can be pruned
    for _ in range(steps):
        middle = (low + high) / 2
        if cost.fraction(masks_at(middle), space) <= budget:
            low = middle
        else:
            high = middle
    return masks_at(low)
