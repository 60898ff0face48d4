"""The UMAP child process's program: imports umap once, warms numba up, then fits one job after another
from stdin and writes each embedding into the cache. Run by path, with neither torch nor the rest of
rvq_viewer imported; it loads its two siblings (`umap_cache.py`, `pca.py`) by path too."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np


def _sibling(name: str):
    spec = importlib.util.spec_from_file_location(f"rvq_viewer_{name}", Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module            # dataclasses look their module up while building the class
    spec.loader.exec_module(module)
    return module


_cache = _sibling("umap_cache")
pca_2d = _sibling("pca").pca_2d
EXACT_KNN_FROM, EXACT_KNN_MAX = _cache.EXACT_KNN_FROM, _cache.EXACT_KNN_MAX
UmapParams, scale_for_init = _cache.UmapParams, _cache.scale_for_init


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
            _cache.unlink(Path(job["input"]))
            coords, knn = _fit(points, job["params"], init)
            if not np.isfinite(coords).all():
                raise ValueError("the embedding has non-finite values")
            _cache.save_atomic(Path(job["output"]), coords)
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
