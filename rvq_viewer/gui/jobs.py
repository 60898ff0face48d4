"""Work that runs in worker threads: loading, auditing, and the per-view numpy/torch number crunching.

Qt-free. Every job takes a `threading.Event` first (set = stop); generator jobs also stop when their
worker stops iterating them. Results are plain objects handed to the GUI thread whole.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..audit import build_result, iter_audit, resolve_device
from ..errors import CancelledError, LoadError, RvqViewerError
from ..io import FeatureSource, load_quantizer
from ..projection import pca_2d
from .model import DeadCodeTable, Session, Snapshot

SNAPSHOT_INTERVAL = 0.08  # s between partial snapshots built in the audit thread (the GUI draws at 10 Hz)


def _check(cancel: threading.Event) -> None:
    if cancel.is_set():
        raise CancelledError("cancelled")


FEATURE_ONLY = (".npy", ".npz")


def split_paths(cancel: threading.Event, paths: list[str | Path], have_checkpoint: bool):
    """Dropped or given paths -> (checkpoint or None, feature paths, loaded quantizer or None).

    Folders are features. Among files, the first one that loads as a quantizer checkpoint is the
    checkpoint (files other than .npy/.npz are tried first); the rest are features. If none loads and
    a checkpoint is already open, all paths are features for it.
    """
    paths = [Path(p) for p in paths]
    files = [p for p in paths if not p.is_dir()]
    candidates = [p for p in files if p.suffix.lower() not in FEATURE_ONLY] + \
                 [p for p in files if p.suffix.lower() in FEATURE_ONLY]
    first_error = None
    for path in candidates:
        _check(cancel)
        try:
            quantizer = load_quantizer(path)
        except RvqViewerError as exc:
            first_error = first_error or exc
            continue
        return path, [p for p in paths if p != path], quantizer
    if have_checkpoint:
        return None, paths, None
    if first_error is not None:
        raise first_error
    raise LoadError("no quantizer checkpoint among the dropped files (open one with Ctrl+O)")


def load_session(cancel: threading.Event, checkpoint: str | Path, features: list[str | Path],
                 chunk_frames: int = 4096, quantizer=None) -> Session:
    """Load the checkpoint and check the feature files (headers only). Raises RvqViewerError."""
    quantizer = quantizer or load_quantizer(checkpoint)
    _check(cancel)
    source, total = None, 0
    if features:
        source = FeatureSource(list(features), quantizer.dim, chunk_frames=chunk_frames,
                               frame_stride=quantizer.frame_stride)
        total = source.total_frames()
    _check(cancel)
    codebooks = [c.detach().cpu().float().numpy() for c in quantizer.codebooks]
    norms = [np.linalg.norm(c, axis=1).astype(np.float32) for c in codebooks]
    ema_sizes = ema_dead = None
    if quantizer.has_ema:
        ema_sizes = [c.detach().cpu().float().numpy() for c in quantizer.cluster_size]
        ema_dead = [quantizer.ema_dead_codes(i).cpu().numpy() for i in range(quantizer.n_q)]
    return Session(checkpoint=Path(checkpoint), features=[Path(f) for f in features], quantizer=quantizer,
                   source=source, total_frames=total, codebooks=codebooks, norms=norms,
                   ema_sizes=ema_sizes, ema_dead=ema_dead)


def audit_stream(cancel: threading.Event, session: Session, device: str = "auto",
                 interval: float = SNAPSHOT_INTERVAL) -> Iterator[Snapshot]:
    """Yield a `Snapshot` at most every `interval` s while the audit runs, and a complete one last.

    The snapshot is built here, off the GUI thread, from the live accumulator (nothing else touches
    it while this generator is suspended), so the GUI thread only draws.
    """
    dev = resolve_device(device)
    sources = [str(p) for p in session.source.files]
    last = 0.0
    progress = None
    for progress in iter_audit(session.quantizer, session.source, dev):
        if cancel.is_set():
            break
        now = time.perf_counter()
        if now - last >= interval:
            snap = _snapshot(session, progress, complete=False, device=str(dev), sources=sources)
            last = time.perf_counter()
            # A snapshot of a huge quantizer (K = 65,536 x 8 layers) takes tens of ms of GIL-holding
            # list building: never spend more than ~1/4 of the time on them.
            interval = max(interval, 4 * (last - now))
            yield snap
    if progress is None:
        raise CancelledError("no frames in the feature files")
    done = not cancel.is_set() and progress.frames_done >= (progress.frames_total or 0)
    final = _snapshot(session, progress, complete=done, device=str(dev), sources=sources, cancelled=not done)
    if done:
        final.verdicts, final.diagnosis_error = diagnose_safely(final, session)
    yield final


def diagnose_safely(snapshot: Snapshot, session: Session) -> tuple[list | None, str]:
    """The verdicts `rvq-viewer audit` prints and writes; a failing rule costs the verdicts, not the audit."""
    try:
        from ..diagnosis import diagnose
        return diagnose(snapshot.result, session.quantizer), ""
    except Exception as exc:  # noqa: BLE001 - shown as a note; the numbers stay
        return None, f"diagnosis failed: {type(exc).__name__}: {exc}"


def _snapshot(session, progress, complete, device, sources, cancelled=False) -> Snapshot:
    acc = progress.accumulator
    result = build_result(acc, session.quantizer, complete=complete, sources=sources)
    return Snapshot(result=result, counts=[layer.counts.copy() for layer in acc.layers],
                    frames_done=progress.frames_done, frames_total=progress.frames_total,
                    elapsed=progress.elapsed, complete=complete, device=device, cancelled=cancelled)


# --- dead codes -------------------------------------------------------------------------------------

def nearest_rows(cancel: threading.Event, queries: np.ndarray, table: np.ndarray,
                 exclude: np.ndarray | None = None, block: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Index into `table` of the nearest row for each query row, and its Euclidean distance.

    `exclude[i]` (>= 0) is a table row query i may not pick: itself, when a query is also in the table.
    """
    if len(table) == 0 or len(queries) == 0 or (len(table) == 1 and exclude is not None and (exclude >= 0).all()):
        return np.full(len(queries), -1, dtype=np.int64), np.full(len(queries), np.nan, dtype=np.float32)
    q = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
    t = torch.from_numpy(np.ascontiguousarray(table, dtype=np.float32))
    t_sq = t.pow(2).sum(1)
    index = np.empty(len(q), dtype=np.int64)
    dist = np.empty(len(q), dtype=np.float32)
    for start in range(0, len(q), block):
        _check(cancel)
        rows = q[start:start + block]
        d2 = torch.addmm(t_sq.unsqueeze(0), rows, t.t(), beta=1.0, alpha=-2.0) + rows.pow(2).sum(1, keepdim=True)
        if exclude is not None:
            ex = torch.from_numpy(exclude[start:start + block])
            hit = (ex >= 0).nonzero().flatten()
            d2[hit, ex[hit]] = float("inf")
        best, arg = d2.min(dim=1)
        index[start:start + block] = arg.numpy()
        dist[start:start + block] = best.clamp(min=0).sqrt().numpy()
    return index, dist


