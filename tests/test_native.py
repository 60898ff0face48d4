"""The fused native kernel: built here, codes equal to addmm + argmin (ties, odd sizes, every register
blocking, panels), used through the CPU workers, and a machine without a compiler or with a broken one
goes on without it."""

from __future__ import annotations

import json
import stat

import pytest
import torch

from rvq_viewer.quant import _cpu_engine, _native, search, search_probe
from rvq_viewer.quant.search import nearest_codes, reference_nearest_codes
from rvq_viewer.quant.search_probe import SearchConfig


@pytest.fixture(scope="module")
def lib():
    found = _native.library()
    if found is None:
        pytest.skip(f"no native kernel on this machine: {_native.unavailable()}")
    return found


@pytest.fixture
def rebuilt(tmp_path, monkeypatch):
    """A fresh cache folder and load state; the process's own library is restored after."""
    monkeypatch.setenv("RVQ_VIEWER_CACHE", str(tmp_path))
    _native.forget()
    search_probe.forget()
    search.clear_plans()
    yield tmp_path
    _native.forget()
    search_probe.forget()
    search.clear_plans()


def plan(codebook, kernel, panel):
    return _native.NativePlan(codebook, None, SearchConfig("native", panel, 0, kernel))


@pytest.mark.parametrize("kernel", _native.KERNELS)
@pytest.mark.parametrize("d,k,n", [(1, 1, 7), (3, 15, 50), (8, 4096, 4099), (16, 100, 33), (32, 700, 129),
                                   (33, 64, 64), (128, 1024, 301), (200, 65, 11)])
def test_every_kernel_gives_the_reference_codes(lib, kernel, d, k, n):
    gen = torch.Generator().manual_seed(d * 1000 + k)
    codebook = torch.randn(k, d, generator=gen)
    x = torch.randn(n, d, generator=gen)
    want = reference_nearest_codes(x, codebook)
    for panel in (64, 512, 8192):
        assert torch.equal(plan(codebook, kernel, panel).search(x), want), panel


@pytest.mark.parametrize("kernel", _native.KERNELS)
def test_ties_go_to_the_lowest_code_across_lanes_and_panels(lib, kernel):
    codebook, x = search_probe.probe_data(8, 3000)
    codebook[2999] = codebook[5]          # a duplicate in another lane and panel than its first copy
    x[-3:] = codebook[5]
    want = reference_nearest_codes(x, codebook)
    got = plan(codebook, kernel, 512).search(x)
    assert torch.equal(got, want) and got[-3:].tolist() == [5, 5, 5]


def test_rows_that_are_views_or_other_dtypes_are_read_right(lib):
    gen = torch.Generator().manual_seed(3)
    codebook = torch.randn(300, 24, generator=gen)
    x = torch.randn(40, 48, generator=gen)[:, ::2]            # not contiguous
    p = plan(codebook, "r4c2", 512)
    assert torch.equal(p.search(x), reference_nearest_codes(x.contiguous(), codebook))
    assert torch.equal(p.search(x.double()), reference_nearest_codes(x.contiguous(), codebook))
    assert p.search(torch.empty(0, 24)).shape == (0,)


def test_a_row_of_the_wrong_width_is_refused_not_read_past(lib):
    p = plan(torch.randn(64, 16), "r4c1", 512)
    with pytest.raises(ValueError, match="dimension 16"):
        p.search(torch.randn(5, 8))


def test_a_nan_row_gets_a_code_in_range(lib):
    codebook = torch.randn(100, 8)
    x = torch.randn(6, 8)
    x[2] = float("nan")
    got = plan(codebook, "r2c2", 512).search(x)
    assert got[2] == 0 and bool(((got >= 0) & (got < 100)).all())


