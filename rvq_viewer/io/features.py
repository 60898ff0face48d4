"""Feature files streamed as chunks of frames, never all in memory at once.

Accepted: `.npy` (memory-mapped), `.pt`/`.pth` (torch zip files are memory-mapped too), `.npz` and
`.safetensors` (one array at a time), and folders of them. Arrays are [T, D], [D, T], [B, D, T] or
[B, T, D]; the layout is found from the quantizer's dimension, and `layout` settles ambiguous shapes.
Each sequence (a file, or one item of a batch) is cut into chunks at multiples of `frame_stride`, so a
quantizer that merges frames (GPT-SoVITS's stride-2 projection) sees whole pairs.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..errors import LoadError
from .containers import check_readable

EXTENSIONS = (".npy", ".pt", ".pth", ".npz", ".safetensors")
LAYOUTS = ("TD", "DT", "BDT", "BTD")


@dataclass
class Chunk:
    path: Path
    frames: torch.Tensor   # [n, D] float32
    sequence: int          # index of the sequence within the whole source


def list_feature_files(paths: list[str | Path]) -> list[Path]:
    """Expand folders (recursively, sorted, following no symlinked folders so loops cannot hang us)."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = []
            for root, dirs, names in os.walk(path, followlinks=False):
                dirs.sort()
                found.extend(Path(root) / n for n in sorted(names) if n.endswith(EXTENSIONS))
            if not found:
                raise LoadError(f"no feature files ({', '.join(EXTENSIONS)}) in this folder", path)
            files.extend(found)
        else:
            check_readable(path)
            if not path.name.endswith(EXTENSIONS):
                raise LoadError(f"not a feature file: expected one of {', '.join(EXTENSIONS)}", path)
            files.append(path)
    if not files:
        raise LoadError("no feature files given")
    return files


def open_arrays(path: Path, key: str | None = None) -> list[tuple[str, object]]:
    """The arrays of a file as (name, lazily readable array) pairs, without reading their data."""
    check_readable(path)
    suffix = path.suffix
    try:
        if suffix == ".npy":
            return [("", np.load(path, mmap_mode="r", allow_pickle=False))]
        if suffix == ".npz":
            archive = np.load(path, allow_pickle=False)
            names = [key] if key else archive.files
            return [(n, _NpzMember(archive, n)) for n in names]
        if suffix == ".safetensors":
            from safetensors import safe_open
            handle = safe_open(str(path), framework="pt")
            names = [key] if key else list(handle.keys())
            return [(n, _SafetensorsMember(handle, n)) for n in names]
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=_is_zip(path))
    except LoadError:
        raise
    except KeyError:
        raise LoadError(f"no array named {key!r} in the file", path) from None
    except Exception as exc:  # numpy, zipfile, safetensors and torch each raise their own types
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        if "allow_pickle" in reason or "Unsupported global" in reason:
            reason = "refused: the file holds pickled Python objects, not plain arrays"
        raise LoadError(f"cannot read features: {reason}", path) from None
    return _tensors_in(obj, path, key)


def _is_zip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == b"PK"


def _tensors_in(obj, path: Path, key: str | None) -> list[tuple[str, object]]:
    if isinstance(obj, torch.Tensor):
        return [("", obj)]
    if isinstance(obj, dict):
        items = [(str(k), v) for k, v in obj.items() if isinstance(v, torch.Tensor)]
        if key is not None:
            items = [(k, v) for k, v in items if k == key]
        if items:
            return items
    raise LoadError("no feature array in the file" + (f" named {key!r}" if key else ""), path)


class _NpzMember:
    def __init__(self, archive, name):
        self.archive, self.name = archive, name
        self.shape = _npz_shape(archive, name)

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self.archive[self.name], dtype=dtype)


def _npz_shape(archive, name) -> tuple:
    with archive.zip.open(f"{name}.npy") as fh:
        version = np.lib.format.read_magic(fh)
        shape, _, _ = np.lib.format._read_array_header(fh, version)
    return shape


class _SafetensorsMember:
    def __init__(self, handle, name):
        self.handle, self.name = handle, name
        self.shape = tuple(handle.get_slice(name).get_shape())

    def __getitem__(self, index):
        return self.handle.get_slice(self.name)[index]


