"""Arrays read from their file block by block with `pread`, never through a memory map.

A memory-mapped file that another program truncates kills the reader with SIGBUS at the first touch
of a page past the new end, and Python cannot catch that. A `FileArray` knows where its bytes lie in
the file (offset, shape, strides, element type) and reads each block with a system call: a file that
shrank gives a short read, a one-line `LoadError` naming it, and a file replaced by another (renamed
over it) is told by its inode. Reads go through the page cache, so nothing counts in the process's
resident memory once a block is used.

- `npy_array(path)`: the array of a `.npy` file (its header read by numpy's own parser);
- `safetensors_arrays(path)`: every tensor of a `.safetensors` file, from its JSON header;
- `torch_zip_array(tensor, path, identity)`: a tensor of a torch zip archive loaded with
  map_location="meta", which carries its file offset (None where torch does not give it).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import struct
from pathlib import Path

import numpy as np
import torch

from ..errors import LoadError
from . import limits

# Safetensors element types (the format's names) and the largest header its own reader accepts.
_SAFETENSORS_DTYPES = {
    "BOOL": torch.bool, "U8": torch.uint8, "I8": torch.int8, "I16": torch.int16, "I32": torch.int32,
    "I64": torch.int64, "F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32,
    "F64": torch.float64, "C64": torch.complex64,
    **{name: getattr(torch, attr) for name, attr in (("U16", "uint16"), ("U32", "uint32"), ("U64", "uint64"),
                                                      ("F8_E4M3", "float8_e4m3fn"), ("F8_E5M2", "float8_e5m2"))
       if hasattr(torch, attr)},
}
_SAFETENSORS_MAX_HEADER = 100_000_000
# A block whose bytes are spread over more than this many times its own size is read row by row.
_SPARSE_FACTOR = 2
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)


def file_identity(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


class FileArray:
    """An array at byte `offset` of `path`, with `shape` and `strides` in elements. Indexing it with
    ints and slices reads that block and returns it as a tensor of the array's element type."""

    def __init__(self, path: Path, offset: int, shape, strides, dtype, identity: tuple[int, int]):
        self.path, self.offset, self.identity = Path(path), int(offset), identity
        self.shape, self.strides = tuple(int(s) for s in shape), tuple(int(s) for s in strides)
        self.dtype = dtype                       # a numpy dtype (any byte order) or a torch dtype
        self.itemsize = dtype.itemsize

    @property
    def nbytes_spanned(self) -> int:
        """Bytes from `offset` to the end of the array's last element."""
        if 0 in self.shape:
            return 0
        return (1 + sum((n - 1) * s for n, s in zip(self.shape, self.strides))) * self.itemsize

    def read(self) -> torch.Tensor:
        return self[()]

    def __getitem__(self, index) -> torch.Tensor:
        first, shape, strides = _view(self.shape, self.strides, index if isinstance(index, tuple) else (index,))
        if 0 in shape:
            return self._decode(bytearray()).reshape(shape)
        with self._opened() as fd:
            return self._gather(fd, first, shape, strides)

    @contextlib.contextmanager
    def _opened(self):
        try:
            fd = os.open(self.path, _OPEN_FLAGS)
        except OSError as exc:
            raise LoadError(f"cannot read features: {(exc.strerror or str(exc)).lower()}", self.path) from None
        try:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != self.identity:
                raise LoadError("was replaced by another file while being read", self.path)
            yield fd
        finally:
            os.close(fd)

    def _gather(self, fd: int, first: int, shape: tuple, strides: tuple) -> torch.Tensor:
        count = math.prod(shape)
        span = 1 + sum((n - 1) * s for n, s in zip(shape, strides))
        if len(shape) <= 1 or span <= _SPARSE_FACTOR * count:
            data = _pread(fd, self.offset + first * self.itemsize, span * self.itemsize, self.path)
            return self._decode(data).as_strided(shape, strides).contiguous()
        axis = max(range(len(shape)), key=lambda k: strides[k])     # rows far apart: one read each
        rest_shape, rest_strides = shape[:axis] + shape[axis + 1:], strides[:axis] + strides[axis + 1:]
        rows = [self._gather(fd, first + i * strides[axis], rest_shape, rest_strides) for i in range(shape[axis])]
        return torch.stack(rows, dim=axis)

    def _decode(self, data: bytearray) -> torch.Tensor:
        if isinstance(self.dtype, torch.dtype):
            return torch.frombuffer(data, dtype=self.dtype) if data else torch.empty(0, dtype=self.dtype)
        array = np.frombuffer(data, dtype=self.dtype)
        if self.dtype.kind == "f" and self.dtype.itemsize > 8:     # long double: torch has no such type
            array = array.astype(np.float64)
        elif not self.dtype.isnative:
            array = array.astype(self.dtype.newbyteorder("="))
        return torch.from_numpy(np.ascontiguousarray(array))


