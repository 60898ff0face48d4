"""The search probe: every candidate configuration gives the reference's codes (ties included), the
fastest exact one is chosen, an inexact one never is, and a shape is measured once per host."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from rvq_viewer.quant import _cpu_engine, _native, search, search_probe
from rvq_viewer.quant.search import nearest_codes, reference_nearest_codes
from rvq_viewer.quant.search_probe import SearchConfig


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    monkeypatch.setenv("RVQ_VIEWER_CACHE", str(tmp_path))
    search_probe.forget()
    search.clear_plans()
    yield tmp_path
    search_probe.forget()
    search.clear_plans()


@pytest.mark.parametrize("config", search_probe.candidates(3000, faiss_ok=False, native_ok=True), ids=search_probe.label)
def test_every_candidate_gives_the_reference_codes_with_ties(config):
    if config.path == "native" and _native.library() is None:
        pytest.skip(f"no native kernel here: {_native.unavailable()}")
    codebook, x = search_probe.probe_data(48, 3000)
    plan = _cpu_engine.make_plan(codebook, None, config)
    assert torch.equal(plan.search(x), reference_nearest_codes(x, codebook))


def test_faiss_is_a_candidate_only_where_its_codes_are_exact(fresh):
    pytest.importorskip("faiss")
    gen = torch.Generator().manual_seed(5)
    x, codebook = torch.randn(3000, 16, generator=gen), torch.randn(1024, 16, generator=gen)
    plan = _cpu_engine.make_plan(codebook, None, SearchConfig("faiss", 1024, 0))
    assert torch.equal(plan.search(x), reference_nearest_codes(x, codebook))    # no ties: the same codes
    codebook, x = search_probe.probe_data(16, 1024)                               # duplicated codes
    tied = torch.equal(_cpu_engine.make_plan(codebook, None, SearchConfig("faiss", 1024, 0)).search(x),
                       reference_nearest_codes(x, codebook))
    _, rates = search_probe.probe(16, 1024)
    assert (rates["faiss"] > 0) == tied


def test_the_probe_never_chooses_an_inexact_candidate(fresh, monkeypatch):
    fast_but_wrong = SearchConfig("wrong", 64, 1 << 20)

    class Wrong:
        def search(self, x, block=None):
            return torch.zeros(x.shape[0], dtype=torch.long)      # instant, and wrong

    real = _cpu_engine.make_plan
    monkeypatch.setattr(_cpu_engine, "make_plan",
                        lambda cb, sq, config: Wrong() if config.path == "wrong" else real(cb, sq, config))
    monkeypatch.setattr(search_probe, "candidates", lambda k, faiss_ok, native_ok: [fast_but_wrong, SearchConfig("addmm", 512),
                                                                          SearchConfig("onednn", 512)])
    chosen, rates = search_probe.probe(32, 1024)
    assert chosen != fast_but_wrong and chosen.path in ("addmm", "onednn")
    assert rates[search_probe.label(fast_but_wrong)] == -1.0
    assert all(rates[search_probe.label(c)] > 0 for c in (SearchConfig("addmm", 512), SearchConfig("onednn", 512)))


def test_a_shape_is_measured_once_and_kept_on_disk(fresh, monkeypatch):
    calls = []
    real = search_probe.probe
    monkeypatch.setattr(search_probe, "probe", lambda d, k: calls.append((d, k)) or real(d, k))
    chosen = search_probe.config_for(64, 1024)
    assert calls == [(64, 1024)]
    entry = next(iter(json.loads(search_probe.cache_path().read_text())["entries"].values()))
    assert SearchConfig(**entry["chosen"]) == chosen and entry["frames_per_s"]
    search_probe.forget()                      # a new process: read from disk, not measured again
    assert search_probe.config_for(64, 1024) == chosen and calls == [(64, 1024)]
    # The search uses it, and its codes are the reference's.
    gen = torch.Generator().manual_seed(3)
    x, codebook = torch.randn(5000, 64, generator=gen), torch.randn(1024, 64, generator=gen)
    assert search.plan_for(codebook, None).config == chosen
    assert torch.equal(nearest_codes(x, codebook), reference_nearest_codes(x, codebook))


def test_a_damaged_cache_is_measured_again(fresh, monkeypatch):
    search_probe.cache_path().write_text("{not json")
    chosen = replace(search_probe.config_for(64, 512), threads=0, copies=False)
    assert chosen in search_probe.candidates(512, True, True)
    data = json.loads(search_probe.cache_path().read_text())
    assert data["version"] == search_probe.CACHE_VERSION and len(data["entries"]) == 1
    # An entry naming a configuration this version does not offer is not trusted either.
    key = next(iter(data["entries"]))
    data["entries"][key]["chosen"] = {"path": "onednn", "panel": 3, "tile_bytes": 1}
    search_probe.cache_path().write_text(json.dumps(data))
    search_probe.forget()
    assert search_probe.config_for(64, 512).panel != 3


def test_small_shapes_and_the_switch_skip_the_probe(fresh, monkeypatch):
    monkeypatch.setattr(search_probe, "probe", lambda d, k: pytest.fail("probed"))
    assert search_probe.config_for(8, 64) == search_probe.DEFAULT
    monkeypatch.setattr(search_probe, "PROBE_ENABLED", False)
    assert search_probe.config_for(256, 4096) == search_probe.DEFAULT


def test_warm_up_measures_the_demo_and_common_shapes(fresh, monkeypatch, capsys):
    from rvq_viewer.cli import warm_up
    from rvq_viewer.io import load_quantizer
    from rvq_viewer.locations import demo_paths
    monkeypatch.setattr(warm_up, "COMMON_SHAPES", [(32, 512)])
    warm_up.probe_search()
    entries = json.loads(search_probe.cache_path().read_text())["entries"]
    demo = load_quantizer(demo_paths()[0])
    wanted = {(32, 512)} | {(int(c.shape[1]), int(c.shape[0])) for c in demo.codebooks}
    assert {key.rsplit("|", 1)[1].strip() for key in entries} >= {f"float32 D={d} K={k}" for d, k in wanted
                                                                   if d * k >= search_probe.MIN_PROBED}
    out = capsys.readouterr().out
    assert "search configurations for" in out
    assert "search workers: " in out
    assert ("native kernel: " + str(_native.SOURCE.parent)) not in out       # built in the cache, not beside the source
    assert ("native kernel: " in out) == (_native.library() is not None)


def test_probing_leaves_the_calling_threads_torch_threads_alone(fresh):
    before = torch.get_num_threads()
    search_probe.probe(32, 1024)
    for config in search_probe.candidates(1024, *search_probe._available()):
        _cpu_engine.make_plan(torch.randn(1024, 32), None, config).search(torch.randn(100, 32))
    assert torch.get_num_threads() == before


def test_probes_in_workers_and_in_another_thread_at_once_finish(fresh):
    """An audit's workers probing one shape while another thread (a GUI job) probes another: no probe
    waits for the workers, so neither can wait for the other."""
    import threading

    from rvq_viewer.runtime import cpu_workers
    pool = cpu_workers()
    if pool is None:
        pytest.skip("one core or no OpenMP: no workers")
    results = {}
    other = threading.Thread(target=lambda: results.setdefault("thread", search_probe.config_for(40, 700)))
    other.start()
    results["workers"] = pool.run(lambda i: search_probe.config_for(44, 900), range(4))
    other.join(120)
    assert not other.is_alive()
    assert replace(results["thread"], threads=0, copies=False) in search_probe.candidates(700, True, True)
    assert len(set(results["workers"])) == 1


@pytest.mark.parametrize("times,chosen", [({1: 1.0, 2: 0.5}, 0), ({1: 0.5, 2: 1.0}, 1), ({1: 0.95, 2: 1.0}, 0)])
def test_fewer_threads_are_chosen_only_when_clearly_faster(monkeypatch, times, chosen):
    monkeypatch.setattr(search_probe, "_time_on_threads", lambda search, pieces, t: times[t])
    run = type("Run", (), {"x": torch.zeros(1000, 4), "search": None})()
    threads, rates = search_probe._fastest_thread_count(run, 2, search_probe.THREAD_PROBE_S / 3)
    rows = 3 * 1000
    assert threads == chosen and rates == {t: rows / s for t, s in times.items()}


def test_the_thread_count_is_measured_on_real_threads_and_kept_on_disk(fresh, monkeypatch):
    from rvq_viewer.runtime import cpu_pool
    monkeypatch.setattr(cpu_pool, "worker_count", lambda: 2)
    chosen, rates = search_probe.probe(32, 1024)
    name = search_probe.label(replace(chosen, copies=False))
    assert {f"{name} on {t} threads" for t in (1, 2)} <= set(rates)
    assert all(rates[f"{name} on {t} threads"] > 0 for t in (1, 2))
    forced = SearchConfig(chosen.path, chosen.panel, chosen.tile_bytes, chosen.kernel, threads=1)
    monkeypatch.setattr(search_probe, "probe", lambda d, k: (forced, {}))
    assert search_probe.config_for(32, 1024) == forced
    search_probe.forget()
    monkeypatch.setattr(search_probe, "probe", lambda d, k: pytest.fail("probed again"))
    assert search_probe.config_for(32, 1024).threads == 1


def test_a_measured_thread_count_caps_the_workers_a_search_and_an_audit_use(fresh, monkeypatch):
    from rvq_viewer.analysis.audit.engine import AuditRunner
    from rvq_viewer.quant import Quantizer
    from rvq_viewer.runtime import cpu_pool
    pool = cpu_pool.cpu_workers()
    if pool is None:
        pytest.skip("one core: no workers to cap")
    one = SearchConfig("addmm", 512, 2 << 20, threads=1)
    monkeypatch.setattr(_cpu_engine, "config_for", lambda d, k: one)
    monkeypatch.setattr(search, "config_for", lambda d, k: one)
    asked = []
    real = type(pool).run
    monkeypatch.setattr(type(pool), "run", lambda self, fn, items, workers=None: asked.append(workers)
                        or real(self, fn, items, workers))
    gen = torch.Generator().manual_seed(4)
    codebook, x = torch.randn(512, 32, generator=gen), torch.randn(9000, 32, generator=gen)
    assert torch.equal(nearest_codes(x, codebook), reference_nearest_codes(x, codebook))
    quantizer = Quantizer(format="test", codebooks=[codebook, codebook.flip(0).contiguous()])
    AuditRunner(quantizer, torch.device("cpu")).encode(x)
    assert asked == [1, 1]


def test_a_capped_run_uses_no_more_workers_at_once():
    from rvq_viewer.runtime import cpu_pool
    pool = cpu_pool.cpu_workers()
    if pool is None:
        pytest.skip("one core: no workers to cap")
    import threading
    import time
    lock, active, peak = threading.Lock(), [0], [0]

    def item(_):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.01)
        with lock:
            active[0] -= 1

    pool.run(item, range(8), workers=1)
    assert peak[0] == 1
    pool.run(item, range(8))
    assert peak[0] == min(pool.n, 8)


@pytest.mark.parametrize("n,workers,stride,want", [(100_000, 2, 1, 2048), (20_000, 2, 1, 1250), (3000, 2, 1, 256),
                                                    (20_000, 2, 3, 1248), (20_000, 16, 1, 256)])
def test_pieces_shrink_so_every_worker_takes_several(n, workers, stride, want):
    from rvq_viewer.runtime import piece_rows
    assert piece_rows(n, workers, stride=stride) == want


def test_a_choice_measured_on_other_kernel_code_is_measured_again(fresh, monkeypatch):
    """A release that changes the native kernels (or adds one) must not keep the last one's choice."""
    from rvq_viewer.quant import _native
    calls = []
    real_probe = search_probe.probe
    monkeypatch.setattr(search_probe, "probe", lambda d, k: calls.append((d, k)) or real_probe(d, k))
    search_probe.config_for(64, 512)
    search_probe.forget()
    search_probe.config_for(64, 512)
    assert calls == [(64, 512)]                   # read back while the kernel is the same
    monkeypatch.setattr(_native, "source_digest", lambda: "another")
    search_probe.forget()
    search_probe.config_for(64, 512)
    assert calls == [(64, 512), (64, 512)]


def test_a_probe_that_finds_fewer_threads_faster_still_measures_the_copies(fresh, monkeypatch):
    from rvq_viewer.runtime import cpu_pool
    monkeypatch.setattr(cpu_pool, "worker_count", lambda: 4)
    monkeypatch.setattr(search_probe, "_fastest_thread_count", lambda run, n, one_pass_s: (2, {2: 1.0}))
    asked = []
    real = search_probe._copies_if_faster
    monkeypatch.setattr(search_probe, "_copies_if_faster",
                        lambda engine, config, codebook, run, threads, s: asked.append(threads)
                        or real(engine, config, codebook, run, threads, s))
    chosen, _ = search_probe.probe(32, 512)
    assert chosen.threads == 2 and asked == [2]
