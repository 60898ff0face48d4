"""A corpus cut into shards that audit, one by one and anywhere, into exactly the local audit's chunks.

    shards = plan_shards(source, target_frames=1 << 20)   # from the files' headers only
    source = ShardSource(shards[3])                        # on a worker: that shard's frames, chunked

A shard is a few `Segment`s (a file, one of its arrays, one sequence of it, a range of rows) and the
reading options; it is small and pickles as paths and numbers. Shards are cut only where the local
audit's chunks start, so a shard's chunks are the local chunks (and the engine's pieces inside them
the local pieces):
- packed reading (frame_stride 1: short sequences joined into full chunks) is the concatenation of
  every sequence cut every `chunk_frames` frames, so shards start at multiples of `chunk_frames` of
  that concatenation and may cut a file anywhere;
- unpacked reading chunks each sequence from its own start, so a shard starts at a sequence's start or
  at a multiple of `chunk_frames` inside it (a multiple of the quantizer's frame_stride too).
That matters beyond the counts: the input moments take every MOMENT_STRIDE-th row of each piece.

`ShardSource` is a `FeatureSource` over the shard's files whose arrays are windows on the shard's rows,
so the frames are read, converted and checked by the same code as every local audit.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import LoadError
from ..io import FeatureSource
from ..io.containers import check_readable


@dataclass(frozen=True)
class Reading:
    """How the shard's files are read: the local `FeatureSource`'s options."""

    dim: int
    layout: str | None
    key: str | None
    chunk_frames: int
    frame_stride: int
    pack: bool

    @classmethod
    def of(cls, source: FeatureSource) -> "Reading":
        return cls(source.dim, source.layout, source.key, source.chunk_frames, source.frame_stride, source.pack)

    @property
    def packed(self) -> bool:
        return self.pack and self.frame_stride == 1


@dataclass(frozen=True)
class Segment:
    """Rows [start, stop) of one sequence: array `name` of the `file`-th entry of the corpus's file list
    (`item`: the batch item of a 3-D array, None for a 2-D one)."""

    file: int
    path: str
    name: str
    item: int | None
    start: int
    stop: int

    @property
    def frames(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class Shard:
    index: int
    segments: tuple[Segment, ...]
    reading: Reading
    named: frozenset[str] = frozenset()     # paths the user named (an error there fails, as locally)

    @property
    def frames(self) -> int:
        return sum(s.frames for s in self.segments)

    @property
    def paths(self) -> list[str]:
        return list(dict.fromkeys(s.path for s in self.segments))

    def describe(self) -> str:
        first, last = self.segments[0], self.segments[-1]
        where = first.path if first.path == last.path else f"{first.path} .. {last.path}"
        return f"shard {self.index} ({self.frames} frames of {where})"


@dataclass
class ShardReport:
    """How a sharded audit went: the shards, which files a worker skipped, where it ran."""

    count: int
    frames_planned: int
    executor: str
    skipped: list[tuple[int, str, str]] = field(default_factory=list)   # (shard, path, reason)
    merged: int = 0                                                      # shards in the result
    workers: dict[int, str] = field(default_factory=dict)                # shard -> the worker it counts from

    def warnings(self) -> list[str]:
        """One line per file a worker skipped, with the shards it was in."""
        shards: dict[tuple[str, str], list[int]] = {}
        for index, path, reason in self.skipped:
            shards.setdefault((path, reason), []).append(index)
        return [f"{path}: skipped: {reason} (shard{'s' if len(ix) > 1 else ''} {', '.join(map(str, ix))})"
                for (path, reason), ix in shards.items()]


# --- planning (on the client, from headers) ----------------------------------------------------------
def sequences(source: FeatureSource):
    """(file position, path, array name, item, length) of every sequence the local audit reads, in its
    order; files the source skips are left out, as it leaves them out."""
    for position, path in enumerate(source.files):
        for name, array, layout in source._arrays(path):   # noqa: SLF001 - the source's own header walk
            shape = tuple(array.shape)
            length = int(shape[-1] if layout in ("DT", "BDT") else shape[-2])
            if len(shape) == 2:
                yield position, path, name, None, length
            else:
                for item in range(shape[0]):
                    yield position, path, name, item, length


def plan_shards(source: FeatureSource, target_frames: int, named: set[Path] | None = None,
                found: list[tuple] | None = None) -> list[Shard]:
    """Shards of about `target_frames` frames (rounded up to whole chunks), cut where local chunks start.
    `named`: the paths the user named directly; `found`: `sequences(source)` when already listed."""
    reading = Reading.of(source)
    chunk = reading.chunk_frames
    target = max(chunk, math.ceil(target_frames / chunk) * chunk)
    named_paths = frozenset(str(p) for p in (named or ()))
    shards: list[Shard] = []
    current: list[Segment] = []
    filled = 0

    def close() -> None:
        nonlocal current, filled
        if current:
            shards.append(Shard(len(shards), tuple(current), reading, named_paths & {s.path for s in current}))
        current, filled = [], 0

    for position, path, name, item, length in (found if found is not None else sequences(source)):
        row = 0
        while row < length:
            take = min(length - row, target - filled)
            if not reading.packed and row + take < length:
                # Unpacked chunks start at multiples of chunk_frames of each sequence: cut there only.
                take = min(length - row, math.ceil(take / chunk) * chunk)
            current.append(Segment(position, str(path), name, item, row, row + take))
            filled += take
            row += take
            if filled >= target:
                close()
    close()
    return shards


# --- reading (on a worker) ---------------------------------------------------------------------------
class _Window:
    """Rows [start, stop) of one sequence of an array, shown as a 2-D array of that many frames."""

    def __init__(self, array, layout: str, item: int | None, start: int, stop: int):
        self.array, self.item, self.start = array, item, start
        self.frames_last = layout in ("DT", "BDT")
        shape = tuple(array.shape)
        if stop > shape[-1 if self.frames_last else -2]:
            raise ValueError("window past the end of the sequence")
        dim = shape[-2] if self.frames_last else shape[-1]
        self.shape = (dim, stop - start) if self.frames_last else (stop - start, dim)
        self.dtype = array.dtype

    def __getitem__(self, index):
        rows = index[1] if self.frames_last else index
        rows = slice(self.start + rows.start, self.start + rows.stop)
        lead = () if self.item is None else (self.item,)
        if self.frames_last:
            return self.array[(*lead, slice(None), rows)]
        return self.array[(*lead, rows)] if lead else self.array[rows]

    def rows(self, start: int, stop: int) -> torch.Tensor:
        """Frames [start, stop) of the window as float32 [n, D]."""
        block = self[(slice(None), slice(start, stop))] if self.frames_last else self[slice(start, stop)]
        block = block if isinstance(block, torch.Tensor) else torch.from_numpy(np.array(block, dtype=np.float32))
        block = block.float()
        return block.t() if self.frames_last else block

    @property
    def length(self) -> int:
        return self.shape[-1 if self.frames_last else 0]


def open_shard(shard: Shard, where: str = "this worker") -> tuple["ShardSource | None", list[tuple[Path, str]]]:
    """The shard's source (None when none of its files can be used) and the files skipped on the way.

    A file that does not exist here is an error: the corpus must be on a filesystem every worker reads.
    One that exists but cannot be used is skipped, unless the user named it, as the local audit does."""
    groups: list[list[Segment]] = []
    for segment in shard.segments:               # consecutive segments of one entry of the file list
        if groups and groups[-1][0].file == segment.file:
            groups[-1].append(segment)
        else:
            groups.append([segment])
    skipped: list[tuple[Path, str]] = []
    usable = []
    for group in groups:
        path = Path(group[0].path)
        if not os.path.lexists(path):
            raise LoadError(f"not found on {where}: the feature files must be on a filesystem every worker "
                            "reads, at the same path", path)
        try:
            check_readable(path)
        except LoadError as exc:
            if group[0].path in shard.named:
                raise
            skipped.append((path, exc.reason))
            continue
        usable.append(group)
    if not usable:
        return None, skipped
    source = ShardSource(shard, usable)
    source.skipped[:0] = skipped
    return source, source.skipped


class ShardSource(FeatureSource):
    """The frames of one shard, chunked as the whole corpus is chunked locally (build it with `open_shard`).

    Its arrays are windows on the shard's rows; the base class reads, converts and checks them."""

    def __init__(self, shard: Shard, groups: list[list[Segment]]):
        r = shard.reading
        super().__init__([Path(g[0].path) for g in groups], r.dim, layout=r.layout, chunk_frames=r.chunk_frames,
                         frame_stride=r.frame_stride, key=r.key, pack=r.pack)
        self.shard, self.groups = shard, groups
        self._visit = 0

    def __iter__(self):
        self._visit = 0
        yield from super().__iter__()

    def _arrays(self, path: Path):
        """Windows on the file's arrays for this visit's segments (the base class visits files in order)."""
        group = self.groups[self._visit]
        self._visit += 1
        return self.windows(group, path)

    def windows(self, group: list[Segment], path: Path) -> list[tuple[str, _Window, str]]:
        try:
            arrays = {name: (array, layout) for name, array, layout in super()._arrays(path)}
        except LoadError as exc:
            if group[0].path in self.shard.named:
                raise
            self.skipped.append((path, exc.reason))
            return []
        out = []
        for segment in group:
            if segment.name not in arrays:
                raise LoadError(f"array {segment.name!r} is gone: the file changed after the audit was planned", path)
            array, layout = arrays[segment.name]
            try:
                window = _Window(array, layout, segment.item, segment.start, segment.stop)
            except ValueError:
                raise LoadError("the file is shorter than when the audit was planned", path) from None
            out.append((segment.name, window, "DT" if window.frames_last else "TD"))
        return out

    def first_bad_frame(self, path: str) -> tuple[str, int] | None:
        """(array name, frame) of the first NaN or infinite frame of `path` in this shard, counted from
        the sequence's start as the local audit counts (the base class counts from the window's)."""
        for group in self.groups:
            if group[0].path != path:
                continue
            for name, window, _ in self.windows(group, Path(path)):
                for start in range(0, window.length, self.chunk_frames):
                    finite = torch.isfinite(window.rows(start, min(window.length, start + self.chunk_frames)))
                    finite = finite.all(dim=1)
                    if not bool(finite.all()):
                        return name, window.start + start + int((~finite).nonzero()[0])
        return None