def dead_code_table(cancel: threading.Event, session: Session, layer: int, counts: np.ndarray | None,
                    complete: bool) -> DeadCodeTable:
    """Codes of `layer` unused on the features or EMA-dead, each with its nearest live code.

    "Live" means used on the features; with no audit data (`counts` None or all zero) nothing is
    called unused, and live means not EMA-dead.
    """
    codebook = session.codebooks[layer]
    k = len(codebook)
    if counts is None or counts.sum() == 0:
        counts = np.zeros(k, dtype=np.int64)
        unused = np.zeros(k, dtype=bool)
    else:
        unused = counts == 0
    ema_dead = np.zeros(k, dtype=bool)
    if session.ema_dead is not None:
        ema_dead[session.ema_dead[layer]] = True
    live = ~unused if unused.any() or counts.sum() > 0 else ~ema_dead
    codes = np.flatnonzero(unused | ema_dead)
    live_idx = np.flatnonzero(live)
    position = np.full(k, -1, dtype=np.int64)        # row of each live code in the live table
    position[live_idx] = np.arange(live_idx.size)
    nn, dist = nearest_rows(cancel, codebook[codes], codebook[live_idx], exclude=position[codes])
    neighbour = np.where(nn >= 0, live_idx[np.clip(nn, 0, None)] if live_idx.size else -1, -1)
    return DeadCodeTable(layer=layer, codes=codes, unused=unused[codes], ema_dead=ema_dead[codes],
                         counts=counts[codes], ema_size=None if session.ema_sizes is None
                         else session.ema_sizes[layer][codes], norm=session.norms[layer][codes],
                         neighbour=neighbour.astype(np.int64), distance=dist, complete=complete,
                         live_count=int(live_idx.size))


# --- centroid map geometry ----------------------------------------------------------------------------

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
    coords = pca_2d(points)
    _check(cancel)
    return MapGeometry((tuple(layers), "pca"), layer_ids, code_ids, coords, "pca", cKDTree(coords),
                       seconds=time.perf_counter() - t0)


def umap_geometry(cancel: threading.Event, service, session: Session, layers: list[int],
                  params, pca: MapGeometry | None = None) -> MapGeometry:
    """UMAP through the child-process service (cache first); blocks this worker thread."""
    from scipy.spatial import cKDTree
    points, layer_ids, code_ids = map_points(session, layers)
    init = pca.coords if pca is not None and len(pca.coords) == len(points) else None
    emb = service.embed(points, params, cancelled=cancel.is_set, init=init)
    _check(cancel)
    note = "cached" if emb.cached else f"{emb.seconds:.1f} s"
    return MapGeometry((tuple(layers), "umap"), layer_ids, code_ids, emb.coords, emb.method,
                       cKDTree(emb.coords), note=note, seconds=emb.seconds)


# --- opening --------------------------------------------------------------------------------------------

@dataclass
class Opened:
    session: Session
    note: str = ""


def open_job(cancel: threading.Event, checkpoint: Path | None, features: list[Path] | None,
             paths: list[Path] | None, current: Session | None, chunk_frames: int) -> Opened:
    """What File ▸ Open, drag and drop and the command line all do, off the GUI thread.

    `paths` (a drop) are sorted into checkpoint and features first. A checkpoint with `features`
    None keeps the current features when they fit it; features with no checkpoint go to the open one.
    """
    quantizer = None
    if paths:
        checkpoint, features, quantizer = split_paths(cancel, paths, current is not None)
        features = features or None
    if checkpoint is None:
        if current is None:
            raise LoadError("open a quantizer checkpoint first (Ctrl+O)")
        checkpoint, quantizer = current.checkpoint, current.quantizer
    note = ""
    if features is None:
        keep = list(current.features) if current is not None else []
        quantizer = quantizer or load_quantizer(checkpoint)
        try:
            return Opened(load_session(cancel, checkpoint, keep, chunk_frames, quantizer))
        except LoadError as exc:
            note = f"the open features do not fit this checkpoint ({exc.reason}); open features for it"
            return Opened(load_session(cancel, checkpoint, [], chunk_frames, quantizer), note)
    return Opened(load_session(cancel, checkpoint, features, chunk_frames, quantizer), note)
