"""Compact training: once a run's masks are final, train the physically compact student instead of the masked one.

After the schedule's last pruning step a score-and-cut method's masks no longer change, yet the masked model still
computes every dense matrix and multiplies the pruned units by zero. ``CompactPhase`` swaps in the compact model
(``grain_bench.compaction.compact``) for the remaining steps: the optimizer takes over the kept slices of its
moments, attention dropout draws the masked model's random numbers on CPU (``mirror_dropout``, set on the compact
model's attention blocks for the phase and removed at its end), and at the end the trained weights are written back
into the kept places of the dense student, so everything after training (folding, compaction, the equivalence check,
saving) runs as before. The gradients of the kept weights are the masked model's (a pruned unit's weights get zero
gradient there), so the result is the same training up to float rounding. ``CompactSwitch`` is the trainer's side:
which model a run trains at each step, and when it switches.
"""

from __future__ import annotations

import torch

from grain_bench.compaction import Piece, compact, encoder_sources, gather, scatter
from grain_bench.masks import MaskSpace, UnitMasks
from grain_bench.modeling_pruned_bert import PrunedBertAttention


class MirroredDropoutAttention(PrunedBertAttention):
    """A compact attention block in training whose attention dropout draws what the dense layer's SDPA draws
    (``mirror_dropout`` makes a block one, and back); without active dropout it is the plain block."""

    mirror: tuple[int, list[int]]  # the dense layer's head count; the dense head of each kept head

    def forward(self, hidden_states, attention_mask=None):
        """The plain block's forward, with the dense layer's dropout draws on the kept heads."""
        dropout = self.dropout_p if self.training else 0.0
        if not dropout:
            return super().forward(hidden_states, attention_mask)
        batch, length, _ = hidden_states.shape
        # SDPA's one [batch, num_heads, length, length] Bernoulli draw per forward pass, even when no head is left
        keep = hidden_states.new_empty(batch, self.mirror[0], length, length).bernoulli_(1 - dropout)
        keep.div_(1 - dropout)
        if self.qkv is None:
            return self._empty(hidden_states)
        qkv, out_weight = self._qkv(hidden_states)
        contexts, position = [], 0
        for heads, qk_width, vo_width in self.buckets:
            count = len(heads)
            q, k, v = self._split(qkv, batch, length, position, count, qk_width, vo_width)
            position += count * (2 * qk_width + vo_width)
            index = torch.tensor([self.mirror[1][h] for h in heads], device=keep.device)
            context = _dropped_out(q, k, v, attention_mask, self.scaling, keep.index_select(1, index))
            contexts.append(context.transpose(1, 2).reshape(batch, length, count * vo_width))
        return self._output(contexts, out_weight, hidden_states)


def _dropped_out(q, k, v, attention_mask, scale: float, keep):
    """Attention of one bucket as matmul, softmax times the dropout ``keep`` factors, matmul."""
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale
    if attention_mask is not None:
        scores = scores + attention_mask
    probs = torch.softmax(scores, dim=-1)
    return torch.matmul(probs * keep, v)


def mirror_dropout(block: PrunedBertAttention, num_heads: int | None = None, head_index=None) -> None:
    """Training only: make ``block`` draw attention dropout as the dense layer with ``num_heads`` heads does and give
    kept head i the draws of dense head ``head_index[i]``, so that a compact student trained in place of the masked
    one meets the masked model's random numbers. Only this block changes. No arguments: back to the plain block."""
    if num_heads is None:
        if isinstance(block, MirroredDropoutAttention):
            block.__class__ = PrunedBertAttention  # type: ignore[assignment]  # back to the plain block
            del block.mirror
        return
    if type(block) not in (PrunedBertAttention, MirroredDropoutAttention):
        raise ValueError(f"mirror_dropout takes a plain PrunedBertAttention block, got {type(block).__name__}")
    head_index = [int(h) for h in head_index]
    if len(head_index) != block.num_heads or not all(0 <= h < num_heads for h in head_index):
        raise ValueError(f"mirror_dropout: {block.num_heads} kept heads need as many indices below {num_heads}, "
                         f"got {head_index}")
    block.__class__ = MirroredDropoutAttention
    block.mirror = (int(num_heads), head_index)  # type: ignore[assignment]  # plain data, not a parameter


