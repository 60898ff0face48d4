"""UMAP embeddings on disk, and what the app and the UMAP child process both need to agree on: the
parameters, the cache key (points, parameters, umap version) and where an embedding lives.

Numpy and the standard library only: the UMAP child (`umap_child.py`, run by path) loads this file too.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

CACHE_VERSION = "rvq-viewer-umap-2"   # 2: exact neighbour graphs from 4,096 to 16,384 points
# Point counts whose UMAP neighbour graph is computed here exactly instead of by umap's pynndescent
# (below 4,096 umap is exact itself; above 16,384 the exact search costs more than pynndescent).
EXACT_KNN_FROM, EXACT_KNN_MAX = 4096, 16384
# Below this many points a cancelled job is left to finish (its result still lands in the cache);
# above it the child is killed, since a big fit can run for minutes.
KEEP_ON_CANCEL = 8192
MAX_CACHED = 500          # embeddings kept on disk (a 65,536-code map is 512 KiB)


class ProjectionError(Exception):
    """UMAP could not run (not installed, the child died, bad input). The message is one line."""


class ProjectionCancelled(ProjectionError):
    """The caller asked the job to stop."""


def scale_for_init(coords: np.ndarray, max_coord: float = 10.0) -> np.ndarray:
    """Coordinates centred and scaled to |coord| <= max_coord, as UMAP expects of an init array."""
    c = np.asarray(coords, dtype=np.float32)
    c = c - c.mean(axis=0, keepdims=True)
    span = float(np.abs(c).max()) if c.size else 0.0
    return (c * (max_coord / span)).astype(np.float32) if span > 0 else c


@dataclass(frozen=True)
class UmapParams:
    n_neighbors: int = 15
    min_dist: float = 0.1
    metric: str = "euclidean"
    n_epochs: int | None = 200       # umap's default is 500 below 10k points; 200 looks the same here
    seed: int | None = None      # an int makes UMAP deterministic but single-threaded
    init: str = "pca"            # "pca": start from our PCA (the picture morphs, not jumps); or "spectral"

    def for_points(self, n: int) -> "UmapParams":
        """The parameters actually usable for n points (n_neighbors < n)."""
        return UmapParams(**{**asdict(self), "n_neighbors": max(2, min(self.n_neighbors, n - 1))})


@dataclass
class Embedding:
    coords: np.ndarray         # [n, 2] float32
    method: str                # "umap" or "pca"
    cached: bool = False
    seconds: float = 0.0


def umap_version() -> str:
    """The installed umap-learn version, read from package metadata (importing umap takes seconds)."""
    from importlib import metadata
    try:
        return metadata.version("umap-learn")
    except metadata.PackageNotFoundError:
        return "missing"


def umap_available() -> bool:
    return umap_version() != "missing"


def cache_key(points: np.ndarray, params: UmapParams, version: str | None = None) -> str:
    """sha256 of the points' bytes, shape and dtype, the parameters and the umap version."""
    x = np.ascontiguousarray(points, dtype=np.float32)
    h = hashlib.sha256()
    meta = {"v": CACHE_VERSION, "umap": version or umap_version(), "shape": list(x.shape),
            "params": asdict(params.for_points(len(x)))}
    h.update(json.dumps(meta, sort_keys=True).encode())
    h.update(memoryview(x).cast("B"))
    return h.hexdigest()


def cache_path(cache_dir: str | Path, key: str) -> Path:
    return Path(cache_dir) / "umap" / f"{key}.npy"


def load_cached(points: np.ndarray, params: UmapParams, cache_dir: str | Path,
                key: str | None = None) -> np.ndarray | None:
    """The cached embedding of these points with these parameters, or None."""
    path = cache_path(cache_dir, key or cache_key(points, params))
    if not path.is_file():
        return None
    try:
        coords = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    if coords.shape != (len(points), 2) or not np.isfinite(coords).all():
        return None
    return coords.astype(np.float32, copy=False)


def save_atomic(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".npy", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, array, allow_pickle=False)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def unlink(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def evict(cache_dir: str | Path, max_files: int = MAX_CACHED) -> int:
    """Keep the newest `max_files` embeddings (by modification time); returns how many went."""
    folder = Path(cache_dir) / "umap"
    try:
        files = sorted(folder.glob("*.npy"), key=lambda p: p.stat().st_mtime)
    except OSError:
        return 0
    removed = 0
    for path in files[:max(0, len(files) - max_files)]:
        with contextlib.suppress(OSError):
            path.unlink()
            removed += 1
    return removed


def clear_cache(cache_dir: str | Path) -> int:
    """Delete cached embeddings; returns how many files went."""
    removed = 0
    folder = Path(cache_dir) / "umap"
    if folder.is_dir():
        for path in folder.glob("*.npy"):
            with contextlib.suppress(OSError):
                path.unlink()
                removed += 1
    return removed
