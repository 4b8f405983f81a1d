"""A BERT encoder whose layers differ in head count, per-head query/key width, per-head value width and FFN width.

This file is copied into every saved compact model, next to ``config.json``, so that
``AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=True)`` works where grain-bench is not
installed: it imports only torch and transformers, never grain_bench.

Per layer the config holds ``{"heads": [[qk_dim, vo_dim], ...], "ffn_dim": k}``. Attention scores use the scale of the
original head size (``original_head_dim ** -0.5``), not of the pruned widths. An attention block without heads or an
FFN block without neurons is skipped, but its output bias is kept: the block then computes ``LayerNorm(x + bias)``,
exactly what the masked dense model computes. A head with value units but no query units attends uniformly over the
non-padding tokens (its scores are all zero), again as the masked model does.

Attention runs as one ``scaled_dot_product_attention`` call per layer: Q, K and V come from one fused GEMM of exactly
the kept widths and are scattered into a zero-padded [heads, widest head] layout (zero query channels add nothing to
the scores); the context is gathered back to the kept value widths before W_O. Layers whose heads all have one width
skip the scatter and gather. See docs/compact-and-latency.md for the layouts that were measured against this one.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from transformers import BertConfig
from transformers.activations import ACT2FN
from transformers.modeling_outputs import BaseModelOutputWithPastAndCrossAttentions
from transformers.models.bert.modeling_bert import (
    BertEmbeddings,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
    BertPooler,
    BertPreTrainedModel,
)

FORMAT_VERSION = 1


class PrunedBertConfig(BertConfig):
    """BertConfig plus the per-layer widths of a compact encoder."""

    model_type = "pruned_bert"

    def __init__(self, layer_shapes=None, original_head_dim=None, pruned_format_version=FORMAT_VERSION, **kwargs):
        super().__init__(**kwargs)
        head_dim = self.hidden_size // self.num_attention_heads
        if layer_shapes is None:  # a dense model: every head full width
            layer_shapes = [{"heads": [[head_dim, head_dim]] * self.num_attention_heads,
                             "ffn_dim": self.intermediate_size}] * self.num_hidden_layers
        if len(layer_shapes) != self.num_hidden_layers:
            raise ValueError(f"layer_shapes has {len(layer_shapes)} layers but num_hidden_layers is "
                             f"{self.num_hidden_layers}")
        self.layer_shapes = [{"heads": [[int(q), int(v)] for q, v in layer["heads"]], "ffn_dim": int(layer["ffn_dim"])}
                             for layer in layer_shapes]
        self.original_head_dim = int(original_head_dim or head_dim)
        self.pruned_format_version = int(pruned_format_version)


def _additive_or_bool_mask(attention_mask, dtype):
    """The mask in a form SDPA takes: None, a bool mask (True = attend) or an additive float mask, broadcastable."""
    if attention_mask is None:
        return None
    if attention_mask.dim() == 2:  # [batch, keys] of 1/0, from attention implementations that keep the raw mask
        return attention_mask.bool()[:, None, None, :]
    if attention_mask.dtype == torch.bool:
        return attention_mask
    return attention_mask.to(dtype)


class PrunedBertAttention(nn.Module):
    """Self-attention with heads of individual query/key and value widths, plus BERT's output dense and LayerNorm."""

    def __init__(self, config: PrunedBertConfig, heads):
        super().__init__()
        self.qk_dims = [int(h[0]) for h in heads]
        self.vo_dims = [int(h[1]) for h in heads]
        self.num_heads = len(heads)
        hidden = config.hidden_size
        self.qk_total, self.vo_total = sum(self.qk_dims), sum(self.vo_dims)
        # Zero-width query/key heads still need one (zero) channel for SDPA; their scores are 0 -> uniform attention.
        self.qk_max = max([1, *self.qk_dims])
        self.vo_max = max([0, *self.vo_dims])
        # Every head the same widths (and no zero-width queries): plain reshapes, no scatter/gather.
        self.uniform = all(q == self.qk_max for q in self.qk_dims) and all(v == self.vo_max for v in self.vo_dims)
        self.scaling = config.original_head_dim ** -0.5
        self.dropout_p = config.attention_probs_dropout_prob
        if self.num_heads:
            self.qkv = nn.Linear(hidden, 2 * self.qk_total + self.vo_total)
            self.dense = nn.Linear(self.vo_total, hidden)
        else:
            # Empty block: W_O has no inputs left, but its bias is still added before the LayerNorm.
            self.qkv = None
            self.dense_bias = nn.Parameter(torch.zeros(hidden))
        self.LayerNorm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.hidden_dropout = nn.Dropout(config.hidden_dropout_prob)
        self._index_cache = {}

    def _indices(self, device):
        # Plain attributes, not buffers: derived from the config, so nothing to load and nothing left on meta.
        if device not in self._index_cache:
            q_index = [h * self.qk_max + j for h, width in enumerate(self.qk_dims) for j in range(width)]
            v_index = [h * self.vo_max + j for h, width in enumerate(self.vo_dims) for j in range(width)]
            self._index_cache[device] = (torch.tensor(q_index, dtype=torch.long, device=device),
                                         torch.tensor(v_index, dtype=torch.long, device=device))
        return self._index_cache[device]

    def _pad(self, flat, index, width):
        batch, length, _ = flat.shape
        padded = flat.new_zeros(batch, length, self.num_heads * width)
        padded.index_copy_(2, index, flat)
        return padded.view(batch, length, self.num_heads, width).transpose(1, 2)

    def forward(self, hidden_states, attention_mask=None):
        """LayerNorm(x + W_O attention(x) + b_O), with ``attention_mask`` in SDPA form (or None)."""
        if self.qkv is None:
            return self.LayerNorm(hidden_states + self.dense_bias)
        batch, length, _ = hidden_states.shape
        qkv = self.qkv(hidden_states)
        q, k, v = qkv.split([self.qk_total, self.qk_total, self.vo_total], dim=-1)
        if self.uniform:
            q = q.view(batch, length, self.num_heads, self.qk_max).transpose(1, 2)
            k = k.view(batch, length, self.num_heads, self.qk_max).transpose(1, 2)
            v = v.view(batch, length, self.num_heads, self.vo_max).transpose(1, 2)
        else:
            q_index, v_index = self._indices(hidden_states.device)
            q = self._pad(q, q_index, self.qk_max)
            k = self._pad(k, q_index, self.qk_max)
            v = self._pad(v, v_index, self.vo_max)
        context = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask, scale=self.scaling,
                                                 dropout_p=self.dropout_p if self.training else 0.0)
        context = context.transpose(1, 2).reshape(batch, length, self.num_heads * self.vo_max)
        if not self.uniform:
            context = context.index_select(2, self._indices(hidden_states.device)[1])
        out = self.hidden_dropout(self.dense(context))
        return self.LayerNorm(out + hidden_states)


