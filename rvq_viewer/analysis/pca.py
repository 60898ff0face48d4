"""PCA to two dimensions: the one implementation behind the centroid map, the series trajectories, the
compare window's joint projection and the UMAP start.

Numpy only on purpose: the UMAP child process (`umap_service.py`, run by path) loads this file too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class PcaProjection:
    """Two principal axes of a point set: x -> (x - mean) @ axes, in float32.

    The axes come from the float64 covariance (d x d, cheap for n >> d: 65,536 x 128 in ~30 ms; an SVD
    of the centred rows when d > n), and each axis's largest loading is made positive, so the same
    points always give the same picture."""

    mean: np.ndarray        # [d] float32
    axes: np.ndarray        # [d, 2] float32
    explained: np.ndarray   # [2] share of the fitted variance on each axis

    @classmethod
    def fit(cls, points: np.ndarray, max_points: int | None = None, seed: int = 0) -> "PcaProjection":
        """Fit on `points` [n, d]; with `max_points`, on a seeded random subset of that many rows."""
        x = np.asarray(points, dtype=np.float32)
        if x.ndim != 2:
            raise ValueError(f"points must be [n, d], got shape {x.shape}")
        if max_points is not None and len(x) > max_points:
            x = x[np.sort(np.random.default_rng(seed).choice(len(x), max_points, replace=False))]
        n, d = x.shape
        mean = x.mean(axis=0) if n else np.zeros(d, np.float32)
        axes = np.zeros((d, 2))
        explained = np.zeros(2)
        if n >= 2 and d > 0:
            centred = x - mean
            if d <= n:
                values, vectors = np.linalg.eigh((centred.T @ centred).astype(np.float64))
                values, found = np.clip(values[::-1], 0.0, None), vectors[:, ::-1][:, :2]
            else:
                _, singular, vt = np.linalg.svd(centred.astype(np.float64), full_matrices=False)
                values, found = singular ** 2, vt[:2].T
            for j in range(found.shape[1]):
                if found[np.argmax(np.abs(found[:, j])), j] < 0:
                    found[:, j] = -found[:, j]
            axes[:, :found.shape[1]] = found
            total = float(values.sum())
            if total > 0:
                explained[:found.shape[1]] = values[:found.shape[1]] / total
        return cls(mean.astype(np.float32), axes.astype(np.float32), explained)

    def transform(self, points: np.ndarray) -> np.ndarray:
        x = np.asarray(points, dtype=np.float32).reshape(-1, self.mean.size)
        return ((x - self.mean) @ self.axes).astype(np.float32, copy=False)


def pca_2d(points: np.ndarray) -> np.ndarray:
    """The first two principal components of `points` [n, d] as float32 [n, 2] (zeros below 2 points)."""
    x = np.asarray(points, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"points must be [n, d], got shape {x.shape}")
    if len(x) < 2 or x.shape[1] == 0:
        return np.zeros((len(x), 2), dtype=np.float32)
    return PcaProjection.fit(x).transform(x)
