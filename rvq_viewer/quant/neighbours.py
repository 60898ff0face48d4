"""Nearest neighbours between tables of vectors: the one implementation every analysis uses.

`nearest_neighbours(a, b)` gives, for each row of `a`, its nearest row of `b` and the distance; with `b`
None, the nearest *other* row of `a`; `exclude[i]` names a row of `b` that row i may not pick (a query
that is also in the table). It works in [block, K] distance blocks, so K = 65,536 costs a few seconds
and tens of MB, never a K x K matrix.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..errors import CancelledError
from .search import nearest_codes

# Rows of the distance matrix computed at once when rows must be masked: as many as fit in about
# TILE_BYTES (a block that stays in cache: at K = 65,536, 16 rows run twice as fast as 256), within
# [MIN_ROWS, MAX_ROWS].
TILE_BYTES = 4 << 20
MIN_ROWS, MAX_ROWS = 16, 256
# Rows per call of the search engine when nothing is masked.
ENGINE_ROWS = 4096


def block_rows(k: int) -> int:
    return max(MIN_ROWS, min(MAX_ROWS, TILE_BYTES // (4 * max(1, k))))


def _as_tensor(x) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu()
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def nearest_neighbours(table, other=None, exclude: np.ndarray | None = None, block: int | None = None,
                       should_stop: Callable[[], bool] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """For each row of `table`, the index of (int64) and Euclidean distance to (float64) its nearest row
    of `other` (`table` itself, never a row's own index, when None). Rows with no allowed neighbour get
    index -1 and distance inf.

    Scores are float32 (||b||² - 2 a·b); the distance to the chosen row is then recomputed exactly from
    the difference, so exact duplicates give 0 and not the ~1e-3 left by the expanded form.
    `should_stop` is asked between blocks; when it says so, CancelledError is raised.
    """
    a = _as_tensor(table)
    self_search = other is None
    b = a if self_search else _as_tensor(other)
    n = a.shape[0]
    if self_search:
        exclude = np.arange(n)
    index = np.full(n, -1, dtype=np.int64)
    dist = np.full(n, np.inf)
    if n == 0 or b.shape[0] == 0:
        return index, dist
    b_sq = b.pow(2).sum(dim=1)
    masked = exclude is not None
    step = block or (block_rows(b.shape[0]) if masked else ENGINE_ROWS)
    found = torch.empty(n, dtype=torch.long)
    for start in range(0, n, step):
        if should_stop is not None and should_stop():
            raise CancelledError("cancelled")
        rows = a[start:start + step]
        if not masked:
            found[start:start + step] = nearest_codes(rows, b, b_sq)
            continue
        scores = torch.addmm(b_sq.unsqueeze(0), rows, b.t(), beta=1.0, alpha=-2.0)
        ex = torch.from_numpy(np.asarray(exclude[start:start + step], dtype=np.int64))
        hit = (ex >= 0).nonzero().flatten()
        scores[hit, ex[hit]] = float("inf")
        found[start:start + step] = scores.argmin(dim=1)
    found_np = found.numpy()
    valid = np.ones(n, dtype=bool)
    if masked and b.shape[0] == 1:          # one candidate, excluded for some rows: they have none
        valid = np.asarray(exclude) != 0
    rows = np.flatnonzero(valid)
    chosen = torch.from_numpy(found_np[rows])
    exact = (a[torch.from_numpy(rows)].double() - b.double()[chosen]).pow(2).sum(dim=1).sqrt().numpy()
    index[rows] = found_np[rows]
    dist[rows] = exact
    return index, dist


def median_nn_distance(table) -> float:
    """Median distance from each row to its nearest other row (nan for fewer than two rows)."""
    _, dist = nearest_neighbours(table)
    finite = dist[np.isfinite(dist)]
    return float(np.median(finite)) if finite.size else float("nan")
