"""``ModelShape``: the per-layer widths of a (pruned) encoder; drives parameter counts, FLOPs and table columns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class LayerShape:
    """One encoder layer: per-head (query/key width, value/output width) of the heads kept, and the FFN width."""

    heads: tuple[tuple[int, int], ...]
    ffn_dim: int

    @property
    def qk_dims(self) -> tuple[int, ...]:
        """Query/key width of every kept head."""
        return tuple(h[0] for h in self.heads)

    @property
    def vo_dims(self) -> tuple[int, ...]:
        """Value/output width of every kept head."""
        return tuple(h[1] for h in self.heads)


@dataclass(frozen=True)
class ModelShape:
    """Widths of every layer plus the fixed sizes around them."""

    hidden: int
    layers: tuple[LayerShape, ...]
    vocab_size: int = 0
    max_positions: int = 0
    type_vocab_size: int = 0
    original_head_dim: int = 64
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    # ---- parameters -------------------------------------------------------------------------------------------
    def layer_linear_params(self, layer: LayerShape) -> int:
        """Weights and biases of Q, K, V, O, W1, W2 of one layer (O and W2 biases always kept)."""
        d = self.hidden
        qk = sum(layer.qk_dims)
        vo = sum(layer.vo_dims)
        return 2 * qk * (d + 1) + vo * (d + 1) + vo * d + d + layer.ffn_dim * (d + 1) + layer.ffn_dim * d + d

    def encoder_linear_params(self) -> int:
        """Linear-layer parameters of the encoder."""
        return sum(self.layer_linear_params(layer) for layer in self.layers)

    def encoder_params(self) -> int:
        """Encoder parameters including the two LayerNorms per layer."""
        return self.encoder_linear_params() + len(self.layers) * 4 * self.hidden

    def embedding_params(self) -> int:
        """Word, position and token-type embeddings plus their LayerNorm."""
        rank = self.extra.get("embedding_rank")
        words = self.vocab_size * self.hidden if not rank else rank * (self.vocab_size + self.hidden)
        return words + (self.max_positions + self.type_vocab_size) * self.hidden + 2 * self.hidden

    # ---- FLOPs ------------------------------------------------------------------------------------------------
    def encoder_flops(self, seq_len: int) -> int:
        """Floating-point operations (2 per multiply-add) of the encoder for one sequence of ``seq_len`` tokens."""
        d, t = self.hidden, seq_len
        total = 0
        for layer in self.layers:
            qk = sum(layer.qk_dims)
            vo = sum(layer.vo_dims)
            total += 2 * t * d * (2 * qk + 2 * vo + 2 * layer.ffn_dim)  # Q, K, V, O, W1, W2
            total += 2 * t * t * (qk + vo)  # scores and context
        return total

    def head_overhead_flops(self, seq_len: int) -> int:
        """The per-head work that does not shrink with a head's width: for every kept head with query units, its
        T x T scores are scaled (1), masked (1) and soft-maxed (max, subtract, exp, sum, divide: 5). A head without
        query units attends uniformly (the compact model computes softmax(mask) @ V once per layer, no scores)."""
        t = seq_len
        return sum(7 * t * t * sum(1 for qk in layer.qk_dims if qk > 0) for layer in self.layers)

    def total_flops(self, seq_len: int) -> int:
        """Encoder FLOPs, the per-head attention overhead (``head_overhead_flops``) and the per-token work pruning
        cannot remove (LayerNorms, residual adds, GELU). Its ratio dense/compact is the FLOPs-predicted speedup: many
        narrow heads predict less than few wide ones of the same widths."""
        d, t = self.hidden, seq_len
        fixed = t * d * 5 + sum(t * (10 * d + 8 * layer.ffn_dim) for layer in self.layers)
        return self.encoder_flops(seq_len) + self.head_overhead_flops(seq_len) + fixed

    # ---- serialisation ----------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (``layers`` as lists of heads and ffn widths)."""
        return {
            "hidden": self.hidden,
            "layers": [{"heads": [list(h) for h in layer.heads], "ffn_dim": layer.ffn_dim} for layer in self.layers],
            "vocab_size": self.vocab_size,
            "max_positions": self.max_positions,
            "type_vocab_size": self.type_vocab_size,
            "original_head_dim": self.original_head_dim,
            "extra": dict(self.extra),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelShape:
        """Inverse of ``to_dict``."""
        layers = tuple(LayerShape(tuple(tuple(h) for h in layer["heads"]), int(layer["ffn_dim"]))
                       for layer in data["layers"])
        return cls(data["hidden"], layers, data.get("vocab_size", 0), data.get("max_positions", 0),
                   data.get("type_vocab_size", 0), data.get("original_head_dim", 64), dict(data.get("extra", {})))

    def summary(self) -> dict[str, Any]:
        """Compact per-layer description for records: heads kept, total qk/vo widths, FFN width."""
        return {
            "heads": [len(layer.heads) for layer in self.layers],
            "qk": [sum(layer.qk_dims) for layer in self.layers],
            "vo": [sum(layer.vo_dims) for layer in self.layers],
            "ffn": [layer.ffn_dim for layer in self.layers],
        }
