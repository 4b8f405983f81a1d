"""Distillation losses shared by every task and method (GRAIN, arXiv 2212.07634, §3.3: logit KD at temperature 8
without the T² factor, hidden-state MSE through learnable projections; ``distiller.py`` of airaria/GRAIN)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_cross_entropy(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float,
                       mask: torch.Tensor | None = None) -> torch.Tensor:
    """-sum softmax(z_T / T) * log_softmax(z_S / T) over the last dim, mean over rows (no T^2 factor).

    ``mask`` (same leading shape, bool) selects the rows that count, e.g. real tokens of a token-level head.
    """
    target = F.softmax(teacher_logits.detach().float() / temperature, dim=-1)
    loss = -(target * F.log_softmax(student_logits.float() / temperature, dim=-1)).sum(-1)
    if mask is not None:
        mask = mask.to(loss.dtype)
        return (loss * mask).sum() / mask.sum().clamp_min(1.0)
    return loss.mean()


def logit_mse(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """MSE to the teacher's outputs (regression heads)."""
    return F.mse_loss(student_logits.float(), teacher_logits.detach().float())


def hidden_mse(student_hidden, teacher_hidden, projections, layer_pairs, attention_mask: torch.Tensor) -> torch.Tensor:
    """Sum over layer pairs of the MSE (non-pad tokens) between teacher states and projected student states."""
    mask = attention_mask.unsqueeze(-1).to(student_hidden[0].dtype)
    denom = mask.sum().clamp_min(1.0) * student_hidden[0].shape[-1]
    total = student_hidden[0].new_zeros(())
    for (s_layer, t_layer), projection in zip(layer_pairs, projections):
        diff = (projection(student_hidden[s_layer]) - teacher_hidden[t_layer].detach()) * mask
        total = total + diff.pow(2).sum() / denom
    return total
