"""Opening: what File > Open, drag and drop and the command line do, off the GUI thread."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import CancelledError, LoadError, RvqViewerError
from ..io.formats.pretrained import is_model_folder
from ..pipeline import AuditSpec, load, load_checkpoint, open_features
from .session import Session

FEATURE_ONLY = (".npy", ".npz")


def check(cancel: threading.Event) -> None:
    if cancel.is_set():
        raise CancelledError("cancelled")


def split_paths(cancel: threading.Event, paths: list[str | Path], have_checkpoint: bool):
    """Dropped or given paths -> (checkpoint or None, feature paths, loaded quantizer or None).

    Folders are features, unless they hold model weights (a save_pretrained or Hugging Face cache
    folder). The first candidate that loads as a quantizer checkpoint is the checkpoint (model folders,
    then files other than .npy/.npz, then those); the rest are features. If none loads and a checkpoint
    is already open, all paths are features for it.
    """
    paths = [Path(p) for p in paths]
    files = [p for p in paths if not p.is_dir()]
    candidates = [p for p in paths if is_model_folder(p)] + \
                 [p for p in files if p.suffix.lower() not in FEATURE_ONLY] + \
                 [p for p in files if p.suffix.lower() in FEATURE_ONLY]
    first_error = None
    for path in candidates:
        check(cancel)
        try:
            quantizer = load_checkpoint(path)
        except RvqViewerError as exc:
            first_error = first_error or exc
            continue
        return path, [p for p in paths if p != path], quantizer
    if have_checkpoint:
        return None, paths, None
    if first_error is not None:
        raise first_error
    raise LoadError("no quantizer checkpoint among the dropped files (open one with Ctrl+O)")


def load_session(cancel: threading.Event, spec: AuditSpec, quantizer=None) -> Session:
    """Load the spec's checkpoint and check its feature files (headers only). Raises RvqViewerError."""
    quantizer = quantizer or load(spec)
    check(cancel)
    source, total = None, 0
    if spec.features:
        source = open_features(spec, quantizer)
        total = source.total_frames()
    check(cancel)
    # What the maps place: the stored rows, or an implicit grid's cells through its project_out.
    codebooks = [quantizer.display_codebook(i).detach().cpu().float().numpy() for i in range(quantizer.n_q)]
    norms = [np.linalg.norm(c, axis=1).astype(np.float32) for c in codebooks]
    ema_sizes = ema_dead = None
    if quantizer.has_ema:
        ema_sizes = [c.detach().cpu().float().numpy() for c in quantizer.cluster_size]
        ema_dead = [quantizer.ema_dead_codes(i).cpu().numpy() for i in range(quantizer.n_q)]
    return Session(spec=spec, quantizer=quantizer, source=source, total_frames=total, codebooks=codebooks,
                   norms=norms, ema_sizes=ema_sizes, ema_dead=ema_dead)


@dataclass
class Opened:
    session: Session
    note: str = ""


def open_job(cancel: threading.Event, checkpoint: Path | None, features: list[Path] | None,
             paths: list[Path] | None, current: Session | None, template: AuditSpec | None = None) -> Opened:
    """Open a checkpoint and/or features. `paths` (a drop) are sorted into checkpoint and features
    first. A checkpoint with `features` None keeps the current features when they fit it; features with
    no checkpoint go to the open one. `template` carries the reading options (device, chunks...)."""
    quantizer = None
    if paths:
        checkpoint, features, quantizer = split_paths(cancel, paths, current is not None)
        features = features or None
    if checkpoint is None:
        if current is None:
            raise LoadError("open a quantizer checkpoint first (Ctrl+O)")
        checkpoint, quantizer = current.checkpoint, current.quantizer
    base = template or (current.spec if current is not None else AuditSpec(checkpoint))
    if features is None:
        keep = tuple(current.features) if current is not None else ()
        spec = base.replace(checkpoint=Path(checkpoint), features=keep)
        quantizer = quantizer or load(spec)
        try:
            return Opened(load_session(cancel, spec, quantizer))
        except LoadError as exc:
            note = f"the open features do not fit this checkpoint ({exc.reason}); open features for it"
            return Opened(load_session(cancel, spec.replace(features=()), quantizer), note)
    spec = base.replace(checkpoint=Path(checkpoint), features=tuple(Path(f) for f in features))
    return Opened(load_session(cancel, spec, quantizer))
