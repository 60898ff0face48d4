"""UMAP maps of codebooks in a separate process, embeddings cached on disk (the PCA view is `pca.py`).

The child's program is `umap_child.py`, run by path (`python -c runpy.run_path(...)`) so that it imports
neither torch nor the rest of rvq_viewer; the cache both sides share is `umap_cache.py`.

Why a process and not a thread: importing umap takes 2-19 s and its first fit compiles numba code
for ~10 s with the GIL held, which stalls a Qt event loop by 150-190 ms at a time. A child process
costs the window nothing; it is started (and warmed up with a tiny fit) once, serves jobs one after
another over stdin/stdout, and writes each embedding straight into the cache, keyed by a hash of the
points, the parameters and the umap version, so reopening a checkpoint shows its UMAP at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np

from .pca import pca_2d
from .umap_cache import (EXACT_KNN_FROM, EXACT_KNN_MAX, KEEP_ON_CANCEL, MAX_CACHED, Embedding, ProjectionCancelled,
                         ProjectionError, UmapParams, cache_key, cache_path, clear_cache, evict, load_cached, unlink,
                         scale_for_init, umap_available, umap_version)

__all__ = ["EXACT_KNN_FROM", "EXACT_KNN_MAX", "MAX_CACHED", "Embedding", "ProjectionCancelled", "ProjectionError",
           "UmapParams", "UmapService", "cache_key", "cache_path", "clear_cache", "evict", "load_cached", "pca_2d",
           "scale_for_init", "umap_available", "umap_version"]

CHILD = Path(__file__).with_name("umap_child.py")


_CHILD_BOOT = "import runpy, sys; runpy.run_path(sys.argv.pop(1), run_name='__main__')"


class UmapService:
    """A warm UMAP child process. Thread-safe; `embed` blocks the calling (worker) thread.

    `start()` launches the child, which imports umap and runs a tiny fit so numba's compilation is
    paid before the first real job. `embed()` answers from the cache when it can, else sends a job
    and waits, polling `cancelled()` every 50 ms. `close()` ends the child; call it on exit.
    """

    def __init__(self, cache_dir: str | Path, numba_cache_dir: str | Path | None = None,
                 nice: int = 10, warm_up: bool = True, python: str | None = None,
                 keep_on_cancel: int = KEEP_ON_CANCEL):
        self.cache_dir = Path(cache_dir)
        self.numba_cache_dir = Path(numba_cache_dir) if numba_cache_dir else self.cache_dir / "numba"
        self.nice = nice
        self.warm_up = warm_up
        self.python = python or sys.executable
        self.keep_on_cancel = keep_on_cancel
        self.version = umap_version()
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._proc: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None
        self._old_readers: list[threading.Thread] = []
        self._replies: dict[int, dict] = {}
        self._next_id = 0
        self._ready = False
        self.ready_info: dict = {}
        self.jobs_run = 0
        self.last_reply: dict = {}     # the child's reply to the last job it ran (seconds, knn)
        self._log_path = self.cache_dir / "umap-child.log"

    # --- lifecycle ------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        with self._lock:
            return self._proc is not None and self._proc.poll() is None

    @property
    def ready(self) -> bool:
        """The child has imported umap and finished its warm-up fit."""
        with self._lock:
            return self._ready and self.running

    @property
    def pid(self) -> int | None:
        with self._lock:
            return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        """Launch the child if it is not running; returns at once."""
        if not umap_available():
            raise ProjectionError("umap-learn is not installed")
        with self._lock:
            if self.running:
                return
            self._reap()
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            self.numba_cache_dir.mkdir(parents=True, exist_ok=True)
            env = dict(os.environ)
            env["NUMBA_CACHE_DIR"] = str(self.numba_cache_dir)
            env.setdefault("PYTHONUNBUFFERED", "1")
            env.pop("QT_QPA_PLATFORM", None)
            args = [self.python, "-c", _CHILD_BOOT, str(CHILD.resolve()), "--serve",
                    "--nice", str(self.nice)]
            if self.warm_up:
                args.append("--warm-up")
            log = open(self._log_path, "ab")
            try:
                self._proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                              stderr=log, cwd=str(self.cache_dir), env=env)
            finally:
                log.close()
            self._ready = False
            self._replies = {}
            self._reader = threading.Thread(target=self._read_replies, args=(self._proc,),
                                            name="umap-reply-reader", daemon=True)
            self._reader.start()

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until the warm-up finished (True) or the child died / time ran out (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._ready:
                if self._proc is None or self._proc.poll() is not None and not self._reader_alive():
                    return False
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(0.05 if remaining is None else min(0.05, remaining))
            return True

    def close(self, timeout: float = 3.0) -> None:
        """End the child (politely, then by force) and join the reader thread."""
        with self._lock:
            proc, reader = self._proc, self._reader
            self._proc, self._reader, self._ready = None, None, False
            self._cond.notify_all()
        if proc is not None:
            with contextlib.suppress(OSError, ValueError):
                proc.stdin.close()
            try:
                proc.wait(timeout=timeout / 2)
            except subprocess.TimeoutExpired:
                proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=timeout / 2)
            with contextlib.suppress(OSError, ValueError):
                proc.stdout.close()
        for old in [reader, *self._old_readers]:
            if old is not None:
                old.join(timeout)
        self._old_readers = []

    def kill(self) -> None:
        """Stop the child now (a cancelled big job); the next `embed` starts a fresh one."""
        with self._lock:
            if self._proc is not None and self._proc.poll() is None:
                self._proc.kill()
        self.close(timeout=2.0)

    def _reap(self) -> None:
        if self._proc is not None:
            proc, reader = self._proc, self._reader
            self._proc = self._reader = None
            with contextlib.suppress(OSError, ValueError):
                proc.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=1)
            if reader is not None:
                self._old_readers.append(reader)  # it ends on EOF; joined in close()

    def _reader_alive(self) -> bool:
        return self._reader is not None and self._reader.is_alive()

    def _read_replies(self, proc: subprocess.Popen) -> None:
        for raw in iter(proc.stdout.readline, b""):
            try:
                msg = json.loads(raw.decode("utf-8", "replace"))
            except ValueError:
                continue
            with self._cond:
                if msg.get("event") == "ready":
                    self._ready = True
                    self.ready_info = msg
                elif "id" in msg:
                    self._replies[int(msg["id"])] = msg
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def log_tail(self, lines: int = 3) -> str:
        try:
            text = self._log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(text[-lines:])

    # --- jobs -----------------------------------------------------------------------------------
    def cached(self, points: np.ndarray, params: UmapParams = UmapParams()) -> np.ndarray | None:
        return load_cached(points, params, self.cache_dir)

    def embed(self, points: np.ndarray, params: UmapParams = UmapParams(),
              cancelled: Callable[[], bool] | None = None, timeout: float | None = None,
              init: np.ndarray | None = None) -> Embedding:
        """UMAP of `points` [n, d]: from the cache, or computed by the child (blocking this thread)."""
        t0 = time.perf_counter()
        x = np.ascontiguousarray(points, dtype=np.float32)
        if x.ndim != 2:
            raise ProjectionError(f"points must be [n, d], got shape {x.shape}")
        if len(x) < 4:
            return Embedding(pca_2d(x), "pca", seconds=time.perf_counter() - t0)
        key = cache_key(x, params, self.version)
        hit = load_cached(x, params, self.cache_dir, key)
        if hit is not None:
            return Embedding(hit, "umap", cached=True, seconds=time.perf_counter() - t0)
        cancelled = cancelled or (lambda: False)
        if params.init == "pca" and init is None:
            init = pca_2d(x)
        job_dir = self.cache_dir / "umap" / "jobs"
        job_dir.mkdir(parents=True, exist_ok=True)
        inp = job_dir / f"{key}.in.npz"
        arrays = {"points": x}
        if params.init == "pca":
            arrays["init"] = scale_for_init(init)
        with open(inp, "wb") as fh:
            np.savez(fh, **arrays)
        out = cache_path(self.cache_dir, key)
        try:
            reply = self._run_job(x, inp, out, params, cancelled, timeout)
        except ProjectionCancelled:
            if not self.running:          # killed: nobody will read the input any more
                unlink(inp)
            raise                         # else the child finishes the job into the cache
        except BaseException:
            unlink(inp)
            raise
        unlink(inp)                      # the child removes it after reading; this is for safety
        if not reply.get("ok"):
            raise ProjectionError(f"UMAP failed: {reply.get('error', 'unknown error')}")
        self.jobs_run += 1
        self.last_reply = reply
        coords = load_cached(x, params, self.cache_dir, key)
        if coords is None:
            raise ProjectionError("UMAP finished but its result could not be read back")
        evict(self.cache_dir)
        return Embedding(coords, "umap", cached=False, seconds=time.perf_counter() - t0)

    def _run_job(self, x, inp, out, params, cancelled, timeout) -> dict:
        with self._cond:
            self.start()
            job_id = self._next_id
            self._next_id += 1
            proc = self._proc
            job = {"id": job_id, "input": str(inp), "output": str(out),
                   "params": asdict(params.for_points(len(x)))}
            try:
                proc.stdin.write((json.dumps(job) + "\n").encode())
                proc.stdin.flush()
            except (OSError, ValueError):
                raise ProjectionError(f"the UMAP process exited: {self.log_tail() or 'no message'}") from None
            deadline = None if timeout is None else time.monotonic() + timeout
            while job_id not in self._replies:
                if cancelled():
                    if len(x) > self.keep_on_cancel:
                        self._cond.release()
                        try:
                            self.kill()
                        finally:
                            self._cond.acquire()
                    raise ProjectionCancelled("UMAP cancelled")
                if proc.poll() is not None or self._proc is not proc:
                    raise ProjectionError(f"the UMAP process exited: {self.log_tail() or 'no message'}")
                if deadline is not None and time.monotonic() > deadline:
                    raise ProjectionError(f"UMAP took longer than {timeout:g} s")
                self._cond.wait(0.05)
            return self._replies.pop(job_id)