def _view(shape: tuple, strides: tuple, index: tuple) -> tuple[int, tuple, tuple]:
    """(first element, shape, strides) of `index` (ints and slices, numpy's basic indexing)."""
    if len(index) > len(shape):
        raise IndexError(f"{len(index)} indices for an array of {len(shape)} dimensions")
    first, out_shape, out_strides = 0, [], []
    for axis, (size, stride) in enumerate(zip(shape, strides)):
        item = index[axis] if axis < len(index) else slice(None)
        if isinstance(item, slice):
            start, stop, step = item.indices(size)
            if step < 1:
                raise IndexError("negative steps are not supported")
            out_shape.append(len(range(start, stop, step)))
            out_strides.append(stride * step)
            first += start * stride
        else:
            position = int(item) + (size if int(item) < 0 else 0)
            if not 0 <= position < size:
                raise IndexError(f"index {item} is out of range for an axis of {size}")
            first += position * stride
    return first, tuple(out_shape), tuple(out_strides)


_preadv = getattr(os, "preadv", None)


def _pread(fd: int, position: int, nbytes: int, path: Path) -> bytearray:
    """Exactly `nbytes` from `position`, or a LoadError saying the file shrank while being read."""
    data = bytearray(nbytes)
    view = memoryview(data)
    got = 0
    while got < nbytes:
        try:
            if _preadv is not None:
                n = _preadv(fd, [view[got:]], position + got)
            else:
                chunk = os.pread(fd, nbytes - got, position + got)
                view[got:got + len(chunk)] = chunk
                n = len(chunk)
        except OSError as exc:
            raise LoadError(f"cannot read features: {(exc.strerror or str(exc)).lower()}", path) from None
        if n == 0:
            size = os.fstat(fd).st_size
            raise LoadError(f"changed while being read: it is now {size:,} bytes and its data runs to byte "
                            f"{position + nbytes:,} (truncated by another program?)", path)
        got += n
    return data


def _check_fits(array: FileArray, size: int, path: Path) -> FileArray:
    end = array.offset + array.nbytes_spanned
    if end > size:
        raise LoadError(f"file is truncated: its data runs to byte {end:,} of a {size:,}-byte file", path)
    return array


# --- the formats ----------------------------------------------------------------------------------------
def npy_array(path: Path) -> FileArray:
    """The array of a .npy file, its data left on disk. Object arrays are refused (they are pickles)."""
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        reader = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                  else np.lib.format.read_array_header_2_0)
        shape, fortran, dtype = reader(fh)
        offset = fh.tell()
        st = os.fstat(fh.fileno())
    if dtype.hasobject:
        raise LoadError("refused: the array holds Python objects (a pickle), not features", path)
    strides = _contiguous_strides(shape[::-1])[::-1] if fortran else _contiguous_strides(shape)
    array = FileArray(path, offset, shape, strides, dtype, (st.st_dev, st.st_ino))
    return _check_fits(array, st.st_size, path)


def _contiguous_strides(shape) -> tuple[int, ...]:
    strides, step = [], 1
    for size in reversed(tuple(shape)):
        strides.append(step)
        step *= max(1, int(size))
    return tuple(reversed(strides))


