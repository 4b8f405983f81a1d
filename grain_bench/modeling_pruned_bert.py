"""A BERT encoder whose layers differ in head count, per-head query/key width, per-head value width and FFN width.

This file is copied into every saved compact model, next to ``config.json``, so that
``AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=True)`` works where grain-bench is not
installed: it imports only torch and transformers, never grain_bench.

Per layer the config holds ``{"heads": [[qk_dim, vo_dim], ...], "ffn_dim": k}``. ``hidden_size`` is the width of the
residual stream, which hidden-dimension pruning narrows (embeddings, LayerNorms and every projection run at it); the
pooler then maps it back to ``pooler_size``, the original width the sequence classifier reads. Attention scores use
the scale of the original head size (``original_head_dim ** -0.5``), not of the pruned widths. An attention block
without heads or an FFN block without neurons is skipped, but its output bias is kept: the block then computes
``LayerNorm(x + bias)``, exactly what the masked dense model computes. A head with value units but no query units
attends uniformly over the non-padding tokens (its scores are all zero), again as the masked model does.

Attention runs on buckets of heads of similar widths (``plan_buckets``; usually one to three per layer): each bucket is
one ``scaled_dot_product_attention`` call on heads zero-padded to the bucket's widest head (zero query channels add
nothing to the scores, zero value channels meet zero W_O columns). Q, K and V of every bucket come from one GEMM of a
padded copy of the kept weights, and one GEMM maps the contexts back, so no activation is scattered or gathered.
See docs/compact-and-latency.md for the layouts that were measured against this one.

This file holds what inference and plain training run, nothing more: grain-bench's own training and runtime hooks
(compact training's dropout mirror, the ragged runtime's kernel, the compile runtime's written-out attention) live in
grain-bench and act on single blocks, so the file a Hub user runs stays small.
"""

from __future__ import annotations

import copy

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

#: 2: the file no longer carries grain-bench's training and runtime hooks (the config is format 1's).
#: 3: the residual stream may be narrower than the pooler's output (``pooler_size``: hidden-dimension pruning); a
#: model whose hidden dimensions are all kept is still written as format 2 (``format_of``), which older readers take.
FORMAT_VERSION = 3


def format_of(config) -> int:
    """The lowest format that holds a compact config: 3 when its residual stream is narrower than its pooler."""
    return FORMAT_VERSION if getattr(config, "pooler_size", config.hidden_size) != config.hidden_size else 2


class PrunedBertConfig(BertConfig):
    """BertConfig plus the per-layer widths of a compact encoder."""

    model_type = "pruned_bert"

    def __init__(self, layer_shapes=None, original_head_dim=None, pruned_format_version=FORMAT_VERSION,
                 pooler_size=None, **kwargs):
        super().__init__(**kwargs)
        #: the width of the pooler's output (what a sequence classifier reads): the original hidden size
        self.pooler_size = int(pooler_size or self.hidden_size)
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


def _additive_mask(attention_mask, dtype):
    """The mask as SDPA's additive float mask (0 = attend, the dtype's minimum = masked), broadcastable, or None.

    Converted once per forward pass: SDPA would otherwise convert a boolean mask in every call (every bucket of every
    layer)."""
    if attention_mask is None:
        return None
    if attention_mask.dim() == 2:  # [batch, keys] of 1/0, from attention implementations that keep the raw mask
        attention_mask = attention_mask.bool()[:, None, None, :]
    if attention_mask.dtype == torch.bool:
        additive = torch.zeros(attention_mask.shape, dtype=dtype, device=attention_mask.device)
        return additive.masked_fill_(~attention_mask, torch.finfo(dtype).min)
    return attention_mask.to(dtype)


_is_exporting = getattr(torch.compiler, "is_exporting", lambda: False)  # newer than some torch this file may meet


#: GEMM output widths are zero-padded up to a multiple of this: on CPU (oneDNN/MKL), a linear layer whose output width
#: is not a multiple of 8 runs at about half the FLOP rate (docs/compact-and-latency.md), so a few zero rows pay for
#: themselves many times over.
ALIGN = 8


def _empty_block(hidden_states, bias, dropout: nn.Dropout, norm: nn.Module):
    """A block with no units left: ``LayerNorm(x + dropout(b))``, the bias dropped out as the dense output it stands
    for. The bias is broadcast into a new tensor, not an ``expand`` view: under ``no_grad`` a view of a parameter
    requires grad without a grad function, which torch's ``FlopCounterMode`` (its module tracker) refuses."""
    return norm(hidden_states + dropout(torch.zeros_like(hidden_states) + bias))


