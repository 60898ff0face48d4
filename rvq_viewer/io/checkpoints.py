"""`load_quantizer`: any supported checkpoint file -> a `Quantizer`, with the format found from its keys."""

from __future__ import annotations

from pathlib import Path

from ..core import Quantizer
from ..errors import LoadError
from .containers import read_container
from .formats import FORMATS, Checkpoint, Format, unwrap


def read_checkpoint(path: str | Path, **options) -> Checkpoint:
    """Read the file safely and locate its model state (no format decided yet)."""
    path = Path(path)
    ckpt = unwrap(read_container(path), path)
    ckpt.options.update(options)
    return ckpt


def detect_format(ckpt: Checkpoint, forced: str | None = None) -> Format:
    if forced:
        for fmt in FORMATS:
            if fmt.name == forced:
                return fmt
        names = ", ".join(f.name for f in FORMATS)
        raise LoadError(f"unknown format {forced!r} (known: {names})", ckpt.path)
    for fmt in FORMATS:
        if fmt.detect(ckpt):
            return fmt
    sample = ", ".join(sorted(ckpt.state)[:3])
    raise LoadError(f"no quantizer recognised among {len(ckpt.state)} tensors (e.g. {sample})", ckpt.path)


def load_quantizer(path: str | Path, format: str | None = None, n_q: int | None = None,
                   skip_transform: bool = False) -> Quantizer:
    """Load the quantizer in `path`.

    `format` forces a family instead of detecting it; `n_q` keeps only the first n_q layers;
    `skip_transform` takes features as already projected (e.g. GPT-SoVITS features after ssl_proj).
    """
    ckpt = read_checkpoint(path, skip_transform=skip_transform)
    quantizer = detect_format(ckpt, format).build(ckpt)
    if n_q is not None:
        if not 1 <= n_q <= quantizer.n_q:
            raise LoadError(f"n_q={n_q} asked, the quantizer has {quantizer.n_q} layers", path)
        quantizer.truncate(n_q)
    return quantizer