def safetensors_arrays(path: Path) -> list[tuple[str, FileArray]]:
    """Every tensor of a .safetensors file as (name, FileArray), in name order, after checking the
    header: known types, offsets that tile the data without gaps or overlaps, sizes that match."""
    try:
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            head = fh.read(8)
            if len(head) < 8:
                raise LoadError("cannot read the safetensors file: shorter than its 8-byte header length", path)
            (length,) = struct.unpack("<Q", head)
            if length > _SAFETENSORS_MAX_HEADER or 8 + length > st.st_size:
                raise LoadError(f"cannot read the safetensors file: a header of {length:,} bytes does not fit "
                                f"the {st.st_size:,}-byte file", path)
            header = json.loads(fh.read(length).decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise LoadError("cannot read the safetensors file: its header is not valid JSON", path) from None
    except OSError as exc:
        raise LoadError(f"cannot read the safetensors file: {(exc.strerror or str(exc)).lower()}", path) from None
    if not isinstance(header, dict):
        raise LoadError("cannot read the safetensors file: its header is not a JSON object", path)
    header.pop("__metadata__", None)
    if len(header) > limits.MAX_TENSORS:
        raise LoadError(f"refused: the file holds more than {limits.MAX_TENSORS:,} tensors", path)
    identity, base, entries = (st.st_dev, st.st_ino), 8 + length, []
    for name, info in header.items():
        dtype, shape, begin, end = _safetensors_entry(name, info, path)
        entries.append((begin, end, name, FileArray(path, base + begin, shape, _contiguous_strides(shape),
                                                    dtype, identity)))
    position = 0
    for begin, end, name, _ in sorted(entries, key=lambda e: (e[0], e[1])):
        if begin != position:
            raise LoadError(f"cannot read the safetensors file: tensor {name!r} does not start where the "
                            "previous one ends (overlapping or missing data)", path)
        position = end
    if base + position > st.st_size:
        raise LoadError(f"file is truncated: its data runs to byte {base + position:,} of a "
                        f"{st.st_size:,}-byte file", path)
    return sorted(((name, array) for _, _, name, array in entries), key=lambda item: item[0])


def _safetensors_entry(name: str, info, path: Path):
    def bad(what: str):
        return LoadError(f"cannot read the safetensors file: tensor {name!r}: {what}", path)
    if not isinstance(info, dict):
        raise bad("its entry is not an object")
    dtype = _SAFETENSORS_DTYPES.get(info.get("dtype"))
    if dtype is None:
        raise bad(f"unsupported dtype {str(info.get('dtype'))[:20]!r}")
    shape, offsets = info.get("shape"), info.get("data_offsets")
    if not isinstance(shape, list) or not all(type(s) is int and s >= 0 for s in shape):
        raise bad("its shape is not a list of sizes")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)
            and 0 <= offsets[0] <= offsets[1]):
        raise bad("its data_offsets are not [begin, end]")
    if math.prod(shape) * dtype.itemsize != offsets[1] - offsets[0]:
        raise bad(f"shape {shape} does not match its {offsets[1] - offsets[0]:,} bytes")
    return dtype, shape, offsets[0], offsets[1]


def torch_zip_array(tensor: torch.Tensor, path: Path, identity: tuple[int, int], size: int) -> FileArray | None:
    """Where a tensor loaded with map_location="meta" from a torch zip archive lies in the file, or
    None when torch did not record its storage's offset."""
    offset = getattr(tensor.untyped_storage(), "_checkpoint_offset", None)
    if not isinstance(offset, int) or tensor.layout != torch.strided:
        return None
    array = FileArray(path, offset + tensor.storage_offset() * tensor.element_size(), tuple(tensor.shape),
                      tensor.stride(), tensor.dtype, identity)
    return _check_fits(array, size, path)


def torch_zip_is_plain(path: Path) -> bool:
    """A torch zip archive whose tensor records are stored uncompressed and little-endian, so that a
    tensor's bytes are at its storage's offset in the file as they are in memory."""
    import sys
    import zipfile
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            order = [m for m in members if m.filename.endswith("/byteorder")]
            if order and archive.read(order[0]).strip() != sys.byteorder.encode():
                return False
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, RuntimeError, NotImplementedError):
        return False
    return all(m.compress_type == zipfile.ZIP_STORED for m in members if "/data/" in m.filename)