def test_the_workers_run_it_side_by_side_with_the_reference_codes(lib, monkeypatch):
    chosen = SearchConfig("native", 512, 0, "r6c2")
    monkeypatch.setattr(_cpu_engine, "config_for", lambda d, k: chosen)
    gen = torch.Generator().manual_seed(11)
    codebook = torch.randn(2048, 64, generator=gen)
    x = torch.randn(20000, 64, generator=gen)
    search.clear_plans()
    try:
        assert search.plan_for(codebook, None).config == chosen
        assert torch.equal(nearest_codes(x, codebook), reference_nearest_codes(x, codebook))
    finally:
        search.clear_plans()


def test_with_copies_each_thread_reads_its_own_layout_and_gets_the_same_codes(lib):
    import threading
    gen = torch.Generator().manual_seed(12)
    codebook, x = torch.randn(700, 24, generator=gen), torch.randn(3000, 24, generator=gen)
    want = reference_nearest_codes(x, codebook)
    own = _native.NativePlan(codebook, None, SearchConfig("native", 512, 0, "r4c2", copies=True))
    read, got = {}, {}

    def work(name: str) -> None:
        got[name] = own.search(x)
        read[name] = own._layout()[0]                  # held: a finished thread's copy is freed

    threads = [threading.Thread(target=work, args=(f"t{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    work("main")
    pointers = {layout.data_ptr() for layout in read.values()}
    assert len(pointers) == 3 and own.weight.data_ptr() not in pointers
    assert all(torch.equal(codes, want) for codes in got.values())


def test_a_codebook_too_large_to_copy_is_shared(lib, monkeypatch):
    monkeypatch.setattr(_native, "COPY_BYTES", 64 * 16 * 4 - 1)
    codebook = torch.randn(64, 16)
    assert not _native.NativePlan.can_copy(codebook)
    big = _native.NativePlan(codebook, None, SearchConfig("native", 512, 0, "r4c1", copies=True))
    assert big._layout()[0].data_ptr() == big.weight.data_ptr()
    assert torch.equal(big.search(codebook), torch.arange(64))


def test_copies_are_chosen_only_where_they_measured_faster(lib, monkeypatch):
    codebook, x = search_probe.probe_data(32, 512)
    config = SearchConfig("native", 512, 0, "r4c1")
    run = search_probe._exact_run(_cpu_engine, config, codebook, x, reference_nearest_codes(x, codebook))
    for copies_s, chosen in ((0.90, True), (0.97, False), (1.2, False)):
        def timed(fn, pieces, threads, copies_s=copies_s):
            return copies_s if fn.__self__._copies is not None else 1.0
        monkeypatch.setattr(search_probe, "_time_on_threads", timed)
        assert search_probe._copies_if_faster(_cpu_engine, config, codebook, run, 2, 0.01)[0] is chosen
    # One worker, or a path without per-thread copies: never.
    assert not search_probe._copies_if_faster(_cpu_engine, config, codebook, run, 1, 0.01)[0]
    faiss_like = SearchConfig("addmm", 512, 2 << 20)
    assert not search_probe._copies_if_faster(_cpu_engine, faiss_like, codebook, run, 2, 0.01)[0]


def test_it_is_built_once_and_loaded_from_the_cache_after(lib, rebuilt):
    assert _native.library() is not None
    built = list((rebuilt / "native").glob("nearest-*"))
    assert len(built) == 1 and not [p for p in (rebuilt / "native").iterdir() if p.name.startswith(".")]
    stamp = built[0].stat().st_mtime_ns
    _native.forget()
    assert _native.library() is not None and built[0].stat().st_mtime_ns == stamp


def test_without_a_compiler_the_engine_goes_on_without_it(rebuilt, monkeypatch):
    monkeypatch.setattr(_native, "_compiler", lambda: None)
    assert _native.library() is None
    assert "no C compiler" in _native.unavailable()
    assert not [c for c in search_probe.candidates(4096, False, _native.library() is not None)
                if c.path == "native"]
    chosen, rates = search_probe.probe(8, 2048)
    assert chosen.path != "native" and not any(name.startswith("native") for name in rates)
    gen = torch.Generator().manual_seed(2)
    codebook, x = torch.randn(2048, 8, generator=gen), torch.randn(5000, 8, generator=gen)
    assert torch.equal(nearest_codes(x, codebook), reference_nearest_codes(x, codebook))


def test_a_broken_compiler_is_one_line_of_why_and_no_half_built_library(rebuilt, monkeypatch, tmp_path):
    broken = tmp_path / "broken-cc"
    broken.write_text("#!/bin/sh\necho 'cc1: error: bad target' >&2\nexit 1\n")
    broken.chmod(broken.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("CC", str(broken))
    assert _native.library() is None
    why = _native.unavailable()
    assert "bad target" in why and str(broken) in why and "\n" not in why
    assert not list((rebuilt / "native").iterdir())


def test_a_cached_choice_of_the_kernel_is_measured_again_where_it_cannot_load(rebuilt, monkeypatch):
    chosen = {"path": "native", "panel": 1024, "tile_bytes": 0, "kernel": "r4c1", "threads": 0}
    search_probe.cache_path().write_text(json.dumps({"version": search_probe.CACHE_VERSION, "entries": {
        search_probe._entry_key((16, 1024)): {"chosen": chosen, "frames_per_s": {}}}}))
    monkeypatch.setattr(_native, "ENABLED", False)
    assert search_probe.config_for(16, 1024).path != "native"
    assert _native.unavailable().startswith("turned off")


@pytest.mark.parametrize("copies", [False, True], ids=["shared", "copies"])
def test_a_cached_choice_of_the_kernel_is_read_back_where_it_loads(lib, tmp_path, monkeypatch, copies):
    monkeypatch.setenv("RVQ_VIEWER_CACHE", str(tmp_path))
    search_probe.forget()
    chosen = {"path": "native", "panel": 1024, "tile_bytes": 0, "kernel": "r4c1", "threads": 0, "copies": copies}
    search_probe.cache_path().write_text(json.dumps({"version": search_probe.CACHE_VERSION, "entries": {
        search_probe._entry_key((16, 1024)): {"chosen": chosen, "frames_per_s": {}}}}))
    monkeypatch.setattr(search_probe, "probe", lambda d, k: pytest.fail("probed"))
    try:
        assert search_probe.config_for(16, 1024) == SearchConfig(**chosen)
    finally:
        search_probe.forget()


def test_a_missing_source_means_no_kernel_not_a_failed_search(rebuilt, monkeypatch, tmp_path):
    monkeypatch.setattr(_native, "SOURCE", tmp_path / "gone.c")
    assert _native.library() is None and "gone.c" in _native.unavailable()
    gen = torch.Generator().manual_seed(8)
    codebook, x = torch.randn(1024, 16, generator=gen), torch.randn(5000, 16, generator=gen)
    assert torch.equal(nearest_codes(x, codebook), reference_nearest_codes(x, codebook))


@pytest.mark.parametrize("flags", [["-O3", "-march=x86-64-v3"], ["-O3"]], ids=["avx2", "baseline"])
def test_narrower_vector_builds_give_the_reference_codes(lib, tmp_path, flags):
    """The kernel at 32- and 16-byte vectors (an AVX2 host, SSE or NEON), built and run here."""
    import ctypes
    import platform
    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("these flags are x86-64's; -march=native covers this machine")
    if "avx2" in flags[-1] and "avx2" not in _native.cpu_signature():
        pytest.skip("this CPU cannot run AVX2 code")
    path = tmp_path / "nearest.so"
    _native._build(_native._compiler(), flags, tmp_path, path)
    narrow = _native._bind(ctypes.CDLL(str(path)))
    codebook, x = search_probe.probe_data(33, 700)
    want = reference_nearest_codes(x, codebook)
    for kernel in _native.KERNELS:
        p = plan(codebook, kernel, 512)
        p._fn = getattr(narrow, f"nearest_{kernel}")
        assert torch.equal(p.search(x), want), kernel
