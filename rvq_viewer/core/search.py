"""Nearest-codeword search for many frames, without materialising more than one block of distances."""

from __future__ import annotations

import torch

# Rows per block: a [block, K] float32 distance block stays in cache-friendly sizes for K <= 65,536.
DEFAULT_BLOCK = 4096


def squared_norms(codebook: torch.Tensor) -> torch.Tensor:
    """||e_k||² for each row, computed once per codebook and reused for every block."""
    return codebook.pow(2).sum(dim=1)


def nearest_codes(x: torch.Tensor, codebook: torch.Tensor, codebook_sq: torch.Tensor | None = None,
                  block: int = DEFAULT_BLOCK) -> torch.Tensor:
    """Index of the nearest row of `codebook` [K, D] for every row of `x` [N, D] (squared L2).

    ||x||² is the same for every code, so argmin(||e||² - 2 x·e) is the nearest code; ties go to the
    lowest index, as torch.argmin and the peers' argmax do.
    """
    if codebook_sq is None:
        codebook_sq = squared_norms(codebook)
    out = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    embed_t = codebook.t()
    for start in range(0, x.shape[0], block):
        rows = x[start:start + block]
        scores = torch.addmm(codebook_sq.unsqueeze(0), rows, embed_t, beta=1.0, alpha=-2.0)
        out[start:start + block] = scores.argmin(dim=1)
    return out
