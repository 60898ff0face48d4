"""Measuring a pickle from its opcodes before anything unpickles it.

`torch.load(weights_only=True)` builds only tensors and plain containers, yet plain data can still kill
or stall the process that builds it or walks it afterwards:

- nesting: a tuple nested a million deep crashes CPython when it is hashed (as a dict key, or by the
  allowed `set`): the C code recurses without a limit. Lists and dicts nested that deep make every
  later walk (repr, json, our own) fail with RecursionError.
- sharing: a pickle may reference one object many times through its memo. 64 lists of 64 references,
  six levels deep, take 5 KB and a walk of them visits 64^6 objects ("billion laughs").
- count: 100,000 tensors, all views of one small storage, each become a quantizer layer.

`check_pickle(data, path)` follows the opcodes that torch's restricted unpickler accepts, keeping of
each container only which objects it holds (no values), and refuses, with one line naming the file,
whatever goes beyond the limits in `limits.py`. Opcodes that unpickler does not accept are refused
here too, so it never runs an opcode this scan did not follow.
"""

from __future__ import annotations

import io
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import LoadError
from . import limits

# Opcodes (pickle protocol 2, the ones torch's weights_only unpickler executes).
_MARK, _STOP = 0x28, 0x2E
_BININT, _BININT1, _BININT2, _LONG1 = 0x4A, 0x4B, 0x4D, 0x8A
_NONE, _NEWTRUE, _NEWFALSE, _BINFLOAT = 0x4E, 0x88, 0x89, 0x47
_BINUNICODE, _SHORT_BINSTRING = 0x58, 0x55
_EMPTY_TUPLE, _EMPTY_LIST, _EMPTY_DICT, _EMPTY_SET = 0x29, 0x5D, 0x7D, 0x8F
_TUPLE, _TUPLE1, _TUPLE2, _TUPLE3 = 0x74, 0x85, 0x86, 0x87
_APPEND, _APPENDS, _SETITEM, _SETITEMS = 0x61, 0x65, 0x73, 0x75
_GLOBAL, _REDUCE, _NEWOBJ, _BUILD, _BINPERSID = 0x63, 0x52, 0x81, 0x62, 0x51
_BINGET, _LONG_BINGET, _BINPUT, _LONG_BINPUT, _PROTO = 0x68, 0x6A, 0x71, 0x72, 0x80

_SCALAR_BYTES = {_BININT1: 1, _BININT2: 2, _BININT: 4, _BINFLOAT: 8, _NONE: 0, _NEWTRUE: 0, _NEWFALSE: 0}
_SMALL_TUPLES = {_EMPTY_TUPLE: 0, _TUPLE1: 1, _TUPLE2: 2, _TUPLE3: 3}

_LEAF = -1          # a scalar, a string or a global: no children, expands to itself
_LONG_KEY = -2      # a string too long to be a dict key
_LENGTH = struct.Struct("<I")

# Functions whose call builds one tensor (torch._utils._rebuild_parameter wraps one already counted).
_TENSOR_BUILDERS = ("torch._utils._rebuild_", "torch._tensor._rebuild_from_type")


@dataclass
class PickleMeasure:
    """What one pickle would build: `objects` created, `expanded` visits of a full walk, `depth`."""

    objects: int
    expanded: int
    depth: int
    tensors: int
    end: int            # offset just past its STOP opcode


class _Truncated(Exception):
    """The pickle runs past the bytes at hand."""


class _Corrupt(Exception):
    """Opcodes that torch's unpickler would refuse too (unknown, or not building a consistent object)."""


# A legacy (pre-zip) torch file is five pickles in a row (magic number, protocol, system info, the
# object, its storage keys) followed by raw storage bytes.
_LEGACY_PICKLES = 5


