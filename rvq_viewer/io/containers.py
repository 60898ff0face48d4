"""Reading untrusted checkpoint containers without running code from them.

Pickles go through `torch.load(weights_only=True)`, whose unpickler builds tensors and plain containers
only. The single exception is GPT-SoVITS's `utils.HParams`, mapped to a dict subclass that merely
stores the pickled attributes. Everything else arrives as a `LoadError` naming the file.
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import LoadError, UnsafeFileError

# GPT-SoVITS v3/v4 LoRA and v2Pro files overwrite the zip magic "PK" with these two bytes.
SOVITS_MAGICS = (b"03", b"04", b"05", b"06")
ZIP_MAGIC = b"PK"
NPY_MAGIC = b"\x93NUMPY"


class HParamsStandIn(dict):
    """Holds the attributes of a pickled GPT-SoVITS `utils.HParams` as dict items; runs nothing."""

    def __setstate__(self, state):
        if isinstance(state, dict):
            self.update(state)

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


ALLOWED_GLOBALS = [(HParamsStandIn, "utils.HParams"), (HParamsStandIn, "GPT_SoVITS.utils.HParams")]


def check_readable(path: Path) -> None:
    """Fail early, with one line, on the usual ways a path is not a readable file."""
    if not path.exists():
        raise LoadError("no such file", path)
    if path.is_dir():
        raise LoadError("is a folder, not a file", path)
    if not os.access(path, os.R_OK):
        raise LoadError("permission denied", path)
    if path.stat().st_size == 0:
        raise LoadError("file is empty (0 bytes)", path)


def read_container(path: str | Path) -> Any:
    """Load a checkpoint or array file into tensors and plain containers, chosen by its leading bytes."""
    path = Path(path)
    check_readable(path)
    with open(path, "rb") as fh:
        head = fh.read(8)
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    if head.startswith(NPY_MAGIC):
        return torch.from_numpy(np.array(_numpy_call(np.load, path)))
    if path.suffix == ".npz":
        return _read_npz(path)
    if head[:2] in SOVITS_MAGICS:
        # Restore the zip magic in memory, as GPT-SoVITS's own loader does.
        data = bytearray(path.read_bytes())
        data[:2] = ZIP_MAGIC
        return _torch_load(io.BytesIO(bytes(data)), path)
    if head.startswith(ZIP_MAGIC) or head[:1] == b"\x80":
        return _torch_load(path, path)
    if _looks_like_safetensors(head, path):
        return _read_safetensors(path)
    raise LoadError("not a checkpoint: expected a PyTorch (.pt/.pth/.ckpt), safetensors, .npy or .npz file", path)


def _torch_load(source, path: Path) -> Any:
    try:
        with torch.serialization.safe_globals(ALLOWED_GLOBALS):
            return torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        message = str(exc)
        if "Unsupported global" in message or "Unsupported class" in message or "not an allowed global" in message:
            culprit = message.split("GLOBAL", 1)[-1].split(" was not")[0].strip() if "GLOBAL" in message else ""
            detail = f" ({culprit})" if culprit else ""
            raise UnsafeFileError(f"refused: the pickle asks to build an object that could run code{detail}; "
                                  "rvq-viewer loads tensors and plain data only", path) from None
        raise LoadError(f"corrupt or unsupported pickle: {_first_line(message)}", path) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, AttributeError, KeyError,
            IndexError, TypeError, UnicodeDecodeError, OverflowError, MemoryError) as exc:
        raise LoadError(f"cannot read the PyTorch file: {_first_line(str(exc)) or type(exc).__name__}", path) from None


def _looks_like_safetensors(head: bytes, path: Path) -> bool:
    if len(head) < 8:
        return False
    header_len = int.from_bytes(head, "little")
    return 0 < header_len < path.stat().st_size


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise LoadError(f"cannot read the safetensors file: {_first_line(str(exc))}", path) from None


def _read_npz(path: Path) -> dict[str, torch.Tensor]:
    archive = _numpy_call(np.load, path)
    try:
        return {name: torch.from_numpy(np.array(archive[name])) for name in archive.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise LoadError(f"cannot read the .npz archive: {_first_line(str(exc))}", path) from None


def _numpy_call(fn, path: Path, **kwargs):
    """Call a numpy loader with pickles refused, turning its errors into one-line LoadErrors."""
    try:
        return fn(path, allow_pickle=False, **kwargs)
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise UnsafeFileError("refused: the array holds Python objects (a pickle)", path) from None
        raise LoadError(f"cannot read the array: {_first_line(str(exc))}", path) from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise LoadError(f"cannot read the array: {_first_line(str(exc))}", path) from None


def _first_line(message: str) -> str:
    return message.strip().splitlines()[0][:200] if message.strip() else ""
