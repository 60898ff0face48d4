"""UMAP maps of codebooks in a separate process, embeddings cached on disk (the PCA view is `pca.py`).

Qt-free and torch-free on purpose: this file is also the UMAP child process's program, run by path
(`python -c runpy.run_path(...)`) so the child imports neither torch nor the rest of rvq_viewer.

Why a process and not a thread: importing umap takes 2-19 s and its first fit compiles numba code
for ~10 s with the GIL held, which stalls a Qt event loop by 150-190 ms at a time. A child process
costs the window nothing; it is started (and warmed up with a tiny fit) once, serves jobs one after
another over stdin/stdout, and writes each embedding straight into the cache, keyed by a hash of the
points, the parameters and the umap version, so reopening a checkpoint shows its UMAP at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

CACHE_VERSION = "rvq-viewer-umap-2"   # 2: exact neighbour graphs from 4,096 to 16,384 points
# Point counts whose UMAP neighbour graph is computed here exactly instead of by umap's pynndescent
# (below 4,096 umap is exact itself; above 16,384 the exact search costs more than pynndescent).
EXACT_KNN_FROM, EXACT_KNN_MAX = 4096, 16384
# Below this many points a cancelled job is left to finish (its result still lands in the cache);
# above it the child is killed, since a big fit can run for minutes.
KEEP_ON_CANCEL = 8192
MAX_CACHED = 500          # embeddings kept on disk (a 65,536-code map is 512 KiB)


class ProjectionError(Exception):
    """UMAP could not run (not installed, the child died, bad input). The message is one line."""


class ProjectionCancelled(ProjectionError):
    """The caller asked the job to stop."""


def _sibling_pca():
    """`pca.py` beside this file: imported as a module in the app, loaded by path in the UMAP child
    (run by path, so it has no package for a relative import)."""
    if __package__:
        from . import pca
        return pca
    import importlib.util
    spec = importlib.util.spec_from_file_location("rvq_viewer_pca", Path(__file__).with_name("pca.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pca_2d = _sibling_pca().pca_2d


def scale_for_init(coords: np.ndarray, max_coord: float = 10.0) -> np.ndarray:
    """Coordinates centred and scaled to |coord| <= max_coord, as UMAP expects of an init array."""
    c = np.asarray(coords, dtype=np.float32)
    c = c - c.mean(axis=0, keepdims=True)
    span = float(np.abs(c).max()) if c.size else 0.0
    return (c * (max_coord / span)).astype(np.float32) if span > 0 else c


# ---------------------------------------------------------------------------------------------------
# Parameters, keys and the cache
# ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class UmapParams:
    n_neighbors: int = 15
    min_dist: float = 0.1
    metric: str = "euclidean"
    n_epochs: int | None = 200       # umap's default is 500 below 10k points; 200 looks the same here
    seed: int | None = None      # an int makes UMAP deterministic but single-threaded
    init: str = "pca"            # "pca": start from our PCA (the picture morphs, not jumps); or "spectral"

    def for_points(self, n: int) -> "UmapParams":
        """The parameters actually usable for n points (n_neighbors < n)."""
        return UmapParams(**{**asdict(self), "n_neighbors": max(2, min(self.n_neighbors, n - 1))})


@dataclass
class Embedding:
    coords: np.ndarray         # [n, 2] float32
    method: str                # "umap" or "pca"
    cached: bool = False
    seconds: float = 0.0


def umap_version() -> str:
    """The installed umap-learn version, read from package metadata (importing umap takes seconds)."""
    from importlib import metadata
    try:
        return metadata.version("umap-learn")
    except metadata.PackageNotFoundError:
        return "missing"


def umap_available() -> bool:
    return umap_version() != "missing"


def cache_key(points: np.ndarray, params: UmapParams, version: str | None = None) -> str:
    """sha256 of the points' bytes, shape and dtype, the parameters and the umap version."""
    x = np.ascontiguousarray(points, dtype=np.float32)
    h = hashlib.sha256()
    meta = {"v": CACHE_VERSION, "umap": version or umap_version(), "shape": list(x.shape),
            "params": asdict(params.for_points(len(x)))}
    h.update(json.dumps(meta, sort_keys=True).encode())
    h.update(memoryview(x).cast("B"))
    return h.hexdigest()