def check_torch_file(source: Path | bytes, path: Path) -> int:
    """Measure every pickle `torch.load` would run on `source` (a path, or a file's bytes) and refuse
    beyond the limits; returns how many tensors they build."""
    try:
        if isinstance(source, (bytes, bytearray)):
            return _check_opened(io.BytesIO(source), len(source), path)
        with open(source, "rb") as fh:
            return _check_opened(fh, fh.seek(0, io.SEEK_END), path)
    except OSError as exc:
        raise LoadError(f"cannot read the file: {(exc.strerror or str(exc)).lower()}", path) from None


def _check_opened(fh, size: int, path: Path) -> int:
    fh.seek(0)
    if fh.read(2) == b"PK":
        return _check_zip(fh, size, path)
    fh.seek(0)
    window = 1 << 20
    while True:
        data = fh.read(window)
        try:
            return _check_stream(data, path, complete=len(data) < window)
        except _Truncated:
            if window >= limits.MAX_PICKLE_BYTES:
                raise LoadError(f"refused: its pickles take more than {limits.MAX_PICKLE_BYTES >> 20} MB",
                                path) from None
            window *= 4
            fh.seek(0)


def _check_stream(data: bytes, path: Path, complete: bool) -> int:
    """The pickles at the start of a legacy torch file (or of a plain pickle)."""
    tensors, start = 0, 0
    for _ in range(_LEGACY_PICKLES):
        if start >= len(data) and complete:
            break
        try:
            measure = check_pickle(data, path, start, raise_truncated=not complete, after_first=start > 0)
        except _Corrupt:
            break   # raw storage bytes, or a plain pickle's trailing bytes: torch fails or stops there
        tensors += measure.tensors
        start = measure.end
    return tensors


def _check_zip(fh, size: int, path: Path) -> int:
    """Every `data.pkl` of a torch zip archive (any of them may be the one torch reads)."""
    try:
        archive = zipfile.ZipFile(fh)
        members = archive.infolist()
    except (zipfile.BadZipFile, ValueError, EOFError, OSError) as exc:
        raise LoadError(f"cannot read the PyTorch file: not a valid zip archive ({exc})", path) from None
    declared = sum(m.file_size for m in members)
    if declared > max(limits.ZIP_FLOOR, limits.MAX_ZIP_EXPANSION * size):
        raise LoadError(f"refused: the archive declares {declared:,} bytes uncompressed from {size:,} "
                        "(a zip bomb)", path)
    pickles = [m for m in members if m.filename == "data.pkl" or m.filename.endswith("/data.pkl")]
    if not pickles:
        raise LoadError("cannot read the PyTorch file: the zip archive holds no data.pkl (not a torch.save "
                        "file)", path)
    tensors = 0
    for member in pickles:
        if member.file_size > limits.MAX_PICKLE_BYTES:
            raise LoadError(f"refused: its pickle takes {member.file_size:,} bytes", path)
        try:
            with archive.open(member) as stream:
                data = stream.read(limits.MAX_PICKLE_BYTES + 1)
        except (zipfile.BadZipFile, ValueError, EOFError, OSError, RuntimeError, NotImplementedError) as exc:
            raise LoadError(f"cannot read the PyTorch file: {member.filename}: {exc}", path) from None
        tensors += check_pickle(data, path).tensors
    return tensors


def check_pickle(data: bytes, path: Path, start: int = 0, raise_truncated: bool = False,
                 after_first: bool = False) -> PickleMeasure:
    """Measure the pickle at `data[start:]` and refuse it (LoadError naming `path`) beyond the limits.
    With `raise_truncated`, a pickle running past the end of `data` raises _Truncated (read more);
    with `after_first`, a corrupt one raises _Corrupt (the caller stops there)."""
    try:
        measure = _Scan(data, start, path).run()
    except _Truncated:
        if raise_truncated:
            raise
        if after_first:
            raise _Corrupt from None
        raise LoadError("corrupt pickle: it ends before its STOP opcode (a truncated file?)", path) from None
    except (_Corrupt, IndexError, KeyError, struct.error) as exc:
        if after_first:
            raise _Corrupt from None
        detail = str(exc) if isinstance(exc, _Corrupt) else "its opcodes do not build a consistent object"
        raise LoadError(f"corrupt or unsupported pickle ({detail})", path) from None
    if measure.depth > limits.MAX_NESTING:
        raise LoadError(f"refused: the pickle nests containers {_count(measure.depth)} deep (the limit is "
                        f"{limits.MAX_NESTING}); real checkpoints nest a few levels", path)
    allowed = max(limits.MAX_EXPANDED, limits.MAX_EXPANSION_RATIO * measure.objects)
    if measure.expanded > allowed:
        raise LoadError(f"refused: the pickle references its {_count(measure.objects)} objects "
                        f"{_count(measure.expanded)} times (an expansion bomb; the limit is {_count(allowed)})",
                        path)
    return measure


