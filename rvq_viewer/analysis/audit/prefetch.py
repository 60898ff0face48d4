"""Reading ahead of the compute, and giving back the pages of memory-mapped feature files once read.

`prefetch(iterable, depth=2)` runs the iterable in a background thread and keeps up to `depth` items
ready, so reading the next chunk (an `.npy` memory-map read, a float conversion, the NaN check: all of
which release the GIL) overlaps encoding this one. An error raised by the iterable is raised again, with
its own type, message and traceback, in the thread that iterates; closing the prefetcher early (or
dropping it) stops the reader after its current item and closes the iterable in the reader's thread.
At exit (after Ctrl+C, say) `stop_readers` stops and waits for any reader still running.

`PageReleaser` keeps the resident memory of a long audit bounded: pages of a memory-mapped file count
in the process's resident set (RSS) for as long as they stay mapped, so streaming a 5 GB `.npy` would
end with 5 GB resident. Every `every_bytes` of frames read from a file, the read-only mappings of that
file are advised MADV_DONTNEED: the pages leave this process (they stay in the kernel's page cache and
come back on the next touch, unchanged, since the mapping is read-only). Linux only; elsewhere, or if
anything fails, it does nothing.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import queue
import sys
import threading
import weakref
from pathlib import Path
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")

_ITEM, _END, _ERROR = 0, 1, 2


def _put(q: queue.Queue, stop: threading.Event, entry) -> bool:
    while not stop.is_set():
        try:
            q.put(entry, timeout=0.05)
            return True
        except queue.Full:
            continue
    return False


# Live reader threads and their stop flags: at exit each is stopped and waited for, since a daemon
# thread still inside native code (a numpy copy, a torch op) when the interpreter ends is killed
# mid-call, which aborts the process ("terminate called without an active exception").
_READERS: "weakref.WeakKeyDictionary[threading.Thread, threading.Event]" = weakref.WeakKeyDictionary()


def stop_readers(timeout: float = 10.0) -> None:
    """Stop every reader after the item it is reading, and wait for them."""
    readers = list(_READERS.items())
    for _, stop in readers:
        stop.set()
    for thread, _ in readers:
        if thread is not threading.current_thread():
            thread.join(timeout)


atexit.register(stop_readers)


def _read(source, q: queue.Queue, stop: threading.Event) -> None:
    iterator = None
    try:
        iterator = iter(source)
        for item in iterator:
            if not _put(q, stop, (_ITEM, item)):
                return
        _put(q, stop, (_END, None))
    except BaseException as exc:  # noqa: BLE001 - handed to the consumer
        _put(q, stop, (_ERROR, exc))
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            try:
                close()
            except Exception:  # noqa: BLE001 - nothing to tell anyone at this point
                pass


class Prefetcher(Iterator[T]):
    """Iterate `iterable` in a background thread, `depth` items ahead of the consumer."""

    def __init__(self, iterable: Iterable[T], depth: int = 2, name: str = "rvq-prefetch"):
        if depth < 1:
            raise ValueError("prefetch depth must be at least 1")
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._finished = False
        # The thread gets the queue and the stop flag, not `self`: a prefetcher dropped unclosed is
        # garbage-collected, and its `__del__` stops the reader.
        self._thread = threading.Thread(target=_read, args=(iterable, self._queue, self._stop),
                                        name=name, daemon=True)
        _READERS[self._thread] = self._stop
        self._thread.start()

    def __iter__(self) -> "Prefetcher[T]":
        return self

    def __next__(self) -> T:
        if self._finished:
            raise StopIteration
        kind, value = self._queue.get()
        if kind == _ITEM:
            return value
        self._finished = True
        self._thread.join()
        if kind == _ERROR:
            raise value
        raise StopIteration

    def close(self, timeout: float = 10.0) -> None:
        """Stop the reader (after the item it is reading) and wait for it."""
        self._finished = True
        self._stop.set()
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def __enter__(self) -> "Prefetcher[T]":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self._stop.set()
        except Exception:  # noqa: BLE001
            pass


def prefetch(iterable: Iterable[T], depth: int = 2) -> Iterator[T]:
    """`iterable` read `depth` items ahead in a background thread (depth 0: read in the caller)."""
    if depth <= 0:
        return iter(iterable)
    return Prefetcher(iterable, depth)


# --- giving back mapped pages --------------------------------------------------------------------------

_MADV_DONTNEED = 4
_libc = None


def _madvise():
    global _libc
    if _libc is None:
        try:
            lib = ctypes.CDLL(None, use_errno=True)
            fn = lib.madvise
            fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
            fn.restype = ctypes.c_int
            _libc = fn
        except (OSError, AttributeError):
            _libc = False
    return _libc or None


def release_file_pages(path: str | Path) -> int:
    """Drop this process's resident pages of the read-only mappings of `path`; bytes advised."""
    if not sys.platform.startswith("linux"):
        return 0
    madvise = _madvise()
    if madvise is None:
        return 0
    try:
        target = os.path.realpath(path)
        ranges = []
        with open("/proc/self/maps") as fh:
            for line in fh:
                parts = line.split(None, 5)
                if len(parts) < 6 or parts[5].rstrip("\n") != target:
                    continue
                perms = parts[1]
                if "w" in perms:          # a writable mapping may hold changes only in memory: leave it
                    continue
                start, end = (int(v, 16) for v in parts[0].split("-"))
                ranges.append((start, end))
    except OSError:
        return 0
    advised = 0
    for start, end in ranges:
        if madvise(start, end - start, _MADV_DONTNEED) == 0:
            advised += end - start
    return advised


class PageReleaser:
    """Call `consumed(path, nbytes)` as chunks are used; every `every_bytes` per file, and when the
    source moves to another file, that file's mapped pages are released (`release_file_pages`)."""

    def __init__(self, every_bytes: int = 256 << 20, enabled: bool | None = None):
        self.every_bytes = int(every_bytes)
        self.enabled = sys.platform.startswith("linux") if enabled is None else enabled
        self._path = None
        self._pending = 0
        self.releases = 0

    def consumed(self, path, nbytes: int) -> None:
        if not self.enabled:
            return
        if path != self._path:
            self.flush()
            self._path = path
        self._pending += int(nbytes)
        if self._pending >= self.every_bytes:
            self.flush()

    def flush(self) -> None:
        if self._path is not None and self._pending > 0 and self.enabled:
            release_file_pages(self._path)
            self.releases += 1
        self._pending = 0