def _residual_linear(x, weight, bias, residual, dropout: nn.Dropout):
    """``residual + dropout(x W^T + b)``. In eager inference (no active dropout) the bias is added to the residual in
    one pass and the GEMM accumulates into that sum in place (``addmm_``); ``F.linear`` would first copy the bias into
    a new output and the residual would take a third pass over the [batch, length, hidden] activations. Under autocast
    the GEMM is autocast's (an in-place ``addmm_`` is not cast), and the sum takes the residual's type."""
    if torch.is_autocast_enabled(x.device.type):
        return residual + dropout(F.linear(x, weight, bias))
    if (dropout.training and dropout.p) or torch.compiler.is_compiling() or _is_exporting():
        return dropout(F.linear(x, weight, bias)).add_(residual)  # compilers fuse these passes themselves
    out = residual + bias
    out.view(-1, out.shape[-1]).addmm_(x.reshape(-1, x.shape[-1]), weight.t())
    return out


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


class _PaddedWeights:
    """A padded copy of some parameters, rebuilt (differentiably) whenever gradients are on, and cached otherwise
    until one of the parameters is replaced, moved or modified in place (its version counter). Changes made through
    ``param.data`` bypass version counters: call ``set_layout()`` on the module after such edits."""

    def __init__(self):
        self.params, self.key, self.value = (), None, None

    def get(self, params, build):
        # Under torch.compile / torch.export the build is traced into the graph (an inference compiler with freezing
        # folds it into constants); the cache's data-pointer checks would break the graph at every block.
        if torch.is_grad_enabled() or torch.compiler.is_compiling():
            return build()
        key = tuple((t.data_ptr(), t._version, t.device, t.dtype) for t in params)
        # The parameter objects themselves are compared (and held) too, so freed memory reused at the same address by
        # a new tensor can never pass for the old one.
        if self.key != key or len(self.params) != len(params) or any(a is not b for a, b in zip(self.params, params)):
            self.params, self.key, self.value = tuple(params), key, tuple(t.detach() for t in build())
        return self.value


#: The cost of one more attention call per layer, in padded channels per head (see ``plan_buckets``). Measured on a
#: 2-core CPU at batch 32 x 64 tokens (docs/compact-and-latency.md): a few channels of GEMM work per extra call.
BUCKET_CALL_COST = 16


def plan_buckets(qk_dims, vo_dims, call_cost: float = BUCKET_CALL_COST):
    """Group a layer's heads into buckets of similar widths: ``[(heads, qk_width, vo_width), ...]``.

    Every head of a bucket is zero-padded to the bucket's widest query/key and value widths, so that a bucket is one
    plain [batch, heads, length, width] attention call with no scatter or gather of activations. Heads are sorted by
    width (widest first) and cut into contiguous buckets by dynamic programming, minimising the padded widths
    ``sum(len(heads) * (qk_width + vo_width))`` (what the GEMMs and the attention cost grow with) plus ``call_cost``
    per bucket. Heads without query/key units attend uniformly whatever the input; they are planned apart, in buckets
    of ``qk_width`` 0 that need no scores at all (``PrunedBertAttention._uniform``).
    """
    def plan(group, qk_cost):
        order = sorted(group, key=lambda h: (qk_dims[h] + vo_dims[h], vo_dims[h], -h), reverse=True)
        best = [0.0] + [float("inf")] * len(order)
        cut = [0] * (len(order) + 1)
        for end in range(1, len(order) + 1):
            qk_width = vo_width = 0
            for begin in range(end - 1, -1, -1):  # bucket order[begin:end]
                qk_width = max(qk_width, qk_dims[order[begin]])
                vo_width = max(vo_width, vo_dims[order[begin]])
                cost = best[begin] + (end - begin) * (qk_cost(qk_width) + vo_width) + call_cost
                if cost < best[end]:
                    best[end], cut[end] = cost, begin
        buckets, end = [], len(order)
        while end:
            heads = sorted(order[cut[end]:end])
            buckets.append((heads, max(qk_dims[h] for h in heads), max(vo_dims[h] for h in heads)))
            end = cut[end]
        return buckets[::-1]

    heads = range(len(qk_dims))
    return (plan([h for h in heads if qk_dims[h]], lambda width: width)
            + plan([h for h in heads if not qk_dims[h]], lambda width: 0))


