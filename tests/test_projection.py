"""2-D projections: PCA, the UMAP cache key, and the real UMAP child process (once, on a small codebook)."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

from rvq_viewer.analysis import umap_service as projection
from rvq_viewer.analysis.umap_service import (
    ProjectionCancelled,
    ProjectionError,
    UmapParams,
    UmapService,
    cache_key,
    load_cached,
    pca_2d,
)


def test_pca_matches_svd_up_to_sign_and_is_deterministic():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 6)).astype(np.float32) * np.array([5, 3, 1, 1, 1, 1], dtype=np.float32)
    got = pca_2d(x)
    centred = x - x.mean(0)
    _, _, vt = np.linalg.svd(centred.astype(np.float64), full_matrices=False)
    want = centred @ vt[:2].T
    for j in range(2):
        assert np.allclose(np.abs(got[:, j]), np.abs(want[:, j]), atol=1e-3)
    assert got[:, 0].var() >= got[:, 1].var()
    np.testing.assert_array_equal(got, pca_2d(x.copy()))
    assert pca_2d(x[:1]).shape == (1, 2) and not pca_2d(x[:1]).any()
    wide = rng.normal(size=(5, 40)).astype(np.float32)          # d > n takes the SVD path
    assert pca_2d(wide).shape == (5, 2)


def test_pca_of_65536_codes_is_quick():
    x = np.random.default_rng(1).normal(size=(65536, 128)).astype(np.float32)
    t = time.perf_counter()
    pca_2d(x)
    assert time.perf_counter() - t < 2.0   # generous for CI; benchmarks/umap_bench.py reports the real figure


def test_cache_key_depends_on_points_params_and_version(tmp_path):
    x = np.random.default_rng(2).normal(size=(50, 4)).astype(np.float32)
    key = cache_key(x, UmapParams(), "0.5.12")
    assert key == cache_key(x.copy(), UmapParams(), "0.5.12")
    assert key != cache_key(x + 1e-6, UmapParams(), "0.5.12")
    assert key != cache_key(x, UmapParams(min_dist=0.2), "0.5.12")
    assert key != cache_key(x, UmapParams(), "0.5.13")
    # n_neighbors is clamped to n - 1 before hashing: asking for more is the same job
    assert cache_key(x, UmapParams(n_neighbors=49), "v") == cache_key(x, UmapParams(n_neighbors=200), "v")
    assert load_cached(x, UmapParams(), tmp_path) is None
    path = projection.cache_path(tmp_path, cache_key(x, UmapParams()))
    path.parent.mkdir(parents=True)
    np.save(path, np.zeros((3, 2), dtype=np.float32))         # wrong shape: ignored, not trusted
    assert load_cached(x, UmapParams(), tmp_path) is None


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    if not projection.umap_available():
        pytest.skip("umap-learn is not installed")
    svc = UmapService(tmp_path_factory.mktemp("umap-cache"))
    svc.start()
    yield svc
    svc.close()
    assert not svc.running


def test_real_umap_in_a_child_process_then_from_the_cache(service):
    points = np.random.default_rng(3).normal(size=(200, 16)).astype(np.float32)
    params = UmapParams(n_neighbors=10, n_epochs=30)
    threads_before = threading.active_count()
    first = service.embed(points, params, timeout=300)
    assert first.method == "umap" and not first.cached
    assert first.coords.shape == (200, 2) and np.isfinite(first.coords).all()
    assert service.ready and service.pid is not None and service.ready_info.get("import_s") is not None
    runs = service.jobs_run

    again = service.embed(points, params)
    assert again.cached and service.jobs_run == runs and again.seconds < 0.5
    np.testing.assert_array_equal(again.coords, first.coords)

    fresh = UmapService(service.cache_dir)                    # reopening: no process needed at all
    hit = fresh.embed(points, params)
    assert hit.cached and fresh.pid is None
    assert threading.active_count() <= threads_before + 1     # only the service's reply reader


def test_exact_knn_matches_brute_force_with_each_point_first():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(700, 5)).astype(np.float32)
    x[10] = x[3]                                  # an exact duplicate: each is still its own first
    from rvq_viewer.analysis import umap_child
    index, dist = umap_child.exact_knn(x, 7, block=128)
    d = np.sqrt(((x[:, None, :].astype(np.float64) - x[None, :, :]) ** 2).sum(-1))
    assert (index[:, 0] == np.arange(700)).all() and (dist[:, 0] == 0).all()
    assert index[3, 1] == 10 and dist[3, 1] == 0
    np.fill_diagonal(d, np.inf)
    np.testing.assert_allclose(dist[:, 1:], np.sort(d, axis=1)[:, :6], rtol=1e-4, atol=1e-4)
    assert (np.diff(dist, axis=1) >= 0).all()


def test_from_4096_points_the_child_brings_its_own_exact_neighbours(service):
    # umap's own search from 4,096 points (pynndescent) compiles for ~25 s at every launch.
    points = np.random.default_rng(7).normal(size=(4096, 8)).astype(np.float32)
    emb = service.embed(points, UmapParams(n_neighbors=10, n_epochs=10), timeout=600)
    assert emb.coords.shape == (4096, 2) and np.isfinite(emb.coords).all()
    assert service.last_reply["knn"] == "exact"
    service.embed(points[:500], UmapParams(n_neighbors=10, n_epochs=10), timeout=300)
    assert service.last_reply["knn"] == "umap"


def test_the_child_caches_umaps_compiled_code_for_the_next_launch(service):
    # umap-learn itself asks numba to cache one function (layouts.rdist); the child makes caching the
    # default, so a relaunch skips ~10 s of compilation. Run after a real job, as the warm-up is one.
    service.embed(np.random.default_rng(5).normal(size=(120, 8)).astype(np.float32),
                  UmapParams(n_neighbors=8, n_epochs=20), timeout=300)
    cached = [p.name for p in service.numba_cache_dir.rglob("*.nbi") if p.parent.name.startswith("umap_")]
    assert len(cached) >= 3, cached
    assert any(name.startswith("umap_.") for name in cached), cached


def test_a_failing_job_is_an_error_and_the_process_serves_on(service):
    points = np.random.default_rng(4).normal(size=(40, 4)).astype(np.float32)
    with pytest.raises(ProjectionError, match="UMAP failed"):
        service.embed(points, UmapParams(metric="no-such-metric", n_epochs=10), timeout=120)
    ok = service.embed(points, UmapParams(n_neighbors=5, n_epochs=10), timeout=120)
    assert ok.method == "umap"


def test_cancel_kills_a_big_job_and_the_next_job_restarts_the_process(service):
    points = np.random.default_rng(5).normal(size=(300, 8)).astype(np.float32)
    pid = service.pid
    old_keep = service.keep_on_cancel
    service.keep_on_cancel = 0          # treat this job as big: cancelling kills the child
    try:
        with pytest.raises(ProjectionCancelled):
            service.embed(points, UmapParams(n_epochs=500), cancelled=lambda: True)
    finally:
        service.keep_on_cancel = old_keep
    assert not service.running
    tiny = service.embed(np.eye(3, dtype=np.float32), UmapParams())   # < 4 points: PCA, no process
    assert tiny.method == "pca" and not service.running
    assert pid is not None


def test_the_cache_keeps_the_newest_embeddings(tmp_path):
    folder = tmp_path / "umap"
    folder.mkdir()
    for i in range(5):
        path = folder / f"{i}.npy"
        np.save(path, np.zeros((2, 2), dtype=np.float32))
        os.utime(path, (1000 + i, 1000 + i))
    assert projection.evict(tmp_path, max_files=2) == 3
    assert sorted(p.name for p in folder.glob("*.npy")) == ["3.npy", "4.npy"]
