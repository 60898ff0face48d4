"""Geometry of one codebook: nearest neighbours between its centroids and the dimension they span.

Everything here works on a [K, D] table and stays within one [block, K] distance block at a time, so
K = 65,536 costs a few seconds and no more than ~64 MB, never a K x K matrix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from typing import Callable

import numpy as np
import torch

from ..core.search import nearest_codes
from ..errors import CancelledError

# Rows of the K x K distance matrix computed at once: as many as fit in about NN_TILE_BYTES (a block
# that stays in cache: at K = 65,536 16 rows run twice as fast as 256, whose 64 MB block does not),
# within [NN_MIN_ROWS, NN_MAX_ROWS].
NN_TILE_BYTES = 4 << 20
NN_MIN_ROWS, NN_MAX_ROWS = 16, 256
# Rows per call of the search engine when the two tables differ.
ENGINE_PIECE_ROWS = 4096


def nn_block_rows(k: int) -> int:
    return max(NN_MIN_ROWS, min(NN_MAX_ROWS, NN_TILE_BYTES // (4 * max(1, k))))


def nearest_neighbours(table: torch.Tensor | np.ndarray, other: torch.Tensor | np.ndarray | None = None,
                       block: int | None = None, should_stop: Callable[[], bool] | None = None
                       ) -> tuple[np.ndarray, np.ndarray]:
    """For each row of `table`, the index of and Euclidean distance to its nearest row of `other`.

    With `other` None the nearest *other* row of `table` itself (a row is never its own neighbour).
    The search runs on float32 scores; the distance to the chosen row is then recomputed exactly from
    the difference, so exact duplicates give 0 and not the ~1e-3 left by ||a||² + ||b||² - 2ab.
    `should_stop` is asked between blocks; when it says so, CancelledError is raised.
    """
    a = torch.as_tensor(np.asarray(table) if not isinstance(table, torch.Tensor) else table).float().cpu()
    self_search = other is None
    b = a if self_search else torch.as_tensor(
        np.asarray(other) if not isinstance(other, torch.Tensor) else other).float().cpu()
    if a.shape[0] == 0 or b.shape[0] == 0 or (self_search and a.shape[0] < 2):
        return np.zeros(a.shape[0], dtype=np.int64), np.full(a.shape[0], np.inf)
    block = block or nn_block_rows(b.shape[0])
    b_sq = b.pow(2).sum(dim=1)
    index = torch.empty(a.shape[0], dtype=torch.long)
    # Two tables: the audit's own search engine (a few times faster). One table: blocks of scores with
    # each row's own code masked out, which the engine cannot do.
    step = max(block, ENGINE_PIECE_ROWS) if not self_search else block
    for start in range(0, a.shape[0], step):
        if should_stop is not None and should_stop():
            raise CancelledError("cancelled")
        rows = a[start:start + step]
        if not self_search:
            index[start:start + step] = nearest_codes(rows, b, b_sq)
            continue
        scores = torch.addmm(b_sq.unsqueeze(0), rows, b.t(), beta=1.0, alpha=-2.0)
        span = torch.arange(rows.shape[0])
        scores[span, span + start] = float("inf")
        index[start:start + step] = scores.argmin(dim=1)
    dist = (a.double() - b.double()[index]).pow(2).sum(dim=1).sqrt()
    return index.numpy(), dist.numpy()


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


def spectrum_from_moments(count: int, total: np.ndarray, outer: np.ndarray) -> np.ndarray:
    """Covariance eigenvalues from the sums a streaming pass keeps: n, sum x, sum x x^T."""
    if count < 2:
        return np.zeros(total.shape[0])
    mean = total / count
    cov = (outer - count * np.outer(mean, mean)) / (count - 1)
    cov = (cov + cov.T) / 2
    return np.sort(np.clip(np.linalg.eigvalsh(cov), 0.0, None))[::-1]


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
