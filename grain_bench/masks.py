"""The unit mask space shared by every method: query units, value units and FFN neurons, with their costs.

Per layer ``l`` and head ``h``: ``qk[l, h, j]`` is query unit ``j`` (row j of that head's W_Q and W_K, with biases),
``vo[l, h, j]`` is value unit ``j`` (row j of W_V with its bias, column j of W_O); per layer: ``ffn[l, k]`` is neuron
``k`` (row k of W_1 with its bias, column k of W_2). Density is kept unit cost / total unit cost, with unit costs
query 2d+2, value 2d+1, FFN 2d+1 (LayerNorms, the O and W_2 biases and embeddings are outside the count).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from grain_bench.shape import LayerShape, ModelShape

KINDS = ("qk", "vo", "ffn")


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
        d = self.hidden
        return {"qk": 2 * d + 2, "vo": 2 * d + 1, "ffn": 2 * d + 1}

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
        """Apply ``fn`` to each tensor."""
        return UnitTensors(fn(self.qk), fn(self.vo), fn(self.ffn))

    def items(self):
        """(kind, tensor) pairs."""
        return (("qk", self.qk), ("vo", self.vo), ("ffn", self.ffn))

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
        return cls(tensors.qk.bool(), tensors.vo.bool(), tensors.ffn.bool())

    def kept_cost(self, space: MaskSpace) -> int:
        """Total cost of kept units."""
        c = space.unit_costs
        return int(self.qk.sum()) * c["qk"] + int(self.vo.sum()) * c["vo"] + int(self.ffn.sum()) * c["ffn"]

    def density(self, space: MaskSpace) -> float:
        """Kept unit cost / total unit cost."""
        return self.kept_cost(space) / space.total_cost()

    def coupled(self) -> UnitMasks:
        """A head with no value units left loses its query units too (as the GRAIN reference code does: airaria/GRAIN,
        ``FineISPruner`` in ``scripts/pruners_and_distiller/pruners.py``)."""
        dead = ~self.vo.any(dim=-1, keepdim=True)
        return UnitMasks(self.qk & ~dead, self.vo.clone(), self.ffn.clone())

    def is_subset_of(self, other: UnitMasks) -> bool:
        """True when every unit kept here is kept in ``other`` (masks only shrink)."""
        return all(bool((mine & ~theirs).sum() == 0) for (_, mine), (_, theirs) in zip(self.items(), other.items()))

    def counts(self) -> dict[str, int]:
        """Kept units of each kind."""
        return {k: int(t.sum()) for k, t in self.items()}

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
        return ModelShape(space.hidden, tuple(layers), space.vocab_size, space.max_positions, space.type_vocab_size,
                          space.head_dim, dict(extra or {}))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of 0/1 lists."""
        return {k: t.to(torch.uint8).tolist() for k, t in self.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UnitMasks:
        """Inverse of ``to_dict``."""
        return cls(*(torch.tensor(data[k], dtype=torch.bool) for k in KINDS))
