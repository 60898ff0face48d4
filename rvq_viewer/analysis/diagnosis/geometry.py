"""Geometry of one codebook: near-duplicate centroids and the dimension the centroids span.

Neighbours come from `rvq_viewer.quant.nearest_neighbours`, which stays within one [block, K] distance
block at a time, so K = 65,536 costs a few seconds and tens of MB, never a K x K matrix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ...quant import nearest_neighbours


@dataclass
class NearDuplicates:
    """Codes whose nearest other code is far closer than is typical for this codebook."""

    median_nn: float            # median nearest-neighbour distance over the codes looked at
    threshold: float            # distance below which two codes count as near duplicates
    codes: np.ndarray           # indices (into the full codebook) of codes that have a near duplicate
    exact: int                  # of those, codes with an exact (distance 0) duplicate
    pairs: list[tuple[int, int, float]]  # (i, j, distance) with i < j, closest first
    nn_distance: np.ndarray     # per code looked at, distance to its nearest other code
    looked_at: np.ndarray       # indices of the codes looked at


def near_duplicates(table: torch.Tensor | np.ndarray, factor: float, subset: np.ndarray | None = None,
                    max_pairs: int = 50) -> NearDuplicates:
    """Codes of `table` (restricted to `subset` if given) with a neighbour closer than
    `factor` x the median nearest-neighbour distance."""
    full = torch.as_tensor(np.asarray(table) if not isinstance(table, torch.Tensor) else table).float().cpu()
    looked_at = np.arange(full.shape[0]) if subset is None else np.asarray(subset, dtype=np.int64)
    rows = full[torch.as_tensor(looked_at)] if subset is not None else full
    nn_index, nn_dist = nearest_neighbours(rows)
    finite = nn_dist[np.isfinite(nn_dist)]
    median = float(np.median(finite)) if finite.size else float("nan")
    threshold = factor * median if math.isfinite(median) else 0.0
    close = nn_dist < threshold if threshold > 0 else nn_dist <= 0
    close |= nn_dist == 0   # exact duplicates always count, even when half the codes are copies
    pairs = {}
    for i in np.flatnonzero(close):
        a, b = int(looked_at[i]), int(looked_at[nn_index[i]])
        key = (min(a, b), max(a, b))
        pairs[key] = float(nn_dist[i])
    ordered = sorted(((a, b, d) for (a, b), d in pairs.items()), key=lambda t: (t[2], t[0], t[1]))
    return NearDuplicates(median_nn=median, threshold=threshold, codes=looked_at[close],
                          exact=int((nn_dist[close] == 0).sum()), pairs=ordered[:max_pairs],
                          nn_distance=nn_dist, looked_at=looked_at)


def covariance_spectrum(points: torch.Tensor | np.ndarray) -> np.ndarray:
    """Eigenvalues (descending, >= 0) of the covariance of the rows of `points`."""
    x = np.asarray(points.detach().cpu() if isinstance(points, torch.Tensor) else points, dtype=np.float64)
    if x.shape[0] < 2:
        return np.zeros(x.shape[1] if x.ndim == 2 else 0)
    x = x - x.mean(axis=0, keepdims=True)
    # Eigenvalues of the smaller Gram matrix (D x D or K x K): the same non-zero spectrum as an SVD of
    # the centred rows, several times faster for 65,536 x 128; float64 keeps the small ones accurate.
    gram = x.T @ x if x.shape[0] >= x.shape[1] else x @ x.T
    lam = np.clip(np.linalg.eigvalsh(gram), 0.0, None) / (x.shape[0] - 1)
    out = np.zeros(x.shape[1])
    top = np.sort(lam)[::-1][:x.shape[1]]
    out[:top.size] = top
    return out


def effective_rank(eigenvalues: np.ndarray) -> float:
    """Roy & Vetterli's effective rank exp(H(s / sum s)) over the singular values s = sqrt(eigenvalues).

    1 for points on a line, d for points spread evenly over d orthogonal directions.
    """
    s = np.sqrt(np.clip(np.asarray(eigenvalues, dtype=np.float64), 0.0, None))
    total = s.sum()
    if total <= 0:
        return 0.0
    p = s[s > 0] / total
    return float(math.exp(-(p * np.log(p)).sum()))


def participation_ratio(eigenvalues: np.ndarray) -> float:
    """(sum l)^2 / sum l^2 over covariance eigenvalues l: the number of directions holding the variance.

    Weighs large directions more than the effective rank does (variance, not standard deviation).
    """
    lam = np.clip(np.asarray(eigenvalues, dtype=np.float64), 0.0, None)
    denom = float((lam ** 2).sum())
    return float(lam.sum() ** 2 / denom) if denom > 0 else 0.0