class PrunedBertAttention(nn.Module):
    """Self-attention with heads of individual query/key and value widths, plus BERT's output dense and LayerNorm.

    The parameters hold exactly the kept units (``qkv``: the kept query rows, then key rows, then value rows, head by
    head; ``dense``: W_O's kept columns). The forward pass runs on a padded copy of those weights laid out by
    ``plan_buckets``: zero rows for the padding channels of Q/K/V and zero columns of W_O, so one GEMM yields every
    bucket's Q/K/V as views and one GEMM maps the concatenated contexts back. The padded copy is rebuilt from the
    parameters (differentiably) when gradients are on, and cached otherwise until a parameter changes.
    """

    def __init__(self, config: PrunedBertConfig, heads):
        super().__init__()
        self.qk_dims = [int(h[0]) for h in heads]
        self.vo_dims = [int(h[1]) for h in heads]
        self.num_heads = len(heads)
        hidden = config.hidden_size
        self.qk_total, self.vo_total = sum(self.qk_dims), sum(self.vo_dims)
        self.scaling = config.original_head_dim ** -0.5
        self.dropout_p = config.attention_probs_dropout_prob
        if self.num_heads:
            self.qkv = nn.Linear(hidden, 2 * self.qk_total + self.vo_total)
            self.dense = nn.Linear(self.vo_total, hidden)
            self.set_layout()
        else:
            # Empty block: W_O has no inputs left, but its bias is still added (and dropped out in training, as the
            # dense output it stands for is) before the LayerNorm.
            self.qkv = None  # type: ignore[assignment]
            self.buckets: list = []
            self.dense_bias = nn.Parameter(torch.zeros(hidden))
        self.LayerNorm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.hidden_dropout = nn.Dropout(config.hidden_dropout_prob)

    def set_layout(self, call_cost: float = BUCKET_CALL_COST, align: int = ALIGN, width_multiple: int = 1) -> None:
        """Plan the buckets (``plan_buckets`` with ``call_cost``) and the padded layout (GEMM widths a multiple of
        ``align``, each bucket's query/key and value widths rounded up to a multiple of ``width_multiple``). The
        outputs do not depend on any of them; the defaults are the measured best on CPU (benchmarks compare)."""
        self.buckets = [(heads, _round_up(qk, width_multiple), _round_up(vo, width_multiple))
                        for heads, qk, vo in plan_buckets(self.qk_dims, self.vo_dims, call_cost)]
        self.align = int(align)
        self._weights = _PaddedWeights()
        # Where each kept row of ``qkv`` (and column of ``dense``) goes in the padded layout. Plain lists, not
        # buffers: derived from the config, so nothing to save or load.
        q_start = [sum(self.qk_dims[:h]) for h in range(self.num_heads)]
        v_start = [sum(self.vo_dims[:h]) for h in range(self.num_heads)]
        rows = [0] * (2 * self.qk_total + self.vo_total)
        columns = [0] * self.vo_total
        position = context = 0
        for heads, qk_width, vo_width in self.buckets:
            for part, (widths, starts, width, offset) in enumerate(((self.qk_dims, q_start, qk_width, 0),
                                                                    (self.qk_dims, q_start, qk_width, self.qk_total),
                                                                    (self.vo_dims, v_start, vo_width,
                                                                     2 * self.qk_total))):
                for slot, head in enumerate(heads):
                    for j in range(widths[head]):
                        rows[offset + starts[head] + j] = position + slot * width + j
                        if part == 2:
                            columns[starts[head] + j] = context + slot * width + j
                position += len(heads) * width
            context += len(heads) * vo_width
        # Trailing zero rows round the GEMM output width up to ALIGN (they are never read).
        self.padded_rows, self.padded_columns = _round_up(position, self.align), context
        # No padding and no reordering: the parameters already are the layout.
        self.identity = (rows == list(range(len(rows))) and self.padded_rows == len(rows)
                         and columns == list(range(context)))
        self._rows, self._columns = rows, columns

    def _padded(self):
        """(W_qkv, b_qkv, W_O) in the bucket layout."""
        weight, bias, out_weight = params = self.qkv.weight, self.qkv.bias, self.dense.weight
        if self.identity:
            return params

        def build():
            rows = torch.tensor(self._rows, dtype=torch.long, device=weight.device)
            columns = torch.tensor(self._columns, dtype=torch.long, device=weight.device)
            return (weight.new_zeros(self.padded_rows, weight.shape[1]).index_copy(0, rows, weight),
                    bias.new_zeros(self.padded_rows).index_copy(0, rows, bias),
                    out_weight.new_zeros(out_weight.shape[0], self.padded_columns).index_copy(1, columns, out_weight))

        return self._weights.get(params, build)

    def _attend(self, q, k, v, attention_mask, dropout: float):
        """SDPA of one bucket; [batch, heads, length, vo_width]."""
        # SDPA's fused (flash) CPU kernel needs one head width for Q, K and V; unequal widths fall back to a much
        # slower path. Zero-pad the narrower side here (a small copy) rather than in the GEMM.
        qk_width, vo_width = q.shape[-1], v.shape[-1]
        width = max(1, qk_width, vo_width)
        if qk_width < width:
            q, k = F.pad(q, (0, width - qk_width)), F.pad(k, (0, width - qk_width))
        if vo_width < width:
            v = F.pad(v, (0, width - vo_width))
        context = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask, scale=self.scaling,
                                                 dropout_p=dropout)
        return context[..., :vo_width] if vo_width < width else context

    @staticmethod
    def _uniform(v, attention_mask):
        """Attention of heads without query units: every score is 0, so each query takes softmax(mask) of the values
        (the mean over the tokens it may attend to); [batch, heads, length, vo_width] (an expanded view)."""
        if attention_mask is None:
            return v.mean(dim=2, keepdim=True).expand_as(v)
        context = torch.matmul(torch.softmax(attention_mask.to(v.dtype), dim=-1), v)  # [b, h, 1 or length, width]
        return context.expand(-1, -1, v.shape[2], -1)

    def _empty(self, hidden_states):
        """The block without heads: LayerNorm(x + b_O), b_O dropped out as the dense output it stands for."""
        return _empty_block(hidden_states, self.dense_bias, self.hidden_dropout, self.LayerNorm)

    def _qkv(self, hidden_states):
        """Every bucket's Q, K and V from one GEMM of the padded W_qkv, and the padded W_O."""
        weight, bias, out_weight = self._padded()
        return F.linear(hidden_states, weight, bias), out_weight

    @staticmethod
    def _split(qkv, batch: int, length: int, position: int, count: int, qk_width: int, vo_width: int):
        """Q, K and V of the bucket of ``count`` heads at ``position`` of the GEMM output: [batch, heads, length,
        width] views."""
        return [qkv[..., begin: begin + count * width].view(batch, length, count, width).transpose(1, 2)
                for begin, width in ((position, qk_width), (position + count * qk_width, qk_width),
                                     (position + 2 * count * qk_width, vo_width))]

    def _output(self, contexts, out_weight, hidden_states):
        """LayerNorm(x + W_O context + b_O) of the buckets' contexts, each [batch, length, heads * vo_width]."""
        context = contexts[0] if len(contexts) == 1 else torch.cat(contexts, dim=-1)
        return self.LayerNorm(_residual_linear(context, out_weight, self.dense.bias, hidden_states,
                                               self.hidden_dropout))

    def forward(self, hidden_states, attention_mask=None):
        """LayerNorm(x + W_O attention(x) + b_O), with ``attention_mask`` in SDPA form (or None)."""
        if self.qkv is None:
            return self._empty(hidden_states)
        batch, length, _ = hidden_states.shape
        dropout = self.dropout_p if self.training else 0.0
        qkv, out_weight = self._qkv(hidden_states)
        contexts, position = [], 0
        for heads, qk_width, vo_width in self.buckets:
            count = len(heads)
            q, k, v = self._split(qkv, batch, length, position, count, qk_width, vo_width)
            position += count * (2 * qk_width + vo_width)
            if not qk_width and not dropout:
                context = self._uniform(v, attention_mask)
            else:
                context = self._attend(q, k, v, attention_mask, dropout)
            contexts.append(context.transpose(1, 2).reshape(batch, length, count * vo_width))
        return self._output(contexts, out_weight, hidden_states)


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
        self.set_layout()

    def set_layout(self, align: int = ALIGN) -> None:
        """Pad the FFN width up to a multiple of ``align`` at run time (outputs unchanged)."""
        self.align = int(align)
        self._weights = _PaddedWeights()

    def _padded(self):
        """(W_1, b_1, W_2) with the FFN width zero-padded up to ALIGN (zero neurons meet zero W_2 columns)."""
        params = self.intermediate.weight, self.intermediate.bias, self.dense.weight
        extra = _round_up(self.ffn_dim, self.align) - self.ffn_dim
        if not extra:
            return params
        return self._weights.get(params, lambda: (F.pad(params[0], (0, 0, 0, extra)), F.pad(params[1], (0, extra)),
                                                  F.pad(params[2], (0, extra))))

    def forward(self, hidden_states):
        """LayerNorm(x + W_2 act(W_1 x + b_1) + b_2)."""
        if not self.ffn_dim:
            return _empty_block(hidden_states, self.dense_bias, self.hidden_dropout, self.LayerNorm)
        weight, bias, out_weight = self._padded()
        inner = self.act(F.linear(hidden_states, weight, bias))
        return self.LayerNorm(_residual_linear(inner, out_weight, self.dense.bias, hidden_states, self.hidden_dropout))


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
        mask = _additive_mask(attention_mask, hidden_states.dtype)
        for layer in self.layer:
            hidden_states = layer(hidden_states, mask)
        return BaseModelOutputWithPastAndCrossAttentions(last_hidden_state=hidden_states)


