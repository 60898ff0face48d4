"""Time to the PCA view and to the UMAP view of one codebook, cold, warm and from the cache.

For each K (default 1024 only; pass --sizes 1024,8192,65536 for the full set, which takes many
minutes on two cores) with a clustered random codebook of --dim dimensions:

  pca        pca_2d + the KD-tree for hit-testing, in this process (target < 0.2 s)
  cold       a fresh UmapService with empty numba and embedding caches: process start, `import umap`,
             warm-up fit and this fit (what the very first launch on a machine pays)
  relaunch   a new process with numba's cache kept from an earlier launch (a later launch of the app;
             the script makes one earlier launch itself), a new codebook
  warm       the same, already warm process, another new codebook (the next layer or checkpoint)
  reopen     a new service and the same codebook: answered from the embedding cache, no process

    .venv/bin/python benchmarks/umap_bench.py
    .venv/bin/python benchmarks/umap_bench.py --sizes 1024,8192,65536 --skip-cold

Prints a table on stderr and JSON on stdout.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rvq_viewer.analysis.umap_service import UmapParams, UmapService, pca_2d, umap_version  # noqa: E402


def codebook(k: int, dim: int, seed: int) -> np.ndarray:
    """K codes around sqrt(K)/2 cluster centres, a little like a trained codebook."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(2, int(np.sqrt(k) / 2)), dim)).astype(np.float32) * 3
    which = rng.integers(0, len(centres), size=k)
    return (centres[which] + rng.normal(size=(k, dim)).astype(np.float32)).astype(np.float32)


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def bench_size(k: int, args, numba_dir: Path) -> dict:
    from scipy.spatial import cKDTree
    row: dict = {"K": k, "dim": args.dim}
    points = codebook(k, args.dim, seed=k)
    coords, row["pca_s"] = timed(lambda: cKDTree(pca_2d(points)))
    params = UmapParams()
    work = Path(tempfile.mkdtemp(prefix=f"umap-bench-{k}-"))
    try:
        if not args.skip_cold:
            cold_numba = work / "numba-cold"
            svc = UmapService(work / "cold", numba_cache_dir=cold_numba)
            try:
                def cold():
                    svc.start()
                    return svc.embed(points, params, timeout=args.timeout)
                _, row["cold_s"] = timed(cold)
                row["cold_child"] = svc.ready_info
            finally:
                svc.close()
        # relaunch: numba's on-disk cache kept from earlier runs (args.numba_dir), a new process
        svc = UmapService(work / "warm", numba_cache_dir=numba_dir)
        try:
            def relaunch():
                svc.start()
                return svc.embed(codebook(k, args.dim, seed=k + 1), params, timeout=args.timeout)
            _, row["relaunch_s"] = timed(relaunch)
            row["relaunch_child"] = svc.ready_info
            emb, row["warm_s"] = timed(lambda: svc.embed(codebook(k, args.dim, seed=k + 2), params,
                                                         timeout=args.timeout))
        finally:
            svc.close()
        fresh = UmapService(work / "warm", numba_cache_dir=numba_dir)
        hit, row["reopen_s"] = timed(lambda: fresh.embed(codebook(k, args.dim, seed=k + 2), params))
        row["reopen_cached"] = hit.cached and fresh.pid is None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return row


def earlier_launch(numba_dir: Path) -> None:
    """One start and warm-up of the UMAP child on `numba_dir`, untimed: what the app's earlier launches
    leave in numba's cache, so that 'relaunch' is any later launch and not the first after an upgrade."""
    work = Path(tempfile.mkdtemp(prefix="umap-bench-earlier-"))
    svc = UmapService(work, numba_cache_dir=numba_dir)
    try:
        svc.start()
        svc.embed(codebook(256, 16, seed=1), UmapParams(), timeout=600)
    finally:
        svc.close()
        shutil.rmtree(work, ignore_errors=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1024", help="comma-separated K values (default: 1024)")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--skip-cold", action="store_true", help="skip the cold start (it costs ~30 s per size)")
    p.add_argument("--numba-dir", default=str(Path(tempfile.gettempdir()) / "rvq-umap-bench-numba"),
                   help="numba cache kept between runs for the relaunch/warm figures")
    p.add_argument("--timeout", type=float, default=1800.0)
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    from scipy.spatial import cKDTree
    cKDTree(pca_2d(codebook(64, args.dim, 0)))   # load LAPACK and scipy once, outside the timings
    earlier_launch(Path(args.numba_dir))
    rows = []
    for k in sizes:
        print(f"K={k} ...", file=sys.stderr, flush=True)
        rows.append(bench_size(k, args, Path(args.numba_dir)))
    print(json.dumps({"umap": umap_version(), "rows": rows}, indent=1))
    cols = ["K", "pca_s", "cold_s", "relaunch_s", "warm_s", "reopen_s"]
    print(" ".join(f"{c:>10}" for c in cols), file=sys.stderr)
    for r in rows:
        print(" ".join(f"{r.get(c, float('nan')):>10.3f}" if c != "K" else f"{r[c]:>10}" for c in cols),
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