def _count(n: int) -> str:
    return f"{n:,}" if n < limits.EXPANSION_CAP else f"more than {limits.EXPANSION_CAP:,}"


class _Scan:
    """One pass over the opcodes: a stack of node ids (or _LEAF), the memo, and each node's children.
    `tuple_depth[node]` is how deep tuples nest inside it (0 for other containers: hashing stops there)."""

    def __init__(self, data: bytes, pos: int, path: Path):
        self.data, self.pos, self.path = data, pos, path
        self.children: list[list[int]] = []
        self.tuple_depth: list[int] = []
        self.names: dict[int, str] = {}
        self.leaves = 0
        self.tensors = 0

    def node(self, items: list[int]) -> int:
        self.children.append(items)
        self.tuple_depth.append(0)
        if len(self.children) > limits.MAX_PICKLE_OBJECTS:
            raise LoadError(f"refused: the pickle builds more than {limits.MAX_PICKLE_OBJECTS:,} containers",
                            self.path)
        return len(self.children) - 1

    def tuple_node(self, items: list[int]) -> int:
        index = self.node(items)
        depth = 1 + max((self.tuple_depth[i] for i in items if i >= 0), default=0)
        if depth > limits.MAX_NESTING:
            # Refused at once: hashing such a tuple (a dict key, a set item) recurses in C.
            raise LoadError(f"refused: the pickle nests tuples more than {limits.MAX_NESTING} deep", self.path)
        self.tuple_depth[index] = depth
        return index

    def add_children(self, target: int, items: list[int]) -> None:
        if target < 0:
            raise _Corrupt("items added to something that is not a container")
        self.children[target].extend(items)

    def check_keys(self, keys) -> None:
        if _LONG_KEY in keys:
            raise LoadError(f"refused: the pickle has a dict key longer than {limits.MAX_KEY_CHARS:,} "
                            "characters", self.path)

    def run(self) -> PickleMeasure:
        data, pos, end = self.data, self.pos, len(self.data)
        stack: list[int] = []
        marks: list[list[int]] = []
        memo: dict[int, int] = {}
        leaf, unpack = _LEAF, _LENGTH.unpack_from
        while True:
            if pos >= end:
                raise _Truncated
            op = data[pos]
            pos += 1
            if op == _BINPUT or op == _BINGET:
                if pos >= end:
                    raise _Truncated
                if op == _BINPUT:
                    memo[data[pos]] = stack[-1]
                else:
                    stack.append(memo[data[pos]])
                pos += 1
            elif op == _LONG_BINPUT or op == _LONG_BINGET:
                if pos + 4 > end:
                    raise _Truncated
                if op == _LONG_BINPUT:
                    memo[unpack(data, pos)[0]] = stack[-1]
                else:
                    stack.append(memo[unpack(data, pos)[0]])
                pos += 4
            elif op == _MARK:
                marks.append(stack)
                stack = []
            elif op in _SCALAR_BYTES:
                pos += _SCALAR_BYTES[op]
                stack.append(leaf)
                self.leaves += 1
            elif op == _BINUNICODE:
                if pos + 4 > end:
                    raise _Truncated
                length = unpack(data, pos)[0]
                pos += 4 + length
                stack.append(_LONG_KEY if length > limits.MAX_KEY_CHARS else leaf)
                self.leaves += 1
            elif op == _SHORT_BINSTRING or op == _LONG1:
                if pos >= end:
                    raise _Truncated
                pos += 1 + data[pos]
                stack.append(leaf)
                self.leaves += 1
            elif op == _TUPLE:
                items = stack
                stack = marks.pop()
                stack.append(self.tuple_node(items))
            elif op in _SMALL_TUPLES:
                n = _SMALL_TUPLES[op]
                if len(stack) < n:
                    raise _Corrupt("a tuple of missing items")
                items = stack[len(stack) - n:]
                del stack[len(stack) - n:]
                stack.append(self.tuple_node(items))
            elif op == _EMPTY_LIST or op == _EMPTY_DICT or op == _EMPTY_SET:
                stack.append(self.node([]))
            elif op == _APPEND:
                item = stack.pop()
                self.add_children(stack[-1], [item])
            elif op == _APPENDS or op == _SETITEMS:
                items = stack
                stack = marks.pop()
                if op == _SETITEMS:
                    self.check_keys(items[0::2])
                self.add_children(stack[-1], items)
            elif op == _SETITEM:
                value, key = stack.pop(), stack.pop()
                self.check_keys((key,))
                self.add_children(stack[-1], [key, value])
            elif op == _GLOBAL:
                first = data.find(b"\n", pos)
                second = data.find(b"\n", first + 1) if first >= 0 else -1
                if second < 0:
                    raise _Truncated
                index = self.node([])
                self.names[index] = (data[pos:first] + b"." + data[first + 1:second]).decode("ascii", "replace")
                stack.append(index)
                pos = second + 1
            elif op == _REDUCE:
                args = stack.pop()
                func = stack[-1]
                name = self.names.get(func)
                if name is not None and name.startswith(_TENSOR_BUILDERS) and "_rebuild_parameter" not in name:
                    self.count_tensor()
                stack[-1] = self.node([func, args])
            elif op == _NEWOBJ:
                args = stack.pop()
                cls = stack.pop()
                stack.append(self.node([cls, args]))
            elif op == _BUILD:
                state = stack.pop()
                self.add_children(stack[-1], [state])
            elif op == _BINPERSID:
                stack[-1] = leaf
                self.leaves += 1
            elif op == _PROTO:
                pos += 1
            elif op == _STOP:
                root = stack.pop()
                self.pos = pos
                expanded, depth = self.walk(root)
                return PickleMeasure(len(self.children) + self.leaves, expanded, depth, self.tensors, pos)
            else:
                raise _Corrupt(f"opcode 0x{op:02x} at byte {pos - 1}: rvq-viewer reads the pickles "
                               "torch.save writes")

    def count_tensor(self) -> None:
        self.tensors += 1
        if self.tensors > limits.MAX_TENSORS:
            raise LoadError(f"refused: the file holds more than {limits.MAX_TENSORS:,} tensors (the largest "
                            "real codec checkpoints hold a few thousand)", self.path)

    def walk(self, root: int) -> tuple[int, int]:
        """(visits of a full walk from `root`, its nesting depth), each node's counted once; a reference
        back to a node being walked (a cycle) counts as one visit."""
        if root < 0:
            return 1, 0
        cap = limits.EXPANSION_CAP
        size = [0] * len(self.children)
        depth = [0] * len(self.children)
        state = bytearray(len(self.children))    # 0 new, 1 being walked, 2 done
        todo = [root]
        while todo:
            node = todo[-1]
            if state[node] == 0:
                state[node] = 1
                todo.extend(c for c in self.children[node] if c >= 0 and state[c] == 0)
                continue
            todo.pop()
            if state[node] == 2:
                continue
            total, deepest = 1, 0
            for child in self.children[node]:
                if child < 0 or state[child] == 1:
                    total += 1
                else:
                    total += size[child]
                    deepest = max(deepest, depth[child])
            size[node] = min(total, cap)
            depth[node] = deepest + 1
            state[node] = 2
        return size[root], depth[root]