def cache_path(cache_dir: str | Path, key: str) -> Path:
    return Path(cache_dir) / "umap" / f"{key}.npy"


def load_cached(points: np.ndarray, params: UmapParams, cache_dir: str | Path,
                key: str | None = None) -> np.ndarray | None:
    """The cached embedding of these points with these parameters, or None."""
    path = cache_path(cache_dir, key or cache_key(points, params))
    if not path.is_file():
        return None
    try:
        coords = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    if coords.shape != (len(points), 2) or not np.isfinite(coords).all():
        return None
    return coords.astype(np.float32, copy=False)


def _save_atomic(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".npy", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, array, allow_pickle=False)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# ---------------------------------------------------------------------------------------------------
# The service: one long-lived child process that runs UMAP jobs one after another
# ---------------------------------------------------------------------------------------------------

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
            args = [self.python, "-c", _CHILD_BOOT, str(Path(__file__).resolve()), "--serve",
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
                _unlink(inp)
            raise                         # else the child finishes the job into the cache
        except BaseException:
            _unlink(inp)
            raise
        _unlink(inp)                      # the child removes it after reading; this is for safety
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


def _unlink(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def evict(cache_dir: str | Path, max_files: int = MAX_CACHED) -> int:
    """Keep the newest `max_files` embeddings (by modification time); returns how many went."""
    folder = Path(cache_dir) / "umap"
    try:
        files = sorted(folder.glob("*.npy"), key=lambda p: p.stat().st_mtime)
    except OSError:
        return 0
    removed = 0
    for path in files[:max(0, len(files) - max_files)]:
        with contextlib.suppress(OSError):
            path.unlink()
            removed += 1
    return removed


def clear_cache(cache_dir: str | Path) -> int:
    """Delete cached embeddings; returns how many files went."""
    removed = 0
    folder = Path(cache_dir) / "umap"
    if folder.is_dir():
        for path in folder.glob("*.npy"):
            with contextlib.suppress(OSError):
                path.unlink()
                removed += 1
    return removed


# ---------------------------------------------------------------------------------------------------
# The child process
# ---------------------------------------------------------------------------------------------------

def _reply(msg: dict) -> None:
    sys.stdout.write(json.dumps(msg) + "\n")
    sys.stdout.flush()


def exact_knn(points: np.ndarray, k: int, block: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest points of every point by Euclidean distance, itself first (at 0), nearest first:
    indices [n, k] and distances [n, k], from blocks of exact squared distances (numpy only)."""
    x = np.ascontiguousarray(points, dtype=np.float32)
    sq = np.einsum("ij,ij->i", x, x)
    n = len(x)
    index, dist = np.empty((n, k), np.int64), np.empty((n, k), np.float32)
    for start in range(0, n, block):
        stop = min(n, start + block)
        d = sq[start:stop, None] - 2.0 * (x[start:stop] @ x.T) + sq[None, :]
        np.maximum(d, 0.0, out=d)
        d[np.arange(stop - start), np.arange(start, stop)] = -1.0     # each point is its own first neighbour
        part = np.argpartition(d, k - 1, axis=1)[:, :k]
        part_d = np.take_along_axis(d, part, axis=1)
        order = np.argsort(part_d, axis=1, kind="stable")
        index[start:stop] = np.take_along_axis(part, order, axis=1)
        dist[start:stop] = np.sqrt(np.maximum(np.take_along_axis(part_d, order, axis=1), 0.0))
    return index, dist


def _fit(points: np.ndarray, params: dict, init: np.ndarray | None) -> tuple[np.ndarray, str]:
    """The embedding, and how its neighbour graph was found ("exact" here, or "umap" inside umap)."""
    import warnings

    import umap
    kwargs = {k: v for k, v in params.items() if k not in ("seed", "init")}
    knn = "umap"
    # From 4,096 points umap finds neighbours with pynndescent, whose numba functions are closures that
    # numba cannot cache: ~25 s of compilation at every launch. An exact search is ~0.5 s at 8,192 points.
    if EXACT_KNN_FROM <= len(points) <= EXACT_KNN_MAX and kwargs.get("metric", "euclidean") == "euclidean":
        kwargs["precomputed_knn"] = (*exact_knn(points, kwargs.get("n_neighbors", 15)), None)
        knn = "exact"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reducer = umap.UMAP(n_components=2, random_state=params.get("seed"), verbose=False,
                            init=init if init is not None else params.get("init", "spectral"), **kwargs)
        return reducer.fit_transform(points).astype(np.float32), knn


def _cache_numba_by_default() -> None:
    """Have numba keep compiled code on disk unless a function says otherwise, before umap imports it.

    umap-learn asks for caching on 1 of its ~130 jitted functions (and pynndescent on few), so each new
    child compiled the rest again in its warm-up fit: ~10 s on two cores at every launch of the app.
    Cached, a relaunch's warm-up takes ~1 s (benchmarks/umap_bench.py, relaunch). A function numba
    cannot cache (a closure) compiles as before. Only this child process is changed."""
    import functools

    import numba

    def caching(decorator):
        @functools.wraps(decorator)
        def decorate(*args, **kwargs):
            kwargs.setdefault("cache", True)
            return decorator(*args, **kwargs)
        return decorate
    numba.njit, numba.jit = caching(numba.njit), caching(numba.jit)


def _serve(warm_up: bool) -> int:
    t0 = time.perf_counter()
    _cache_numba_by_default()
    import umap  # noqa: F401  (the slow import, done before any job arrives)
    t_import = time.perf_counter() - t0
    t_warm = 0.0
    if warm_up:
        t1 = time.perf_counter()
        # The same code path as a real job (array init, default parameters): numba specialises on
        # types and options, so a fit that differs compiles other functions on the first real job.
        rng = np.random.default_rng(0)
        points = rng.normal(size=(300, 16)).astype(np.float32)
        _fit(points, asdict(UmapParams()), scale_for_init(pca_2d(points)))
        t_warm = time.perf_counter() - t1
    _reply({"event": "ready", "import_s": round(t_import, 3), "warmup_s": round(t_warm, 3)})
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        job_id = None
        try:
            job = json.loads(line)
            job_id = job["id"]
            t = time.perf_counter()
            with np.load(job["input"], allow_pickle=False) as data:
                points = data["points"]
                init = data["init"] if "init" in data.files else None
            _unlink(Path(job["input"]))
            coords, knn = _fit(points, job["params"], init)
            if not np.isfinite(coords).all():
                raise ValueError("the embedding has non-finite values")
            _save_atomic(Path(job["output"]), coords)
            _reply({"id": job_id, "ok": True, "seconds": round(time.perf_counter() - t, 3), "knn": knn})
        except Exception as exc:  # report and keep serving
            message = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            _reply({"id": job_id, "ok": False, "error": f"{type(exc).__name__}: {message}"})
    return 0


def _child_main(argv: list[str]) -> int:
    import argparse
    parser = argparse.ArgumentParser(description="rvq-viewer UMAP worker process (internal)")
    parser.add_argument("--serve", action="store_true")
    parser.add_argument("--warm-up", action="store_true")
    parser.add_argument("--nice", type=int, default=0)
    args = parser.parse_args(argv)
    if args.nice and hasattr(os, "nice"):
        with contextlib.suppress(OSError):
            os.nice(args.nice)
    if not args.serve:
        parser.error("only --serve is supported")
    return _serve(args.warm_up)


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
