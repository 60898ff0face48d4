"""Plain codebook tensors: [n_q, K, D] (or one [K, D] table) in .npy, .npz, .pt or .safetensors.

No EMA statistics and no projection: the EnCodec rule (Euclidean lookup, residual minus codeword).
"""

from __future__ import annotations

import torch

from ...quant import Quantizer
from ...errors import LoadError
from .base import Checkpoint, Format, check_codebook

NAMES = ("", "codebooks", "codebook", "embed", "embeddings", "arr_0")


def _table(ckpt: Checkpoint) -> tuple[str, torch.Tensor] | None:
    for name in NAMES:
        value = ckpt.state.get(name)
        if value is not None and value.ndim in (2, 3):
            return name, value
    if len(ckpt.state) == 1:
        name, value = next(iter(ckpt.state.items()))
        if value.ndim in (2, 3):
            return name, value
    return None


def _detect(ckpt: Checkpoint) -> bool:
    return _table(ckpt) is not None


def _build(ckpt: Checkpoint) -> Quantizer:
    name, table = _table(ckpt)
    if not table.dtype.is_floating_point:
        raise LoadError(f"codebook tensor {name or '(file)'} has dtype {table.dtype}, expected floats", ckpt.path)
    tables = [table] if table.ndim == 2 else list(table.unbind(0))
    if not tables:
        raise LoadError("codebook tensor has no layers (n_q = 0)", ckpt.path)
    for i, t in enumerate(tables):
        check_codebook(t, i, ckpt.path)
    return Quantizer(format="codebooks", codebooks=tables, source=str(ckpt.path),
                     notes=["plain codebook tensor: no EMA statistics"])


PLAIN = Format("codebooks", "a plain codebook tensor [n_q, K, D] or [K, D]", _detect, _build)