class PrunedBertPreTrainedModel(BertPreTrainedModel):
    """Shared settings of the pruned classes."""

    config_class = PrunedBertConfig
    _can_record_outputs = {"hidden_states": PrunedBertLayer}
    _no_split_modules = ["BertEmbeddings", "PrunedBertLayer"]


class PrunedBertPooler(BertPooler):
    """BERT's pooler from the (possibly narrower) residual stream to ``pooler_size``."""

    def __init__(self, config: PrunedBertConfig):
        super().__init__(config)
        if config.pooler_size != config.hidden_size:
            self.dense = nn.Linear(config.hidden_size, config.pooler_size)


class PrunedBertModel(PrunedBertPreTrainedModel, BertModel):
    """BertModel with the variable-width encoder (embeddings, masks and pooler are transformers' own)."""

    def __init__(self, config: PrunedBertConfig, add_pooling_layer: bool = True):
        # BertModel.__init__ would build a dense encoder first; build the parts directly instead.
        PrunedBertPreTrainedModel.__init__(self, config)
        self.config = config
        self.gradient_checkpointing = False
        self.embeddings = BertEmbeddings(config)
        self.encoder = PrunedBertEncoder(config)  # type: ignore[assignment]
        self.pooler = PrunedBertPooler(config) if add_pooling_layer else None
        self.post_init()


