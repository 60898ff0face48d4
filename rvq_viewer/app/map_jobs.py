"""The centroid map's geometry: PCA at once, UMAP from the child process, and a KD-tree for picking;
`map_job` yields them in that order."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np

from ..analysis.pca import PcaProjection
from ..analysis.umap_service import ProjectionCancelled, ProjectionError, UmapParams
from .open_jobs import check
from .session import Session


UMAP_MAX_POINTS = 131_072      # beyond this the map stays PCA (a UMAP fit would take many minutes)


@dataclass
class MapGeometry:
    """2-D positions of a set of codes and a KD-tree over them for hit-testing."""

    key: tuple                # (layers, method)
    layers: np.ndarray        # layer of each point
    codes: np.ndarray         # code of each point
    coords: np.ndarray        # [n, 2] float32
    method: str               # "pca" or "umap"
    tree: object              # scipy.spatial.cKDTree
    note: str = ""
    seconds: float = 0.0
    projection: PcaProjection | None = None   # the PCA behind the coords: other points can join the map

    @property
    def single_layer(self) -> int | None:
        """The one layer shown, or None for several."""
        found = np.unique(self.layers)
        return int(found[0]) if found.size == 1 else None


def map_points(session: Session, layers: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The codebook rows of `layers` stacked: (points, layer ids, code ids)."""
    points = np.concatenate([session.codebooks[i] for i in layers]).astype(np.float32, copy=False)
    layer_ids = np.concatenate([np.full(len(session.codebooks[i]), i, dtype=np.int32) for i in layers])
    code_ids = np.concatenate([np.arange(len(session.codebooks[i]), dtype=np.int32) for i in layers])
    return points, layer_ids, code_ids


def pca_geometry(cancel: threading.Event, session: Session, layers: list[int]) -> MapGeometry:
    from scipy.spatial import cKDTree
    t0 = time.perf_counter()
    points, layer_ids, code_ids = map_points(session, layers)
    projection = PcaProjection.fit(points)
    coords = projection.transform(points)
    check(cancel)
    return MapGeometry((tuple(layers), "pca"), layer_ids, code_ids, coords, "pca", cKDTree(coords),
                       seconds=time.perf_counter() - t0, projection=projection)


def umap_geometry(cancel: threading.Event, service, session: Session, layers: list[int],
                  params, pca: MapGeometry | None = None) -> MapGeometry:
    """UMAP through the child-process service (cache first); blocks this worker thread."""
    from scipy.spatial import cKDTree
    points, layer_ids, code_ids = map_points(session, layers)
    init = pca.coords if pca is not None and len(pca.coords) == len(points) else None
    emb = service.embed(points, params, cancelled=cancel.is_set, init=init)
    check(cancel)
    note = "cached" if emb.cached else f"{emb.seconds:.1f} s"
    return MapGeometry((tuple(layers), "umap"), layer_ids, code_ids, emb.coords, emb.method,
                       cKDTree(emb.coords), note=note, seconds=emb.seconds)


@dataclass
class MapNote:
    """A message from the map job (e.g. UMAP failed); the PCA stays."""

    text: str


def map_job(cancel, service, session: Session, layers: list[int], params: UmapParams, use_umap: bool,
            pca: MapGeometry | None):
    """Yield the PCA geometry (unless given), then the UMAP one or a note saying why there is none."""
    if pca is None:
        pca = pca_geometry(cancel, session, layers)
        yield pca
    if not use_umap:
        return
    if service is None:
        yield MapNote("UMAP is off (no UMAP process)")
        return
    n = sum(len(session.codebooks[i]) for i in layers)
    if n > UMAP_MAX_POINTS:
        yield MapNote(f"UMAP skipped: {n:,} points (limit {UMAP_MAX_POINTS:,})")
        return
    try:
        yield umap_geometry(cancel, service, session, layers, params, pca)
    except ProjectionCancelled:
        return
    except ProjectionError as exc:
        yield MapNote(str(exc))
