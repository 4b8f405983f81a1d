"""The unit mask space shared by every method: query units, value units and FFN neurons, with their costs, and
optionally hidden dimensions.

Per layer ``l`` and head ``h``: ``qk[l, h, j]`` is query unit ``j`` (row j of that head's W_Q and W_K, with biases),
``vo[l, h, j]`` is value unit ``j`` (row j of W_V with its bias, column j of W_O); per layer: ``ffn[l, k]`` is neuron
``k`` (row k of W_1 with its bias, column k of W_2). Density is kept unit cost / total unit cost, with unit costs
query 2d+2, value 2d+1, FFN 2d+1 (LayerNorms, the O and W_2 biases and embeddings are outside the count).

**Hidden dimensions** (``hidden[i]``, one per dimension of the residual stream, shared by every layer) are the fourth
unit kind, which only some methods prune (CoFi's ``hidden_z``). A method that does not prune them leaves ``hidden``
None: its masks, their files and every number computed from them are what they were before the kind existed. A
pruned dimension leaves the embeddings, every LayerNorm, the input of W_Q, W_K, W_V and W_1, the output of W_O and
W_2 (with their biases) and the input of the task head (the pooler's, or the token head's). It is counted through the
units it narrows: with ``d'`` dimensions kept a query unit costs 2d'+2, a value unit and a neuron 2d'+1, so the
density stays kept cost / the dense total cost and the embeddings remain outside the count, as in CoFi's expected size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from grain_bench.shape import LayerShape, ModelShape

KINDS = ("qk", "vo", "ffn")
#: the optional fourth kind (one unit per hidden dimension, shared by every layer)
HIDDEN = "hidden"


@dataclass(frozen=True)
class MaskSpace:
    """Sizes of the mask space of one encoder."""

    num_layers: int
    num_heads: int
    head_dim: int
    ffn_dim: int
    hidden: int
    vocab_size: int = 0
    max_positions: int = 0
    type_vocab_size: int = 0

    @classmethod
    def from_config(cls, config) -> MaskSpace:
        """Mask space of a transformers BERT-family config."""
        heads = config.num_attention_heads
        return cls(config.num_hidden_layers, heads, config.hidden_size // heads, config.intermediate_size,
                   config.hidden_size, getattr(config, "vocab_size", 0), getattr(config, "max_position_embeddings", 0),
                   getattr(config, "type_vocab_size", 0))

    @property
    def unit_costs(self) -> dict[str, int]:
        """Parameters removed with one unit of each kind."""
        return self.unit_costs_at(self.hidden)

    @staticmethod
    def unit_costs_at(hidden: int | float) -> dict[str, Any]:
        """Parameters of one unit of each kind when ``hidden`` dimensions of the residual stream are kept (a float:
        an expected width)."""
        return {"qk": 2 * hidden + 2, "vo": 2 * hidden + 1, "ffn": 2 * hidden + 1}

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Tensor shape of each kind."""
        return {"qk": (self.num_layers, self.num_heads, self.head_dim),
                "vo": (self.num_layers, self.num_heads, self.head_dim),
                "ffn": (self.num_layers, self.ffn_dim)}

    def total_cost(self) -> int:
        """Cost of all units."""
        costs = self.unit_costs
        return sum(costs[k] * _numel(s) for k, s in self.shapes().items())

    def cost_vector(self) -> torch.Tensor:
        """Cost of every unit, flattened in ``UnitTensors.flat`` order (qk, vo, ffn)."""
        costs = self.unit_costs
        return torch.cat([torch.full((_numel(s),), float(costs[k]), dtype=torch.float64)
                          for k, s in self.shapes().items()])

    def dense_shape(self) -> ModelShape:
        """The shape of the dense encoder (every unit kept)."""
        return UnitMasks.full(self).model_shape(self)

    def to_dict(self) -> dict[str, int]:
        """JSON-able dict."""
        return dict(self.__dict__)


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


@dataclass
class UnitTensors:
    """One tensor per unit kind (scores, gradients or masks) over a ``MaskSpace``."""

    qk: torch.Tensor
    vo: torch.Tensor
    ffn: torch.Tensor
    #: one value per hidden dimension ([hidden]); None where the hidden dimensions are not pruned (every one kept)
    hidden: torch.Tensor | None = None

    @classmethod
    def filled(cls, space: MaskSpace, value: float | bool, dtype=torch.float32) -> UnitTensors:
        """Tensors of the space's shapes filled with ``value``."""
        s = space.shapes()
        return cls(*(torch.full(s[k], value, dtype=dtype) for k in KINDS))

    @classmethod
    def from_flat(cls, space: MaskSpace, flat: torch.Tensor) -> UnitTensors:
        """Inverse of ``flat``."""
        parts, start = [], 0
        for kind in KINDS:
            shape = space.shapes()[kind]
            n = _numel(shape)
            parts.append(flat[start:start + n].reshape(shape))
            start += n
        return cls(*parts)

    def flat(self) -> torch.Tensor:
        """All units in one vector: qk, then vo, then ffn."""
        return torch.cat([self.qk.reshape(-1), self.vo.reshape(-1), self.ffn.reshape(-1)])

    def map(self, fn) -> UnitTensors:
        """Apply ``fn`` to each tensor (the hidden one too, when there is one)."""
        return UnitTensors(fn(self.qk), fn(self.vo), fn(self.ffn), None if self.hidden is None else fn(self.hidden))

    def items(self):
        """(kind, tensor) pairs of the three kinds every method has (``hidden`` is apart: see ``kinds``)."""
        return (("qk", self.qk), ("vo", self.vo), ("ffn", self.ffn))

    def kinds(self):
        """(kind, tensor) pairs of every kind present: ``items`` plus ``hidden`` when it is pruned."""
        return self.items() + (() if self.hidden is None else ((HIDDEN, self.hidden),))

    def clone(self) -> UnitTensors:
        """Deep copy."""
        return self.map(torch.clone)