def _head_init(head_class, model, config) -> None:
    """``head_class.__init__`` (a transformers head class) on ``model``. It builds a dense BertModel first, which
    refuses a hidden size that is not a multiple of the head count (a residual stream narrowed by hidden-dimension
    pruning): that throw-away encoder is built from a copy of the config with one head."""
    stand_in = config
    if config.hidden_size % config.num_attention_heads:
        stand_in = copy.copy(config)
        stand_in.num_attention_heads = 1
    head_class.__init__(model, stand_in)
    model.config = config


def _swap_encoder(model, config, add_pooling_layer: bool) -> None:
    # The transformers head classes build a dense BertModel in __init__; replace it by the pruned one.
    model.bert = PrunedBertModel(config, add_pooling_layer=add_pooling_layer)
    model.post_init()


class PrunedBertForSequenceClassification(PrunedBertPreTrainedModel, BertForSequenceClassification):
    """Sequence classification / regression head on the pruned encoder."""

    def __init__(self, config: PrunedBertConfig):
        _head_init(BertForSequenceClassification, self, config)
        if config.pooler_size != config.hidden_size:  # the classifier reads the pooler's output
            self.classifier = nn.Linear(config.pooler_size, self.classifier.out_features)
        _swap_encoder(self, config, add_pooling_layer=True)


class PrunedBertForTokenClassification(PrunedBertPreTrainedModel, BertForTokenClassification):
    """Token classification head on the pruned encoder."""

    def __init__(self, config: PrunedBertConfig):
        _head_init(BertForTokenClassification, self, config)
        _swap_encoder(self, config, add_pooling_layer=False)


class PrunedBertForQuestionAnswering(PrunedBertPreTrainedModel, BertForQuestionAnswering):
    """Extractive question answering (span) head on the pruned encoder."""

    def __init__(self, config: PrunedBertConfig):
        _head_init(BertForQuestionAnswering, self, config)
        _swap_encoder(self, config, add_pooling_layer=False)
