"""The masked encoder: unit gates installed on a transformers model through forward hooks.

Each unit kind has one float gate per unit (1 = kept, 0 = pruned) that multiplies an activation:

- query unit j of head h: the Q projection's output channel (and K's, through a detached copy of the gate);
- value unit j: the input channel of W_O (the attention context), equivalent to masking V's row and W_O's column;
- FFN neuron k: the input channel of W_2, equivalent to masking W_1's row and W_2's column;
- hidden dimension i (when masks prune that kind, ``grain_bench.masks``): as CoFi's modeling does, the embeddings'
  sum and the outputs of W_O and W_2 are scaled by the gate before their LayerNorm, every LayerNorm normalises over
  the dimensions whose gate is not 0 only (its weight and bias at those), and its output is scaled by the gate again.
  With 0/1 gates this is exactly the compact model whose residual stream is the kept dimensions. Until a hidden gate
  is set, none of this runs, so models of methods that do not prune hidden dimensions compute what they always did.

The gates require grad, so after a backward pass ``unit_grads()`` holds dL/dgate for every unit, which equals the
reference GRAIN scores before the absolute value: query |sum_cols(dW_Q * W_Q)[j] + db_Q[j] b_Q[j]|, value
|sum_rows(dW_O * W_O)[:, j]|, FFN |sum_rows(dW_2 * W_2)[:, k]| (the K side is not counted, as in the reference).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from grain_bench.arch import encoder_layers, get_arch, layer_norm_path, resolve
from grain_bench.masks import MaskSpace, UnitMasks, UnitTensors


class MaskedModel:
    """Owns the gates and hooks of one model; ``apply(masks)`` sets them, ``remove()`` takes the hooks off."""

    def __init__(self, model: torch.nn.Module, space: MaskSpace | None = None):
        self.model = model
        self.space = space or MaskSpace.from_config(model.config)
        self.arch = get_arch(model.config)
        s = self.space
        device = next(model.parameters()).device
        self.qk = torch.ones(s.num_layers, s.num_heads * s.head_dim, device=device, requires_grad=True)
        self.vo = torch.ones(s.num_layers, s.num_heads * s.head_dim, device=device, requires_grad=True)
        self.ffn = torch.ones(s.num_layers, s.ffn_dim, device=device, requires_grad=True)
        self.hidden = torch.ones(s.hidden, device=device)  # 0/1 gate of each hidden dimension (no gradient)
        self.masks = UnitMasks.full(s)
        self.values: dict[str, torch.Tensor] | None = None  # real gate values of a learned-mask method, per kind
        self._handles = []
        for index, layer in enumerate(encoder_layers(model, self.arch)):
            self._handles += [
                resolve(layer, self.arch.query).register_forward_hook(self._out_hook(self.qk, index, detach=False)),
                resolve(layer, self.arch.key).register_forward_hook(self._out_hook(self.qk, index, detach=True)),
                resolve(layer, self.arch.attn_out).register_forward_pre_hook(self._in_hook(self.vo, index)),
                resolve(layer, self.arch.ffn_out).register_forward_pre_hook(self._in_hook(self.ffn, index)),
            ]
            for path in (self.arch.attn_out, self.arch.ffn_out):
                self._handles += [resolve(layer, path).register_forward_hook(self._hidden_out_hook),
                                  resolve(layer, layer_norm_path(path)).register_forward_hook(self._norm_hook(False))]
        embeddings_norm = resolve(model.base_model, self.arch.embeddings_norm)
        self._handles.append(embeddings_norm.register_forward_hook(self._norm_hook(True)))

    def _hidden_gate(self) -> torch.Tensor | None:
        """The multiplier of the hidden dimensions (0/1 gate times the method's values), or None while every
        dimension is kept with no value set: then the hidden hooks do nothing."""
        values = None if self.values is None else self.values.get("hidden")
        if values is None:
            return None if self.masks.hidden is None else self.hidden
        return self.hidden * values

    def _hidden_out_hook(self, module, inputs, output):
        gate = self._hidden_gate()
        return output if gate is None else output * gate.to(output.dtype)

    def _norm_hook(self, scale_input: bool):
        """A LayerNorm over the dimensions whose gate is not 0, its output scaled by the gate (CoFi's
        ``CoFiLayerNorm`` and the multiplications around it); ``scale_input``: the embeddings' sum is scaled first."""
        def hook(module, inputs, output):
            gate = self._hidden_gate()
            if gate is None:
                return output
            x = inputs[0]
            gate = gate.to(x.dtype)
            if scale_input:
                x = x * gate
            kept = (gate != 0).nonzero().flatten()
            normed = F.layer_norm(x.index_select(-1, kept), (len(kept),), module.weight.index_select(0, kept),
                                  module.bias.index_select(0, kept), module.eps)
            return torch.zeros_like(x).index_copy(-1, kept, normed) * gate
        return hook

    def _gate(self, kind: str, gate: torch.Tensor, index: int) -> torch.Tensor:
        """The multiplier of one layer's units: the 0/1 gate, times the method's real values when it set some."""
        if self.values is None:
            return gate[index]
        return gate[index] * self.values[kind][index]

    def _out_hook(self, gate: torch.Tensor, index: int, detach: bool):
        def hook(module, inputs, output):
            g = self._gate("qk", gate, index)
            g = g.detach() if detach else g
            return output * g.to(output.dtype)
        return hook

    def _in_hook(self, gate: torch.Tensor, index: int):
        kind = "vo" if gate is self.vo else "ffn"

        def hook(module, inputs):
            return (inputs[0] * self._gate(kind, gate, index).to(inputs[0].dtype), *inputs[1:])
        return hook

    def set_values(self, values: UnitTensors | None) -> None:
        """Multiply the gates by real values (a learned-mask method's sampled or deterministic gates; they may carry
        gradients to the method's parameters), or stop doing so (None). The 0/1 masks still apply on top."""
        if values is None:
            self.values = None
            return
        s = self.space
        device = self.qk.device
        self.values = {"qk": values.qk.reshape(s.num_layers, -1).to(device, torch.float32),
                       "vo": values.vo.reshape(s.num_layers, -1).to(device, torch.float32),
                       "ffn": values.ffn.reshape(s.num_layers, -1).to(device, torch.float32)}
        if values.hidden is not None:
            self.values["hidden"] = values.hidden.reshape(-1).to(device, torch.float32)

    def apply(self, masks: UnitMasks) -> None:
        """Set the gates to ``masks``."""
        s = self.space
        with torch.no_grad():
            self.qk.copy_(masks.qk.reshape(s.num_layers, -1).to(self.qk))
            self.vo.copy_(masks.vo.reshape(s.num_layers, -1).to(self.vo))
            self.ffn.copy_(masks.ffn.to(self.ffn))
            if masks.hidden is None:
                self.hidden.fill_(1.0)
            else:
                self.hidden.copy_(masks.hidden.to(self.hidden))
        self.masks = UnitMasks.from_tensors(masks.clone())

    def zero_grad(self) -> None:
        """Clear the gate gradients."""
        for gate in (self.qk, self.vo, self.ffn):
            gate.grad = None

    def unit_grads(self) -> UnitTensors | None:
        """dL/dgate of every unit from the backward passes since ``zero_grad`` (None if there was none)."""
        qk, vo, ffn = self.qk.grad, self.vo.grad, self.ffn.grad
        if qk is None or vo is None or ffn is None:
            return None
        s = self.space
        return UnitTensors(qk.detach().reshape(s.num_layers, s.num_heads, s.head_dim).cpu().clone(),
                           vo.detach().reshape(s.num_layers, s.num_heads, s.head_dim).cpu().clone(),
                           ffn.detach().cpu().clone())

    def remove(self) -> None:
        """Take the hooks off (the model becomes dense again)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []


def unit_weight_norms(model: torch.nn.Module, space: MaskSpace | None = None) -> UnitTensors:
    """L2 norm of every unit's parameters: qk = W_Q, W_K rows + biases; vo = W_V row + bias, W_O column; ffn = W_1 row
    + bias, W_2 column."""
    space = space or MaskSpace.from_config(model.config)
    arch = get_arch(model.config)
    qk, vo, ffn = [], [], []
    with torch.no_grad():
        for layer in encoder_layers(model, arch):
            q, k, v = (resolve(layer, p) for p in (arch.query, arch.key, arch.value))
            o, w1, w2 = (resolve(layer, p) for p in (arch.attn_out, arch.ffn_in, arch.ffn_out))
            qk.append(q.weight.pow(2).sum(1) + q.bias.pow(2) + k.weight.pow(2).sum(1) + k.bias.pow(2))
            vo.append(v.weight.pow(2).sum(1) + v.bias.pow(2) + o.weight.pow(2).sum(0))
            ffn.append(w1.weight.pow(2).sum(1) + w1.bias.pow(2) + w2.weight.pow(2).sum(0))
    s = space
    return UnitTensors(torch.stack(qk).sqrt().reshape(s.num_layers, s.num_heads, s.head_dim).float().cpu(),
                       torch.stack(vo).sqrt().reshape(s.num_layers, s.num_heads, s.head_dim).float().cpu(),
                       torch.stack(ffn).sqrt().float().cpu())


def fold_unit_scales(model: torch.nn.Module, space: MaskSpace, masks: UnitMasks, scales: UnitTensors) -> None:
    """Multiply each kept unit's weights by its scale, where its gate acts: a query unit's Q and K rows and biases
    (the gate scales both, as the masked model does), a value unit's W_O column, an FFN neuron's W_2 column, a hidden
    dimension's embedding columns, LayerNorm weights and biases and W_O and W_2 rows and biases. A model
    with the gates at these values computes what the folded model computes with 0/1 gates."""
    arch = get_arch(model.config)
    kept = masks.map(lambda t: t.float())
    with torch.no_grad():
        for index, layer in enumerate(encoder_layers(model, arch)):
            qk = (scales.qk[index].reshape(-1) * kept.qk[index].reshape(-1) + (1 - kept.qk[index].reshape(-1)))
            vo = (scales.vo[index].reshape(-1) * kept.vo[index].reshape(-1) + (1 - kept.vo[index].reshape(-1)))
            ffn = scales.ffn[index] * kept.ffn[index] + (1 - kept.ffn[index])
            for path in (arch.query, arch.key):
                linear = resolve(layer, path)
                factor = qk.to(linear.weight)
                linear.weight.mul_(factor[:, None])
                linear.bias.mul_(factor)
            for path, factor in ((arch.attn_out, vo), (arch.ffn_out, ffn)):
                linear = resolve(layer, path)
                linear.weight.mul_(factor.to(linear.weight)[None, :])
        if scales.hidden is not None and masks.hidden is not None:
            _fold_hidden_scales(model, arch, scales.hidden * masks.hidden + (~masks.hidden).float())


def _fold_hidden_scales(model: torch.nn.Module, arch, factor: torch.Tensor) -> None:
    """Fold one scale per hidden dimension where the masked model applies it (see the module's docstring): the
    embedding tables' columns (the embeddings' sum is scaled), every LayerNorm's weight and bias (its output is), and
    the rows and bias of W_O and W_2 (their outputs are)."""
    embeddings = resolve(model.base_model, arch.embeddings_norm.rsplit(".", 1)[0])
    for module in embeddings.modules():
        if isinstance(module, torch.nn.Embedding):
            module.weight.mul_(factor.to(module.weight)[None, :])
    norms = [resolve(model.base_model, arch.embeddings_norm)]
    for layer in encoder_layers(model, arch):
        for path in (arch.attn_out, arch.ffn_out):
            linear = resolve(layer, path)
            linear.weight.mul_(factor.to(linear.weight)[:, None])
            linear.bias.mul_(factor.to(linear.bias))
            norms.append(resolve(layer, layer_norm_path(path)))
    for norm in norms:
        norm.weight.mul_(factor.to(norm.weight))
        norm.bias.mul_(factor.to(norm.bias))