def infer_layout(shape: tuple, dim: int, layout: str | None, path: Path) -> str:
    """Which axis holds the feature dimension; an ambiguous shape needs `layout`."""
    if layout is not None:
        if layout not in LAYOUTS:
            raise LoadError(f"unknown layout {layout!r} (use one of {', '.join(LAYOUTS)})", path)
        expected = {"TD": (2, -1), "DT": (2, 0), "BDT": (3, 1), "BTD": (3, 2)}[layout]
        if len(shape) != expected[0] or shape[expected[1]] != dim:
            raise LoadError(f"shape {tuple(shape)} does not fit layout {layout} with D={dim}", path)
        return layout
    if len(shape) == 2:
        candidates = [name for name, axis in (("TD", 1), ("DT", 0)) if shape[axis] == dim]
    elif len(shape) == 3:
        candidates = [name for name, axis in (("BDT", 1), ("BTD", 2)) if shape[axis] == dim]
    else:
        raise LoadError(f"features have shape {tuple(shape)}: expected [T, D], [D, T] or [B, D, T]", path)
    if not candidates:
        raise LoadError(f"features of shape {tuple(shape)} have no axis of the quantizer's dimension {dim}", path)
    if len(candidates) > 1:
        raise LoadError(f"shape {tuple(shape)} is ambiguous for D={dim}: pass --layout "
                        f"({' or '.join(candidates)})", path)
    return candidates[0]


def _sequences(array, layout: str) -> Iterator[tuple[object, bool]]:
    """Yield (array, transposed) per sequence; `transposed` means frames are along the last axis."""
    if layout in ("TD", "DT"):
        yield array, layout == "DT"
    else:
        for b in range(array.shape[0]):
            yield _Item(array, b), layout == "BDT"


class _Item:
    """One batch item of a 3-D array, read lazily."""

    def __init__(self, array, index):
        self.array, self.index = array, index
        self.shape = tuple(array.shape[1:])

    def __getitem__(self, sl):
        if isinstance(sl, tuple):
            return self.array[(self.index, *sl)]
        return self.array[self.index, sl]


def _read_block(array, start: int, stop: int, transposed: bool) -> torch.Tensor:
    block = array[:, start:stop] if transposed else array[start:stop]
    if not isinstance(block, torch.Tensor):
        block = torch.from_numpy(np.array(block, dtype=np.float32, copy=True))
    block = block.float()
    return block.t() if transposed else block


class FeatureSource:
    """Feature files for one quantizer input dimension, streamed as `Chunk`s of at most `chunk_frames`."""

    def __init__(self, paths: list[str | Path], dim: int, layout: str | None = None,
                 chunk_frames: int = 16384, frame_stride: int = 1, key: str | None = None):
        self.files = list_feature_files(paths)
        self.dim = dim
        self.layout = layout
        self.frame_stride = max(1, frame_stride)
        self.chunk_frames = max(self.frame_stride, chunk_frames - chunk_frames % self.frame_stride)
        self.key = key

    def _arrays(self, path: Path):
        for name, array in open_arrays(path, self.key):
            shape = tuple(array.shape)
            layout = infer_layout(shape, self.dim, self.layout, path)
            yield name, array, layout

    def total_frames(self) -> int:
        """Frames in all files, from their headers only (used for progress)."""
        total = 0
        for path in self.files:
            for _, array, layout in self._arrays(path):
                shape = array.shape
                per = shape[-1] if layout in ("DT", "BDT") else shape[-2]
                total += per * (shape[0] if len(shape) == 3 else 1)
        return int(total)

    def __iter__(self) -> Iterator[Chunk]:
        sequence = 0
        for path in self.files:
            for name, array, layout in self._arrays(path):
                for seq, transposed in _sequences(array, layout):
                    length = seq.shape[-1] if transposed else seq.shape[0]
                    for start in range(0, length, self.chunk_frames):
                        stop = min(length, start + self.chunk_frames)
                        try:
                            frames = _read_block(seq, start, stop, transposed)
                        except (OSError, ValueError, RuntimeError, zipfile.BadZipFile, EOFError) as exc:
                            raise LoadError(f"cannot read features: {str(exc).splitlines()[0][:200]}", path) from None
                        if not torch.isfinite(frames).all():
                            bad = int((~torch.isfinite(frames).all(dim=1)).nonzero()[0]) + start
                            where = f"{name}: " if name else ""
                            raise LoadError(f"{where}frame {bad} holds NaN or infinite values", path)
                        yield Chunk(path, frames, sequence)
                    sequence += 1