class PrunedBertFeedForward(nn.Module):
    """BERT's intermediate + output blocks with ``ffn_dim`` neurons (0 = skipped, bias kept)."""

    def __init__(self, config: PrunedBertConfig, ffn_dim: int):
        super().__init__()
        hidden = config.hidden_size
        self.ffn_dim = int(ffn_dim)
        if self.ffn_dim:
            self.intermediate = nn.Linear(hidden, self.ffn_dim)
            self.dense = nn.Linear(self.ffn_dim, hidden)
            self.act = ACT2FN[config.hidden_act] if isinstance(config.hidden_act, str) else config.hidden_act
        else:
            self.dense_bias = nn.Parameter(torch.zeros(hidden))
        self.LayerNorm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.hidden_dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states):
        """LayerNorm(x + W_2 act(W_1 x + b_1) + b_2)."""
        if not self.ffn_dim:
            return self.LayerNorm(hidden_states + self.dense_bias)
        out = self.hidden_dropout(self.dense(self.act(self.intermediate(hidden_states))))
        return self.LayerNorm(out + hidden_states)


class PrunedBertLayer(nn.Module):
    """One encoder layer of any widths."""

    def __init__(self, config: PrunedBertConfig, layer_shape):
        super().__init__()
        self.attention = PrunedBertAttention(config, layer_shape["heads"])
        self.ffn = PrunedBertFeedForward(config, layer_shape["ffn_dim"])

    def forward(self, hidden_states, attention_mask=None, *args, **kwargs):
        """Attention then FFN, each with its residual and LayerNorm."""
        return self.ffn(self.attention(hidden_states, attention_mask))


class PrunedBertEncoder(nn.Module):
    """The stack of variable-width layers; takes the keyword arguments BertModel passes to its encoder."""

    def __init__(self, config: PrunedBertConfig):
        super().__init__()
        self.config = config
        self.layer = nn.ModuleList([PrunedBertLayer(config, shape) for shape in config.layer_shapes])

    def forward(self, hidden_states, attention_mask=None, encoder_hidden_states=None, encoder_attention_mask=None,
                cache=None, use_cache=None, **kwargs):
        """Run every layer; returns transformers' encoder output type."""
        mask = _additive_or_bool_mask(attention_mask, hidden_states.dtype)
        for layer in self.layer:
            hidden_states = layer(hidden_states, mask)
        return BaseModelOutputWithPastAndCrossAttentions(last_hidden_state=hidden_states)


class PrunedBertPreTrainedModel(BertPreTrainedModel):
    """Shared settings of the pruned classes."""

    config_class = PrunedBertConfig
    _can_record_outputs = {"hidden_states": PrunedBertLayer}
    _no_split_modules = ["BertEmbeddings", "PrunedBertLayer"]


class PrunedBertModel(PrunedBertPreTrainedModel, BertModel):
    """BertModel with the variable-width encoder (embeddings, masks and pooler are transformers' own)."""

    def __init__(self, config: PrunedBertConfig, add_pooling_layer: bool = True):
        # BertModel.__init__ would build a dense encoder first; build the parts directly instead.
        PrunedBertPreTrainedModel.__init__(self, config)
        self.config = config
        self.gradient_checkpointing = False
        self.embeddings = BertEmbeddings(config)
        self.encoder = PrunedBertEncoder(config)
        self.pooler = BertPooler(config) if add_pooling_layer else None
        self.post_init()


def _swap_encoder(model, config, add_pooling_layer: bool) -> None:
    # The transformers head classes build a dense BertModel in __init__; replace it by the pruned one.
    model.bert = PrunedBertModel(config, add_pooling_layer=add_pooling_layer)
    model.post_init()


class PrunedBertForSequenceClassification(PrunedBertPreTrainedModel, BertForSequenceClassification):
    """Sequence classification / regression head on the pruned encoder."""

    def __init__(self, config: PrunedBertConfig):
        BertForSequenceClassification.__init__(self, config)
        _swap_encoder(self, config, add_pooling_layer=True)


class PrunedBertForTokenClassification(PrunedBertPreTrainedModel, BertForTokenClassification):
    """Token classification head on the pruned encoder."""

    def __init__(self, config: PrunedBertConfig):
        BertForTokenClassification.__init__(self, config)
        _swap_encoder(self, config, add_pooling_layer=False)


class PrunedBertForQuestionAnswering(PrunedBertPreTrainedModel, BertForQuestionAnswering):
    """Extractive question answering (span) head on the pruned encoder."""

    def __init__(self, config: PrunedBertConfig):
        BertForQuestionAnswering.__init__(self, config)
        _swap_encoder(self, config, add_pooling_layer=False)
