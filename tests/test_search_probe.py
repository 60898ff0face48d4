"""The search probe: every candidate configuration gives the reference's codes (ties included), the
fastest exact one is chosen, an inexact one never is, and a shape is measured once per host."""

from __future__ import annotations

import json

import pytest
import torch

from rvq_viewer.quant import _cpu_engine, search, search_probe
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


@pytest.mark.parametrize("config", search_probe.candidates(3000, faiss_ok=False), ids=search_probe.label)
def test_every_candidate_gives_the_reference_codes_with_ties(config):
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
    monkeypatch.setattr(search_probe, "candidates", lambda k, faiss_ok: [fast_but_wrong, SearchConfig("addmm", 512),
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
    assert search_probe.config_for(64, 512) in search_probe.candidates(512, True)
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
    assert "search configurations for" in capsys.readouterr().out


def test_probing_leaves_the_calling_threads_torch_threads_alone(fresh):
    before = torch.get_num_threads()
    search_probe.probe(32, 1024)
    for config in search_probe.candidates(1024, _cpu_engine.faiss_module() is not None):
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
    assert not other.is_alive() and results["thread"] in search_probe.candidates(700, True)
    assert len(set(results["workers"])) == 1