class CompactPhase:
    """The compact student that replaces ``model`` (a dense student with ``masks`` final) in ``optimizer``.

    ``CompactPhase(model, masks, space, optimizer)`` builds the compact model in training mode and moves the
    optimizer onto its parameters (the kept slices of every moment; the step counts as they are); train
    ``phase.model`` from there, then ``phase.finish()`` writes its weights back into ``model`` and returns ``model``.
    Parameters of the optimizer that are not ``model``'s (e.g. hidden-state projections) are left alone.
    """

    def __init__(self, model, masks: UnitMasks, space: MaskSpace, optimizer: torch.optim.Optimizer):
        if masks.prunes_hidden():
            raise ValueError("CompactPhase trains masks whose hidden dimensions are all kept (the hidden-state "
                             "projections read the full width); masks that prune them stay masked")
        self.dense = model
        encoder = encoder_sources(model, masks, space)
        with torch.no_grad():
            self.model = compact(model, masks, space)
            for name, param in self.model.named_parameters():
                if name not in encoder:  # compact() shares these with the dense student (its encoder is copied)
                    param.data = param.data.clone()
        self.model.train()
        self.sources: dict[str, list[Piece]] = {name: encoder.get(name, [Piece(name, 0, None)])
                                                for name, _ in self.model.named_parameters()}
        if next(model.parameters()).device.type == "cpu":
            # CPU SDPA drops out with one Bernoulli draw over all heads, which the compact model can repeat. CUDA's
            # fused kernels draw their own way: there the compact model keeps its fused kernel and its own draws
            # (the same dropout, other random numbers).
            for index, layer in enumerate(self.model.base_model.encoder.layer):
                mirror_dropout(layer.attention, space.num_heads, masks.kept_head_indices(index))
        self._move_optimizer(optimizer)

    def _move_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        dense = dict(self.dense.named_parameters())
        group_of = {id(p): i for i, group in enumerate(optimizer.param_groups) for p in group["params"]}
        compact_params = dict(self.model.named_parameters())
        missing = [name for name, pieces in self.sources.items() if any(p.source not in dense for p in pieces)]
        if missing:
            raise ValueError(f"compact parameters without a dense source: {missing[:5]}")
        dense_ids = {id(p) for p in dense.values()}
        new_groups: list[list[torch.Tensor]] = [[p for p in group["params"] if id(p) not in dense_ids]
                                                for group in optimizer.param_groups]
        for name, param in compact_params.items():
            first = dense[self.sources[name][0].source]
            if id(first) not in group_of:
                param.requires_grad_(False)  # frozen in the dense student: frozen here too
                continue
            new_groups[group_of[id(first)]].append(param)
            old = optimizer.state.get(first)
            if old:
                optimizer.state[param] = {
                    key: gather(self.sources[name], {p.source: optimizer.state[dense[p.source]][key]
                                                     for p in self.sources[name]})
                    if torch.is_tensor(value) and value.shape == first.shape else
                    (value.clone() if torch.is_tensor(value) else value)
                    for key, value in old.items()}
        for param in dense.values():
            optimizer.state.pop(param, None)
        for group, params in zip(optimizer.param_groups, new_groups):
            group["params"] = params

    def finish(self):
        """Write the trained weights into the kept places of the dense student; returns it. The compact model's
        attention blocks are plain again."""
        state = self.dense.state_dict()
        with torch.no_grad():
            for name, param in self.model.named_parameters():
                scatter(self.sources[name], param.detach(), state)
        for layer in self.model.base_model.encoder.layer:
            mirror_dropout(layer.attention)
        return self.dense


class CompactSwitch:
    """Which model a run trains: the dense (masked) student, then from ``at_step`` on (when steps remain and the masks
    there prune something) its compact form (``CompactPhase``), until ``finish``. ``at_step`` 0: never.

    ``model`` is the model to run forward and ``clip_params`` the parameters whose gradient norm is clipped: the
    student's then the ``extra`` ones (e.g. hidden-state projections), which stay in the optimizer as they are."""

    def __init__(self, dense, masked, space: MaskSpace, optimizer: torch.optim.Optimizer, clip_params, extra,
                 at_step: int, total_steps: int):
        self.dense, self.masked, self.space, self.optimizer = dense, masked, space, optimizer
        self.model, self.clip_params, self.extra = dense, list(clip_params), list(extra)
        self.at_step, self.total_steps = at_step, total_steps
        self.phase: CompactPhase | None = None

    def after_step(self, step: int) -> bool:
        """After the optimizer step of ``step``: switch to the compact student if it is time; True if it switched."""
        # Masks that prune hidden dimensions stay masked: the compact student's narrower hidden states would not fit
        # the hidden-state projections, which read the dense width.
        masks = self.masked.masks
        if (step == self.at_step and step < self.total_steps and masks.density(self.space) < 1.0
                and not masks.prunes_hidden()):
            self.phase = CompactPhase(self.dense, self.masked.masks, self.space, self.optimizer)
            self.model = self.phase.model
            self.clip_params = [p for p in self.model.parameters() if p.requires_grad] + self.extra
            return True
        return False

    def finish(self) -> bool:
        """After training: write the compact phase's weights back into the dense student, which becomes ``model``
        again; True if there was a compact phase."""
        if self.phase is None:
            return False
        self.model = self.phase.finish()
        return True
