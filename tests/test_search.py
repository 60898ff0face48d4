"""The nearest-code search engine: same codes as a float64 brute force and as EnCodec, ties to the
lowest index, plans kept per codebook, CPU workers, and the GPU path's out-of-memory halving."""

from __future__ import annotations

import pytest
import torch

from rvq_viewer.quant import _cpu_engine, search
from rvq_viewer.quant.search import auto_block, nearest_codes, reference_nearest_codes, squared_norms
from rvq_viewer.runtime import CpuWorkers, cpu_workers, is_out_of_memory


def brute_force(x: torch.Tensor, codebook: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 distances and their argmin (torch.argmin: first index on ties)."""
    d = torch.cdist(x.double(), codebook.double()) ** 2
    return d.argmin(dim=1), d


def assert_nearest(x, codebook, got):
    """`got` is the nearest code, or within float32 rounding of it (a near-tie)."""
    want, d = brute_force(x, codebook)
    differ = (got != want).nonzero().flatten()
    rows = torch.arange(x.shape[0])
    gap = (d[rows, got] - d[rows, want]).abs()
    scale = d[rows, want].abs() + (x.double() ** 2).sum(1) + (codebook.double() ** 2).sum(1).max()
    assert bool((gap[differ] <= 1e-5 * scale[differ]).all()), f"{differ.numel()} rows not nearest"


@pytest.mark.parametrize("n,d,k", [(1, 3, 5), (500, 2, 4), (777, 7, 31), (1200, 16, 100), (3000, 128, 1024),
                                   (1500, 64, 2048), (900, 32, 4097), (300, 8, 9000)])
def test_matches_brute_force(n, d, k):
    gen = torch.Generator().manual_seed(n + d + k)
    x = torch.randn(n, d, generator=gen)
    codebook = torch.randn(k, d, generator=gen)
    got = nearest_codes(x, codebook)
    assert got.dtype == torch.long and got.shape == (n,)
    assert_nearest(x, codebook, got)
    assert torch.equal(got, reference_nearest_codes(x, codebook))


def test_k_65536_small_n_matches_encodec():
    from peers import encodec_core_vq
    cv = encodec_core_vq()
    gen = torch.Generator().manual_seed(5)
    codebook = torch.randn(65536, 32, generator=gen)
    x = torch.randn(600, 32, generator=gen)
    ref = cv.EuclideanCodebook(dim=32, codebook_size=65536, kmeans_init=False)
    ref.embed.copy_(codebook)
    want = ref.encode(x)
    got = nearest_codes(x, codebook)
    assert torch.equal(got, want)


def test_ties_go_to_the_lowest_index():
    gen = torch.Generator().manual_seed(1)
    base = torch.randn(40, 12, generator=gen)
    # Three copies of every code, the first block twice more deep in the table (past panel 0 for
    # PANEL-sized tables too): the lowest index always wins.
    codebook = torch.cat([base, base, base])
    x = torch.randn(2000, 12, generator=gen)
    got = nearest_codes(x, codebook)
    assert int(got.max()) < 40
    assert torch.equal(got, brute_force(x, base)[0])
    # All codes equal: code 0 everywhere; exact ties across panels as well.
    same = torch.ones(search.PANEL + 300, 4)
    assert int(nearest_codes(torch.randn(50, 4, generator=gen), same).max()) == 0
    # A frame exactly halfway between two codes.
    two = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    assert nearest_codes(torch.tensor([[0.0, 5.0]]), two).tolist() == [0]


def test_codes_past_a_panel_boundary():
    gen = torch.Generator().manual_seed(2)
    k = 2 * search.PANEL + 17
    codebook = torch.randn(k, 6, generator=gen)
    targets = torch.tensor([0, search.PANEL - 1, search.PANEL, 2 * search.PANEL, k - 1])
    x = codebook[targets] + 1e-4
    assert nearest_codes(x, codebook).tolist() == targets.tolist()


def test_views_noncontiguous_rows_and_half_codebooks():
    gen = torch.Generator().manual_seed(3)
    table = torch.randn(3 * 256, 24, generator=gen)
    sq = squared_norms(table)
    x = torch.randn(100, 48, generator=gen)[:, ::2]           # non-contiguous rows
    for t in range(3):                                         # per-call slices (vector-quantize-pytorch)
        view = table[t * 256:(t + 1) * 256]
        got = nearest_codes(x, view, sq[t * 256:(t + 1) * 256])
        assert torch.equal(got, brute_force(x, view)[0])
    half = table[:256].half()
    got = nearest_codes(x, half)
    assert torch.equal(got, brute_force(x, half.float())[0])
    assert nearest_codes(x[:0], table).shape == (0,)


def test_plan_follows_in_place_changes_of_the_codebook():
    gen = torch.Generator().manual_seed(4)
    codebook = torch.randn(64, 8, generator=gen)
    x = torch.randn(10, 8, generator=gen)
    first = nearest_codes(x, codebook)
    codebook.mul_(-1.0)                                        # bumps the tensor's version
    second = nearest_codes(x, codebook)
    assert torch.equal(second, brute_force(x, codebook)[0])
    assert not torch.equal(first, second)


def test_backends_agree_and_can_be_forced(monkeypatch):
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(5000, 96, generator=gen)
    codebook = torch.randn(1000, 96, generator=gen)
    auto = nearest_codes(x, codebook)
    monkeypatch.setattr(search, "SEARCH_BACKEND", "fp32")
    fp32 = nearest_codes(x, codebook)
    monkeypatch.setattr(search, "SEARCH_BACKEND", "reference")
    ref = nearest_codes(x, codebook)
    assert torch.equal(auto, ref) and torch.equal(fp32, ref)


def test_addmm_fallback_without_onednn(monkeypatch):
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(3000, 20, generator=gen)
    codebook = torch.randn(700, 20, generator=gen)
    monkeypatch.setattr(_cpu_engine, "_ONEDNN_OK", False)
    search.clear_plans()
    try:
        assert torch.equal(nearest_codes(x, codebook), reference_nearest_codes(x, codebook))
    finally:
        search.clear_plans()


# --- workers -------------------------------------------------------------------------------------------

def test_workers_keep_order_and_raise_the_first_error():
    workers = cpu_workers()
    if workers is None:
        pytest.skip("one core or no OpenMP: no workers")
    assert workers.run(lambda i: i * i, range(50)) == [i * i for i in range(50)]
    assert workers.run(lambda i: i, []) == []

    def boom(i):
        if i == 7:
            raise KeyError("seven")
        return i

    with pytest.raises(KeyError, match="seven"):
        workers.run(boom, range(20))
    # Nested use from inside a worker runs inline instead of waiting on itself.
    assert workers.run(lambda i: workers.run(lambda j: i + j, range(3)), range(4)) == [
        [i, i + 1, i + 2] for i in range(4)]


def test_workers_run_torch_single_threaded_and_leave_the_caller_alone():
    workers = cpu_workers()
    if workers is None:
        pytest.skip("no workers")
    before = torch.get_num_threads()
    assert set(workers.run(lambda _: torch.get_num_threads(), range(8))) == {1}
    assert torch.get_num_threads() == before


def test_a_private_pool_with_a_stub_thread_setter():
    calls = []
    pool = CpuWorkers(2, lambda n: calls.append(n))
    assert sorted(pool.run(lambda i: i + 1, range(5))) == [1, 2, 3, 4, 5]
    assert calls == [1, 1]
    for _ in pool.threads:
        pool._tasks.put(None)


# --- memory: the generic (GPU) path ----------------------------------------------------------------------

def fake_oom():
    cls = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    return cls("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")


def test_out_of_memory_halves_the_block_and_carries_on(monkeypatch):
    gen = torch.Generator().manual_seed(9)
    x = torch.randn(1000, 16, generator=gen)
    codebook = torch.randn(300, 16, generator=gen)
    want = reference_nearest_codes(x, codebook, block=1000)
    real_addmm = torch.addmm
    sizes = []

    def addmm(bias, rows, *args, **kwargs):
        sizes.append(rows.shape[0])
        if rows.shape[0] > 120:
            raise fake_oom()
        return real_addmm(bias, rows, *args, **kwargs)

    monkeypatch.setattr(torch, "addmm", addmm)
    got = reference_nearest_codes(x, codebook, block=1000)
    assert torch.equal(got, want)
    assert sizes[:4] == [1000, 500, 250, 125] and max(sizes[4:]) <= 120


def test_out_of_memory_at_one_row_and_other_errors_are_raised(monkeypatch):
    x = torch.randn(10, 4)
    codebook = torch.randn(8, 4)

    def addmm(*args, **kwargs):
        raise fake_oom()

    monkeypatch.setattr(torch, "addmm", addmm)
    with pytest.raises(Exception) as info:
        reference_nearest_codes(x, codebook, block=4)
    assert is_out_of_memory(info.value)

    def broken(*args, **kwargs):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(torch, "addmm", broken)
    with pytest.raises(RuntimeError, match="shapes"):
        reference_nearest_codes(x, codebook, block=4)


def test_oom_recognition_and_block_from_free_memory():
    assert is_out_of_memory(fake_oom())
    assert is_out_of_memory(RuntimeError("CUDA error: out of memory"))
    assert is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried..."))
    assert not is_out_of_memory(RuntimeError("size mismatch"))
    cuda = torch.device("cuda", 0)
    # A quarter of 8 GiB over K * (4 + 8) bytes a row.
    assert auto_block(cuda, 65536, free=8 << 30) == (8 << 30) // 4 // (65536 * 12)
    assert auto_block(cuda, 1024, free=80 << 30) == 65536
    assert auto_block(cuda, 65536, free=1 << 20) == 64
    assert auto_block(torch.device("cpu"), 1024) == search.DEFAULT_BLOCK


def test_shape_errors():
    with pytest.raises(ValueError):
        nearest_codes(torch.randn(3, 4), torch.randn(5, 3))
    with pytest.raises(ValueError):
        nearest_codes(torch.randn(3, 4), torch.randn(0, 4))
