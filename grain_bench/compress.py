"""Post-training compression outside the encoder mask space (embedding factorisation)."""

from __future__ import annotations

import torch


def factorize_embeddings(model, rank: int) -> None:
    """Replace the word-embedding matrix by its best rank-``rank`` approximation (truncated SVD), in place."""
    embeddings = model.get_input_embeddings()
    with torch.no_grad():
        weight = embeddings.weight.float()
        u, s, vh = torch.linalg.svd(weight, full_matrices=False)
        rank = min(rank, s.numel())
        embeddings.weight.copy_((u[:, :rank] * s[:rank]) @ vh[:rank])
