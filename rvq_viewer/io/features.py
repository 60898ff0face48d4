"""Feature files streamed as chunks of frames, never all in memory at once.

Accepted: `.npy` (read block by block, so a file larger than RAM streams), `.pt`/`.pth` (tensors or
dicts of tensors; torch zip files are read block by block too), `.npz` (one member at a time) and
`.safetensors` (block by block), folders of them (recursively, sorted), and `.txt` lists of them (one path per line,
relative to the list, `#` comments). Arrays are [T, D], [D, T], [B, D, T] or [B, T, D]; the layout is
found from the quantizer's dimension, and `layout` settles ambiguous shapes. In files holding several
arrays, `key` picks one by name; without it every array of the right dimension is a sequence.

Each sequence (a file, or one item of a batch) is cut into chunks at multiples of `frame_stride`, so a
quantizer that merges frames (GPT-SoVITS's stride-2 projection, SNAC's pooled levels) sees whole
groups. With `pack=True` and `frame_stride` 1, short sequences are joined into full chunks, so ten
thousand small files cost a few chunks rather than ten thousand.

Large files are never memory-mapped: `file_arrays.FileArray` reads each block with pread, so a file
that another program truncates mid-audit is a one-line error naming it, not a SIGBUS.

Errors. A file named directly that cannot be used raises a one-line `LoadError` naming it. A file found
in a folder or a list that cannot be read, or does not fit (wrong dimension, not floats, a broken
symlink, a symlink loop, no permission), is skipped: `FeatureSource.skipped` holds each
(path, reason) and `warnings()` the lines to show. When nothing usable is left it is an error. A file
that was read fine once and fails later (truncated or replaced meanwhile) is an error, never a skip. A NaN
or infinite frame is always an error naming the file and the frame.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..errors import LoadError, RvqViewerError, UnsafeFileError
from .containers import ZIP_MAGIC, check_readable, load_measured, read_head
from .file_arrays import file_identity, npy_array, safetensors_arrays, torch_zip_array, torch_zip_is_plain

EXTENSIONS = (".npy", ".pt", ".pth", ".npz", ".safetensors")
LIST_EXTENSIONS = (".txt",)
LAYOUTS = ("TD", "DT", "BDT", "BTD")
# .npy files below this size are read whole (cheaper than a memory map for many small files).
SMALL_NPY_BYTES = 4 << 20
_MAX_LIST_LINES = 10_000_000


@dataclass
class Chunk:
    path: Path
    frames: torch.Tensor   # [n, D] float32
    sequence: int          # index of the sequence within the whole source


# --- finding the files --------------------------------------------------------------------------------
def list_feature_files(paths: list[str | Path], skipped: list[tuple[Path, str]] | None = None) -> list[Path]:
    """Expand folders (recursively, sorted) and `.txt` lists into feature files.

    Symlinked folders are followed once each (a symlink loop cannot hang the walk). Entries of a folder
    that cannot be read are appended to `skipped` as (path, reason) when it is given, else raise.
    """
    files, _ = _expand(paths, skipped)
    return files


def _expand(paths, skipped) -> tuple[list[Path], set[Path]]:
    files: list[Path] = []
    explicit: set[Path] = set()
    if isinstance(paths, (str, Path)):
        paths = [paths]
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files.extend(_walk(path, skipped))
        elif path.suffix.lower() in LIST_EXTENSIONS:
            files.extend(_read_list(path, skipped))
        else:
            check_readable(path)
            if not path.name.lower().endswith(EXTENSIONS):
                raise LoadError(f"not a feature file: expected one of {', '.join(EXTENSIONS)}, "
                                "a folder, or a .txt list", path)
            files.append(path)
            explicit.add(path)
    if not files:
        raise LoadError("no feature files given")
    return files, explicit


def _walk(folder: Path, skipped) -> list[Path]:
    found: list[Path] = []
    seen: set[str] = set()
    errors: list[OSError] = []
    for root, dirs, names in os.walk(folder, followlinks=True, onerror=errors.append):
        real = os.path.realpath(root)
        if real in seen:           # a symlink back into a folder already walked: do not loop
            dirs[:] = []
            continue
        seen.add(real)
        dirs.sort()
        dirs[:] = [d for d in dirs if os.path.realpath(os.path.join(root, d)) not in seen]
        for name in sorted(names):
            if not name.lower().endswith(EXTENSIONS):
                continue
            candidate = Path(root) / name
            try:
                check_readable(candidate)
            except LoadError as exc:
                _skip(skipped, candidate, exc.reason, exc)
                continue
            found.append(candidate)
    for exc in errors:
        where = Path(exc.filename) if getattr(exc, "filename", None) else folder
        _skip(skipped, where, f"cannot list folder: {(exc.strerror or str(exc)).lower()}",
              LoadError(f"cannot list folder: {exc.strerror or exc}", where))
    if not found:
        raise LoadError(f"no feature files ({', '.join(EXTENSIONS)}) in this folder"
                        + (f" ({len(skipped)} unreadable)" if skipped else ""), folder)
    return found


def _read_list(list_path: Path, skipped) -> list[Path]:
    """A text file of feature paths: one per line, relative to the list's folder, `#` comments."""
    check_readable(list_path)
    try:
        with open(list_path, "r", encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except UnicodeDecodeError:
        raise LoadError("feature list is not UTF-8 text", list_path) from None
    except OSError as exc:
        raise LoadError(f"cannot read the feature list: {(exc.strerror or str(exc)).lower()}", list_path) from None
    if len(lines) > _MAX_LIST_LINES:
        raise LoadError(f"feature list has more than {_MAX_LIST_LINES} lines", list_path)
    out: list[Path] = []
    for number, line in enumerate(lines, start=1):
        entry = line.split("#", 1)[0].strip() if not line.lstrip().startswith("#") else ""
        if not entry:
            continue
        target = Path(entry).expanduser()
        if not target.is_absolute():
            target = list_path.parent / target
        if target.suffix.lower() in LIST_EXTENSIONS:
            raise LoadError(f"line {number}: {entry}: lists inside lists are not supported", list_path)
        if target.is_dir():
            out.extend(_walk(target, skipped))
            continue
        if not os.path.lexists(target):
            raise LoadError(f"line {number}: {entry}: no such file", list_path)
        if not target.name.lower().endswith(EXTENSIONS):
            raise LoadError(f"line {number}: {entry}: not a feature file ({', '.join(EXTENSIONS)})", list_path)
        try:
            check_readable(target)
        except LoadError as exc:
            _skip(skipped, target, exc.reason, exc)
            continue
        out.append(target)
    if not out:
        raise LoadError("feature list names no usable feature files", list_path)
    return out


def _skip(skipped, path: Path, reason: str, exc: LoadError) -> None:
    if skipped is None:
        raise exc
    skipped.append((path, reason))


# --- opening arrays lazily --------------------------------------------------------------------------
def open_arrays(path: Path, key: str | None = None) -> list[tuple[str, object]]:
    """The arrays of a file as (name, lazily readable array) pairs, without reading their data."""
    check_readable(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return [("", _open_npy(path))]
        if suffix == ".npz":
            return _select(_open_npz(path), key, path)
        if suffix == ".safetensors":
            return _select(safetensors_arrays(path), key, path)
        items = _open_torch(path)
    except LoadError:
        raise
    except Exception as exc:  # numpy, zipfile, safetensors and torch each raise their own types
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        if "allow_pickle" in reason:
            reason = "refused: the file holds pickled Python objects, not plain arrays"
        raise LoadError(f"cannot read features: {reason}", path) from None
    return _select(items, key, path)


def _open_npy(path: Path):
    """A small .npy read whole; a large one as a `FileArray` (read block by block, never mapped)."""
    array = npy_array(path)
    if path.stat().st_size <= SMALL_NPY_BYTES:
        return np.load(path, allow_pickle=False)
    return array


def _open_torch(path: Path) -> list[tuple[str, object]]:
    """The tensors of a .pt file. A torch zip archive is loaded without its data (map_location="meta")
    and each tensor read from the file block by block; where torch gives no file offsets (older
    versions, compressed or big-endian archives, tensors with no data) the file is read whole."""
    if read_head(path, 2) == ZIP_MAGIC and torch_zip_is_plain(path):
        identity, size = file_identity(path), path.stat().st_size
        items = _tensors_in(load_measured(path, path, map_location="meta"))
        arrays = [(name, torch_zip_array(tensor, path, identity, size)) for name, tensor in items]
        if all(array is not None for _, array in arrays):
            return arrays
    return _tensors_in(load_measured(path, path))


def _read_header(fh, version):
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(fh)
    return np.lib.format.read_array_header_2_0(fh)


def _refuse_objects(dtype, path: Path) -> None:
    if np.dtype(dtype).hasobject:
        raise UnsafeFileError("refused: the array holds Python objects (a pickle), not features", path)


def _open_npz(path: Path) -> list[tuple[str, object]]:
    archive = np.load(path, allow_pickle=False)
    return [(name, _NpzMember(path, archive, name)) for name in archive.files]


def _tensors_in(obj) -> list[tuple[str, object]]:
    if isinstance(obj, torch.Tensor):
        return [("", obj)]
    if isinstance(obj, dict):
        return [(str(k), v) for k, v in obj.items() if isinstance(v, torch.Tensor)]
    return []


def _select(items: list[tuple[str, object]], key: str | None, path: Path) -> list[tuple[str, object]]:
    if key is not None:
        chosen = [(n, a) for n, a in items if n == key]
        if not chosen:
            names = ", ".join(n or "(unnamed)" for n, _ in items[:8]) or "none"
            raise LoadError(f"no array named {key!r} in the file (it holds: {names})", path)
        return chosen
    if not items:
        raise LoadError("no feature array in the file", path)
    return items


class _NpzMember:
    """One member of an .npz archive: its shape from the header, its data read whole on first use."""

    def __init__(self, path, archive, name):
        self.path, self.archive, self.name = path, archive, name
        self.shape, self.dtype = _npz_header(archive, name, path)
        self._data = None

    def __getitem__(self, index):
        if self._data is None:
            self._data = self.archive[self.name]
        return self._data[index]


def _npz_header(archive, name, path: Path) -> tuple[tuple, np.dtype]:
    with archive.zip.open(f"{name}.npy") as fh:
        shape, _, dtype = _read_header(fh, np.lib.format.read_magic(fh))
    _refuse_objects(dtype, path)
    return shape, dtype


def _is_float(array) -> bool:
    dtype = getattr(array, "dtype", None)
    if isinstance(dtype, torch.dtype):
        return dtype.is_floating_point
    if isinstance(dtype, str):       # safetensors names: F16, BF16, F32, F64...
        return dtype.upper().startswith(("F", "BF"))
    try:
        return np.issubdtype(np.dtype(dtype), np.floating)
    except TypeError:
        return False


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


# --- the source ---------------------------------------------------------------------------------------
class FeatureSource:
    """Feature files for one quantizer input dimension, streamed as `Chunk`s of at most `chunk_frames`."""

    def __init__(self, paths: list[str | Path], dim: int, layout: str | None = None,
                 chunk_frames: int = 16384, frame_stride: int = 1, key: str | None = None,
                 pack: bool = False):
        """`pack` joins short sequences into full chunks (many small files then cost a few chunks, not
        one each). It applies only with `frame_stride` 1, where every supported quantizer encodes each
        frame on its own; a packed chunk's `path` and `sequence` are those of its first frames."""
        self.pack = bool(pack)
        self.skipped: list[tuple[Path, str]] = []
        self.files, self._explicit = _expand(paths, self.skipped)
        self.dim = int(dim)
        if layout is not None and layout not in LAYOUTS:
            raise LoadError(f"unknown layout {layout!r} (use one of {', '.join(LAYOUTS)})")
        self.layout = layout
        self.frame_stride = max(1, int(frame_stride))
        self.chunk_frames = max(self.frame_stride, int(chunk_frames) - int(chunk_frames) % self.frame_stride)
        self.key = key
        self._skipped_paths = {p for p, _ in self.skipped}
        self._opened: set[Path] = set()      # files read fine once: failing later, they changed
        self._n_files = len(set(self.files))
        self._file_skips = 0

    def warnings(self) -> list[str]:
        """One line per skipped file: 'path: skipped: reason'."""
        return [f"{path}: skipped: {reason}" for path, reason in self.skipped]

    def _arrays(self, path: Path):
        """(name, array, layout) for each usable array; a folder/list file that cannot be used is skipped.

        In a file of several arrays read without `key`, arrays with no axis of the quantizer's dimension
        (lengths, labels...) are left out; the file fails only when none fits."""
        if path in self._skipped_paths:
            return []
        try:
            items = open_arrays(path, self.key)
            several = self.key is None and len(items) > 1
            out, unfit = [], []
            for name, array in items:
                shape = tuple(array.shape)
                if several and (len(shape) not in (2, 3) or self.dim not in shape):
                    unfit.append(f"{name} {list(shape)}")
                    continue
                layout = infer_layout(shape, self.dim, self.layout, path)
                if not _is_float(array):
                    where = f"array {name!r} " if name else ""
                    raise LoadError(f"{where}holds {getattr(array, 'dtype', '?')} values, not float features",
                                    path)
                out.append((name, array, layout))
            if not out:
                raise LoadError(f"no array has the quantizer's dimension {self.dim} "
                                f"({', '.join(unfit[:6])}); pass --key to pick one", path)
            self._opened.add(path)
            return out
        except LoadError as exc:
            if path in self._opened:
                raise LoadError(f"changed while being read ({exc.reason})", path) from None
            if path in self._explicit:
                raise
            self.skipped.append((path, exc.reason))
            self._skipped_paths.add(path)
            self._file_skips += 1
            if self._file_skips == self._n_files:
                first = self.skipped[0]
                raise LoadError(f"no usable feature files: all {len(self._skipped_paths)} were skipped "
                                f"(first: {first[0]}: {first[1]})") from None
            return []

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
        if self.pack and self.frame_stride == 1:
            yield from self._packed(self._chunks())
        else:
            yield from self._chunks()

    def _chunks(self) -> Iterator[Chunk]:
        sequence = 0
        for path in self.files:
            for name, array, layout in self._arrays(path):
                for seq, transposed in _sequences(array, layout):
                    length = seq.shape[-1] if transposed else seq.shape[0]
                    for start in range(0, length, self.chunk_frames):
                        stop = min(length, start + self.chunk_frames)
                        try:
                            frames = _read_block(seq, start, stop, transposed)
                        except RvqViewerError:
                            raise
                        except Exception as exc:
                            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                                raise
                            text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
                            raise LoadError(f"cannot read features: {text}", path) from None
                        finite = torch.isfinite(frames).all(dim=1)
                        if not bool(finite.all()):
                            bad = int((~finite).nonzero()[0]) + start
                            where = f"{name}: " if name else ""
                            raise LoadError(f"{where}frame {bad} holds NaN or infinite values", path)
                        yield Chunk(path, frames, sequence)
                    sequence += 1

    def _packed(self, chunks: Iterator[Chunk]) -> Iterator[Chunk]:
        pending: list[Chunk] = []
        rows = 0
        for chunk in chunks:
            if not pending and len(chunk.frames) >= self.chunk_frames:
                yield chunk
                continue
            pending.append(chunk)
            rows += len(chunk.frames)
            while rows >= self.chunk_frames:
                joined = torch.cat([c.frames for c in pending])
                yield Chunk(pending[0].path, joined[: self.chunk_frames], pending[0].sequence)
                rest = joined[self.chunk_frames:]
                pending = [Chunk(chunk.path, rest, chunk.sequence)] if len(rest) else []
                rows = len(rest)
        if pending:
            yield Chunk(pending[0].path, torch.cat([c.frames for c in pending]), pending[0].sequence)
