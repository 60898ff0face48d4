"""How much a file may make rvq-viewer build, and why each limit sits where it does.

The limits are sized against real checkpoints: the largest codec checkpoints (an audiocraft or Moshi
training checkpoint with its optimizer state) hold a few thousand tensors, nest their containers
fewer than 20 deep, reference each object about once and store every tensor's bytes once (tied
weights twice). Each limit leaves an order of magnitude above that; a file beyond one is refused
with one line naming it, before it is expanded (see `pickle_scan.py` and `check_tensors`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import LoadError

# Containers nested inside each other. A tuple nested a million deep crashes CPython when hashed;
# anything past Python's recursion limit (1000) breaks repr, json and every walk.
MAX_NESTING = 100
# Tensors built from one file (real: a few thousand; 100,000 views of one storage is an attack).
MAX_TENSORS = 20_000
# Visits a full walk of the unpickled object makes, counting every reference to a shared object:
# allowed up to MAX_EXPANDED, or MAX_EXPANSION_RATIO times the objects the pickle creates.
MAX_EXPANDED = 2_000_000
MAX_EXPANSION_RATIO = 8
EXPANSION_CAP = 10 ** 12            # counting stops here (a bomb's count is astronomical)
# Containers one pickle creates (bounds the scan's own memory; real: ~10 per tensor).
MAX_PICKLE_OBJECTS = 2_000_000
# Longest dict key (state-dict keys are a few hundred characters at most).
MAX_KEY_CHARS = 4096
# Largest pickle part of a file (real: ~200 bytes per tensor, a few MB at most).
MAX_PICKLE_BYTES = 256 << 20
# Bytes the tensors may claim against the bytes the file stores for them: views share storage (tied
# weights), but a stride-0 view claiming 2^34 frames of a 4 KB storage is an expansion bomb.
MAX_TENSOR_EXPANSION = 8
TENSOR_CLAIM_FLOOR = 256 << 20
# Uncompressed size a zip archive may declare against its size on disk (torch writes stored members).
MAX_ZIP_EXPANSION = 32
ZIP_FLOOR = 1 << 30


def _human(nbytes: int) -> str:
    for unit, size in (("TB", 1 << 40), ("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if nbytes >= size:
            return f"{nbytes / size:.1f} {unit}"
    return f"{nbytes} bytes"


def tensors_in(obj) -> list[torch.Tensor]:
    """Every distinct tensor in nested containers (each container walked once, so shared ones cost
    nothing; call only on objects whose pickle `pickle_scan` has measured)."""
    found: dict[int, torch.Tensor] = {}
    seen: set[int] = set()
    todo = [obj]
    while todo:
        item = todo.pop()
        if isinstance(item, torch.Tensor):
            found.setdefault(id(item), item)
            continue
        if not isinstance(item, (dict, list, tuple, set, frozenset)) or id(item) in seen:
            continue
        seen.add(id(item))
        todo.extend(item.values() if isinstance(item, dict) else item)
    return list(found.values())


def check_tensors(obj, path: Path, meta_ok: bool = False) -> None:
    """Refuse tensors without data (saved from the meta device, unless `meta_ok`) and tensors that claim
    far more bytes than their storages hold."""
    claimed = stored = 0
    storages: set[int] = set()
    for tensor in tensors_in(obj):
        if tensor.is_meta and not meta_ok:
            raise LoadError(f"holds a tensor of shape {list(tensor.shape)} with no data (it was saved from "
                            "the meta device)", path)
        if tensor.layout != torch.strided:
            continue
        claimed += tensor.numel() * tensor.element_size()
        storage = tensor.untyped_storage()
        if storage._cdata not in storages:
            storages.add(storage._cdata)
            stored += storage.nbytes()
    if claimed > MAX_TENSOR_EXPANSION * stored + TENSOR_CLAIM_FLOOR:
        raise LoadError(f"refused: its tensors claim {_human(claimed)} from {_human(stored)} of stored data "
                        "(views that repeat the same bytes, e.g. stride 0: an expansion bomb)", path)