class UnitMasks(UnitTensors):
    """Boolean keep-masks over the mask space (True = kept)."""

    @classmethod
    def full(cls, space: MaskSpace) -> UnitMasks:
        """Everything kept."""
        s = space.shapes()
        return cls(*(torch.ones(s[k], dtype=torch.bool) for k in KINDS))

    @classmethod
    def from_tensors(cls, tensors: UnitTensors) -> UnitMasks:
        """Masks from any tensors (non-zero = kept)."""
        return cls(tensors.qk.bool(), tensors.vo.bool(), tensors.ffn.bool(),
                   None if tensors.hidden is None else tensors.hidden.bool())

    def hidden_kept(self, space: MaskSpace) -> int:
        """Hidden dimensions kept (all of them when ``hidden`` is not pruned)."""
        return space.hidden if self.hidden is None else int(self.hidden.sum())

    def prunes_hidden(self) -> bool:
        """Whether these masks remove hidden dimensions (False for masks without the kind and for an all-kept one)."""
        return self.hidden is not None and not bool(self.hidden.all())

    def kept_cost(self, space: MaskSpace) -> int:
        """Total cost of kept units (each at the kept hidden width)."""
        c = space.unit_costs_at(self.hidden_kept(space))
        return int(self.qk.sum()) * c["qk"] + int(self.vo.sum()) * c["vo"] + int(self.ffn.sum()) * c["ffn"]

    def density(self, space: MaskSpace) -> float:
        """Kept unit cost / total unit cost."""
        return self.kept_cost(space) / space.total_cost()

    def coupled(self) -> UnitMasks:
        """A head with no value units left loses its query units too (as the GRAIN reference code does: airaria/GRAIN,
        ``FineISPruner`` in ``scripts/pruners_and_distiller/pruners.py``)."""
        dead = ~self.vo.any(dim=-1, keepdim=True)
        return UnitMasks(self.qk & ~dead, self.vo.clone(), self.ffn.clone(),
                         None if self.hidden is None else self.hidden.clone())

    def is_subset_of(self, other: UnitMasks) -> bool:
        """True when every unit kept here is kept in ``other`` (masks only shrink; no ``hidden`` = all kept)."""
        if other.hidden is not None:
            mine = torch.ones_like(other.hidden) if self.hidden is None else self.hidden
            if bool((mine & ~other.hidden).any()):
                return False
        return all(bool((mine & ~theirs).sum() == 0) for (_, mine), (_, theirs) in zip(self.items(), other.items()))

    def counts(self) -> dict[str, int]:
        """Kept units of each kind (``hidden`` too when the masks have the kind)."""
        return {k: int(t.sum()) for k, t in self.kinds()}

    def heads_kept(self) -> int:
        """Number of heads with at least one value unit."""
        return int(self.vo.any(dim=-1).sum())

    def kept_head_indices(self, layer: int) -> list[int]:
        """The heads of ``layer`` that the compact model keeps, in order: those with at least one value unit (a head
        without value units contributes nothing, its query units included)."""
        return self.vo[layer].any(dim=-1).nonzero().flatten().tolist()

    def model_shape(self, space: MaskSpace, extra: dict[str, Any] | None = None) -> ModelShape:
        """The shape of the compact model these masks produce (heads without value units are dropped)."""
        layers = []
        for layer in range(space.num_layers):
            heads = tuple((int(self.qk[layer, head].sum()), int(self.vo[layer, head].sum()))
                          for head in self.kept_head_indices(layer))
            layers.append(LayerShape(heads, int(self.ffn[layer].sum())))
        return ModelShape(self.hidden_kept(space), tuple(layers), space.vocab_size, space.max_positions,
                          space.type_vocab_size, space.head_dim, dict(extra or {}))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of 0/1 lists (a ``hidden`` list only when the masks have the kind)."""
        return {k: t.to(torch.uint8).tolist() for k, t in self.kinds()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UnitMasks:
        """Inverse of ``to_dict``."""
        qk, vo, ffn = (torch.tensor(data[k], dtype=torch.bool) for k in KINDS)
        hidden = data.get(HIDDEN)
        return cls(qk, vo, ffn, None if hidden is None else torch.tensor(hidden, dtype=torch.bool))
