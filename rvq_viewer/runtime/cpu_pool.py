"""The process's CPU workers: one thread per core, each running torch ops single-threaded.

Shared by every engine that splits rows over cores (the nearest-code search, the audit's encoder), so
the process never runs two pools that fight over the same cores.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import queue
import sys
import threading

import torch

from .cpu_quota import usable_cpus

# RVQ_VIEWER_WORKERS=0 runs torch's intra-op threads instead of the workers.
WORKERS_ENABLED = os.environ.get("RVQ_VIEWER_WORKERS", "1") != "0"
# Rows per task handed to a CPU worker: at most PIECE_ROWS, and fewer when that leaves each worker
# fewer than PIECES_PER_WORKER pieces (a worker that a neighbour's process slows must not be left
# finishing the one big last piece while the others wait), but never below MIN_PIECE_ROWS.
PIECE_ROWS = 2048
PIECES_PER_WORKER = 8
MIN_PIECE_ROWS = 256
_WORKERS = None
_WORKERS_LOCK = threading.Lock()
_IN_WORKER = threading.local()


def in_worker() -> bool:
    """True inside a CPU worker thread (its torch ops run on one thread)."""
    return getattr(_IN_WORKER, "active", False)


class CpuWorkers:
    """One thread per core, each running torch ops single-threaded on its own row pieces.

    Two cores fed by OpenMP intra-op parallelism meet at a barrier after every op; when another process
    shares the cores (a GUI, a second job) the slower thread stalls the other at each of them, and a
    small-tile search slows down by 5x or more. Independent workers that take the next piece of rows
    from a queue have no barrier: a core that is busy elsewhere just takes fewer pieces.

    Each worker sets its own OpenMP thread count to 1 (`omp_set_num_threads` is per thread), leaving
    torch's setting for other threads alone. Where that cannot be done, there are no workers and the
    callers run intra-op parallel as before.
    """

    def __init__(self, n: int, set_threads):
        self.n = n
        self._set_threads = set_threads
        self._tasks: "queue.SimpleQueue" = queue.SimpleQueue()
        ready = [threading.Event() for _ in range(n)]
        self.threads = [threading.Thread(target=self._loop, args=(ev,), name=f"rvq-worker-{i}", daemon=True)
                        for i, ev in enumerate(ready)]
        for t in self.threads:
            t.start()
        for ev in ready:
            ev.wait()

    def _loop(self, ready: threading.Event) -> None:
        torch.get_num_threads()          # torch's lazy per-thread init first, so it cannot undo ours
        self._set_threads(1)
        _IN_WORKER.active = True
        ready.set()
        while True:
            job = self._tasks.get()
            if job is None:
                return
            job()

    def run(self, fn, items, workers: int | None = None) -> list:
        """fn(item) for every item, on the workers (at most `workers` of them at once); results in order.
        The first error is re-raised once every item already started has finished (so callers may reuse
        what the items wrote to)."""
        items = list(items)
        if in_worker():                      # nested: the workers are busy with our caller
            return [fn(item) for item in items]
        results = [None] * len(items)
        jobs = min(self.n, len(items), workers or self.n)
        state = {"next": 0, "error": None, "jobs": jobs}
        cond = threading.Condition()

        def job() -> None:
            while True:
                with cond:
                    if state["error"] is not None or state["next"] >= len(items):
                        state["jobs"] -= 1
                        cond.notify_all()
                        return
                    index = state["next"]
                    state["next"] += 1
                try:
                    results[index] = fn(items[index])
                except BaseException as exc:  # noqa: BLE001 - handed to the caller
                    with cond:
                        if state["error"] is None:
                            state["error"] = exc

        for _ in range(state["jobs"]):
            self._tasks.put(job)
        try:
            with cond:
                while state["jobs"] > 0:
                    cond.wait()
        except BaseException as exc:  # Ctrl+C (KeyboardInterrupt) while the workers run
            _drain(cond, state, exc)
            raise
        if state["error"] is not None:
            raise state["error"]
        return results

    def close(self, timeout: float = 30.0) -> None:
        """Stop the threads once their current task is done, and wait for them."""
        for _ in self.threads:
            self._tasks.put(None)
        for thread in self.threads:
            thread.join(timeout)


def _drain(cond: threading.Condition, state: dict, exc: BaseException) -> None:
    """After an interrupt: hand out no more items and wait for the ones started. A worker left inside
    torch's native code while the interpreter exits is ended by force mid-call, which aborts the whole
    process ("terminate called without an active exception"); a second Ctrl+C does not cut this short."""
    while True:
        try:
            with cond:
                if state["error"] is None:
                    state["error"] = exc
                while state["jobs"] > 0:
                    cond.wait()
            return
        except KeyboardInterrupt:
            continue


def _omp_setter():
    """`omp_set_num_threads` of the OpenMP runtime torch uses, or None."""
    try:
        lib = ctypes.CDLL(None)
        fn = lib.omp_set_num_threads
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int]
    fn.restype = None
    return fn


def cpu_workers() -> "CpuWorkers | None":
    """The shared CPU workers (one per torch intra-op thread, at most one per CPU the process may use),
    or None with one thread or no OpenMP."""
    global _WORKERS
    if _WORKERS is None:
        with _WORKERS_LOCK:
            if _WORKERS is None:
                n = _thread_count()
                setter = _omp_setter() if WORKERS_ENABLED else None
                _WORKERS = CpuWorkers(n, setter) if n > 1 and setter is not None else False
                if _WORKERS:
                    atexit.register(stop_cpu_workers)
    return _WORKERS or None


def piece_rows(n: int, workers: int, most: int = PIECE_ROWS, stride: int = 1) -> int:
    """Rows per piece for `n` rows over `workers` workers (a multiple of `stride`)."""
    rows = min(most, max(MIN_PIECE_ROWS, -(-n // (PIECES_PER_WORKER * max(1, workers)))))
    return max(stride, rows // stride * stride)


def worker_count() -> int:
    """How many CPU workers the engines split rows over (started or not; 1 without workers)."""
    workers = _WORKERS
    if workers:
        return workers.n
    if workers is False or in_worker() or not WORKERS_ENABLED:
        return 1
    return _thread_count()


def _thread_count() -> int:
    """torch's thread count, capped by the CPUs the process may use (a container's CPU quota)."""
    return max(1, min(torch.get_num_threads(), usable_cpus()))


def fit_torch_threads() -> None:
    """Lower torch's own thread count to the CPUs the process may use, which torch does not read from a
    CPU quota. For the app and the command line, which own their process (a library call leaves the
    caller's setting alone)."""
    usable = usable_cpus()
    if torch.get_num_threads() > usable:
        torch.set_num_threads(usable)


def stop_cpu_workers(timeout: float = 30.0) -> None:
    """Stop the shared workers after their current task (at exit: none may be inside native code when
    the interpreter ends its daemon threads). `cpu_workers()` starts new ones if asked again."""
    global _WORKERS
    with _WORKERS_LOCK:
        workers, _WORKERS = _WORKERS, None
    if workers:
        workers.close(timeout)


@contextlib.contextmanager
def single_threaded():
    """The calling thread's torch ops on one thread for the block (OpenMP's thread count is per
    thread: other threads keep theirs); a no-op inside a worker or without OpenMP."""
    setter = None if in_worker() else _omp_setter()
    if setter is None:
        yield
        return
    previous = torch.get_num_threads()
    setter(1)
    try:
        yield
    finally:
        setter(previous)


def work_alone() -> None:
    """Make the calling thread run its torch ops on itself alone and never start the shared workers: a
    background thread inside another program (rvq_viewer.monitor's writer, in a training process) must
    not spread over the cores that program uses."""
    torch.get_num_threads()              # torch's lazy per-thread init first, so it cannot undo ours
    setter = _omp_setter()
    if setter is not None:
        setter(1)
    _IN_WORKER.active = True


BACKGROUND_NICE = 10             # background threads yield the CPU to the foreground (Linux: per thread)
_niced: set[int] = set()


def lower_thread_priority() -> None:
    """Nice the calling thread (once per thread), so a busy background job cannot starve the GUI thread
    or a training loop."""
    tid = threading.get_native_id()
    if tid in _niced or not hasattr(os, "setpriority") or not sys.platform.startswith("linux"):
        return
    _niced.add(tid)
    try:
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + BACKGROUND_NICE)
    except OSError:
        pass
