"""The audit engine: devices, batches halved on out-of-memory (simulated: no GPU needed), the
read-ahead thread, pages of mapped files given back, and codes equal to EnCodec's."""

from __future__ import annotations

import gc
import threading
import time

import numpy as np
import pytest
import torch

from peers import encodec_core_vq
from rvq_viewer.analysis.audit import AuditAccumulator, engine, iter_audit, run_audit
from rvq_viewer.runtime import available_devices, resolve_device
from rvq_viewer.analysis.audit.engine import AuditRunner, encode_frames
from rvq_viewer.analysis.audit.prefetch import PageReleaser, Prefetcher, prefetch, release_file_pages
from rvq_viewer.quant import Quantizer
from rvq_viewer import runtime as search_mod
from rvq_viewer.errors import LoadError
from rvq_viewer.io import FeatureSource


def fake_oom():
    cls = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    return cls("CUDA out of memory. Tried to allocate 1.00 GiB (simulated)")


def random_quantizer(d=8, k=32, n_q=3, seed=0) -> Quantizer:
    gen = torch.Generator().manual_seed(seed)
    return Quantizer(format="test", codebooks=[torch.randn(k, d, generator=gen) for _ in range(n_q)])


def same_audit(a: AuditAccumulator, b: AuditAccumulator) -> None:
    assert a.frames == b.frames
    for x, y in zip(a.layers, b.layers):
        assert np.array_equal(x.counts, y.counts)
        assert x.residual.sum_sq == pytest.approx(y.residual.sum_sq, rel=1e-9)
        assert x.residual.sum == pytest.approx(y.residual.sum, rel=1e-9)
        assert np.array_equal(x.residual.histogram.counts, y.residual.histogram.counts)
    assert a.input.sum_sq == pytest.approx(b.input.sum_sq, rel=1e-9)


# --- devices -------------------------------------------------------------------------------------------

def test_resolve_device_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(None) == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="CUDA"):
        resolve_device("cuda")
    with pytest.raises(ValueError):
        resolve_device("cuda:1")
    with pytest.raises((ValueError, RuntimeError)):
        resolve_device("tpu")
    assert available_devices() == ["auto", "cpu"]


def test_resolve_device_with_two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("cuda") == torch.device("cuda", 0)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ValueError, match="cuda:2"):
        resolve_device("cuda:2")
    assert available_devices() == ["auto", "cpu", "cuda:0", "cuda:1"]


def test_gpu_batch_is_chosen_from_free_memory(monkeypatch):
    quantizer = random_quantizer(d=128, k=1024, n_q=8)
    runner = AuditRunner(quantizer, torch.device("cpu"))
    monkeypatch.setattr(engine, "free_memory", lambda device: 4 << 30)
    batch = runner.initial_batch()
    per_frame = 4 * 128 * 6 + 16 * 8
    assert batch == (4 << 30) // 4 // per_frame
    monkeypatch.setattr(engine, "free_memory", lambda device: 1 << 60)
    assert runner.initial_batch() == engine.MAX_GPU_BATCH
    monkeypatch.setattr(engine, "free_memory", lambda device: None)
    assert runner.initial_batch() is None


# --- out-of-memory halving -----------------------------------------------------------------------------

def test_out_of_memory_halves_the_batch_and_the_audit_carries_on(monkeypatch):
    quantizer = random_quantizer()
    frames = torch.randn(1000, 8, generator=torch.Generator().manual_seed(1))
    want = AuditAccumulator(quantizer.codebook_sizes)
    AuditRunner(quantizer, torch.device("cpu")).audit(frames, want)

    real = engine.encode_piece
    seen = []

    def encode_piece(q, part, *args, **kwargs):
        seen.append(part.shape[0])
        if part.shape[0] > 150:
            raise fake_oom()
        return real(q, part, *args, **kwargs)

    monkeypatch.setattr(engine, "encode_piece", encode_piece)
    monkeypatch.setattr(engine, "cpu_workers", lambda: None)      # the batch path, as on a GPU
    runner = AuditRunner(quantizer, torch.device("cpu"), batch=1000)
    got = AuditAccumulator(quantizer.codebook_sizes)
    assert runner.audit(frames, got) == 1000
    assert seen[:4] == [1000, 500, 250, 125]
    assert runner.batch == 125 and runner.halvings == 3
    same_audit(got, want)
    # The next chunk starts at the halved size: no further failures.
    seen.clear()
    runner.audit(frames[:300], got)
    assert seen == [125, 125, 50]


def test_halving_respects_the_frame_stride(monkeypatch):
    quantizer = random_quantizer()
    quantizer.frame_stride = 4
    real = engine.encode_piece

    def encode_piece(q, part, *args, **kwargs):
        assert part.shape[0] % 4 == 0
        if part.shape[0] > 100:
            raise fake_oom()
        return real(q, part, *args, **kwargs)

    monkeypatch.setattr(engine, "encode_piece", encode_piece)
    monkeypatch.setattr(engine, "cpu_workers", lambda: None)
    runner = AuditRunner(quantizer, torch.device("cpu"), batch=400)
    acc = AuditAccumulator(quantizer.codebook_sizes)
    runner.audit(torch.randn(400, 8), acc)
    assert runner.batch == 100 and acc.frames == 400


def test_out_of_memory_at_the_smallest_batch_and_other_errors_propagate(monkeypatch):
    quantizer = random_quantizer()
    monkeypatch.setattr(engine, "cpu_workers", lambda: None)

    def always_oom(*args, **kwargs):
        raise fake_oom()

    monkeypatch.setattr(engine, "encode_piece", always_oom)
    acc = AuditAccumulator(quantizer.codebook_sizes)
    with pytest.raises(Exception) as info:
        AuditRunner(quantizer, torch.device("cpu"), batch=64).audit(torch.randn(64, 8), acc)
    assert search_mod.is_out_of_memory(info.value)
    assert acc.frames == 0                                       # nothing half-counted

    def broken(*args, **kwargs):
        raise ValueError("not a memory problem")

    monkeypatch.setattr(engine, "encode_piece", broken)
    runner = AuditRunner(quantizer, torch.device("cpu"), batch=64)
    with pytest.raises(ValueError, match="not a memory"):
        runner.audit(torch.randn(64, 8), acc)
    assert runner.halvings == 0


# --- read-ahead ----------------------------------------------------------------------------------------

def test_prefetch_keeps_order_and_reads_ahead():
    produced = []

    def source():
        for i in range(20):
            produced.append(i)
            yield i

    reader = prefetch(source(), depth=2)
    first = next(reader)
    time.sleep(0.2)
    assert first == 0 and len(produced) >= 2                     # the reader ran ahead
    assert len(produced) <= 4                                    # but only `depth` items ahead
    assert [first] + list(reader) == list(range(20))
    assert list(prefetch(iter([]), 2)) == []
    assert list(prefetch(range(5), 0)) == list(range(5))


def test_prefetch_raises_the_readers_error_in_the_consumer():
    def source():
        yield 1
        yield 2
        raise LoadError("frame 7 holds NaN or infinite values", "x.npy")

    reader = prefetch(source(), depth=2)
    got = []
    with pytest.raises(LoadError, match="frame 7 holds NaN") as info:
        for item in reader:
            got.append(item)
    assert got == [1, 2]
    assert "x.npy" in str(info.value)
    assert not reader.alive


def test_closing_early_stops_the_reader_and_closes_the_source():
    closed = threading.Event()

    def source():
        try:
            for i in range(10_000):
                yield i
        finally:
            closed.set()

    reader = Prefetcher(source(), depth=2)
    assert next(reader) == 0
    reader.close()
    assert closed.wait(5) and not reader.alive
    with pytest.raises(StopIteration):
        next(reader)


def test_a_dropped_prefetcher_stops_its_reader():
    def source():
        for i in range(10_000):
            yield i

    reader = Prefetcher(source(), depth=1)
    next(reader)
    thread = reader._thread
    del reader
    gc.collect()
    thread.join(5)
    assert not thread.is_alive()


def test_stopping_an_audit_early_stops_its_reader(tmp_path):
    quantizer = random_quantizer()
    np.save(tmp_path / "f.npy", np.random.default_rng(0).standard_normal((4000, 8), dtype=np.float32))
    source = FeatureSource([tmp_path / "f.npy"], dim=8, chunk_frames=256)
    before = {t for t in threading.enumerate() if t.name == "rvq-prefetch"}
    audit = iter_audit(quantizer, source, "cpu")
    first = next(audit)
    assert first.frames_done == 256
    audit.close()
    time.sleep(0.1)
    assert {t for t in threading.enumerate() if t.name == "rvq-prefetch" and t.is_alive()} <= before


def test_a_bad_frame_read_ahead_fails_the_audit_with_its_message(tmp_path):
    quantizer = random_quantizer()
    data = np.random.default_rng(0).standard_normal((3000, 8), dtype=np.float32)
    data[2500, 3] = np.nan
    np.save(tmp_path / "bad.npy", data)
    with pytest.raises(LoadError, match="frame 2500"):
        run_audit(quantizer, FeatureSource([tmp_path / "bad.npy"], dim=8, chunk_frames=512), device="cpu")


# --- mapped pages ----------------------------------------------------------------------------------------

def rss_file_kb() -> int | None:
    try:
        for line in open("/proc/self/status"):
            if line.startswith("RssFile:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


@pytest.mark.skipif(rss_file_kb() is None, reason="needs Linux /proc")
def test_pages_of_a_mapped_file_are_given_back_unchanged(tmp_path):
    path = tmp_path / "big.npy"
    data = np.arange(16 << 20, dtype=np.float32).reshape(-1, 64)        # 64 MiB
    np.save(path, data)
    mapped = np.load(path, mmap_mode="r")
    total = float(mapped.sum(dtype=np.float64))                         # touches every page
    before = rss_file_kb()
    assert release_file_pages(path) >= 60 << 20
    after = rss_file_kb()
    assert before - after > 40_000                                      # kB
    assert float(mapped.sum(dtype=np.float64)) == total                 # read again, same data
    releaser = PageReleaser(every_bytes=1 << 20)
    releaser.consumed(path, 2 << 20)
    assert releaser.releases == 1
    del mapped


# --- whole audits ----------------------------------------------------------------------------------------

def test_workers_and_single_thread_give_the_same_audit(tmp_path, monkeypatch):
    quantizer = random_quantizer(d=16, k=64, n_q=4)
    np.save(tmp_path / "f.npy", np.random.default_rng(1).standard_normal((9000, 16), dtype=np.float32))
    source = lambda: FeatureSource([tmp_path / "f.npy"], dim=16, chunk_frames=5000)  # noqa: E731
    *_, parallel = iter_audit(quantizer, source(), "cpu")
    monkeypatch.setattr(engine, "cpu_workers", lambda: None)
    *_, serial = iter_audit(quantizer, source(), "cpu")
    same_audit(parallel.accumulator, serial.accumulator)
    # ...and the same as the plain per-layer loop of the quantizer itself.
    manual = AuditAccumulator(quantizer.codebook_sizes)
    frames = torch.from_numpy(np.load(tmp_path / "f.npy"))
    for chunk in (frames[:5000], frames[5000:]):
        manual.input.add(chunk)
        for step in quantizer.iter_layers(chunk):
            manual.layers[step.index].add(step.codes, step.residual)
    same_audit(parallel.accumulator, manual)


@pytest.mark.parametrize("d,k,n_q,n", [(8, 16, 4, 5000), (128, 1024, 8, 6000), (256, 2048, 2, 5000),
                                       (768, 1024, 1, 4500), (32, 65536, 2, 400)])
def test_codes_equal_encodec_reference(d, k, n_q, n):
    cv = encodec_core_vq()
    gen = torch.Generator().manual_seed(d + k)
    codebooks = [torch.randn(k, d, generator=gen) for _ in range(n_q)]
    ref = cv.ResidualVectorQuantization(num_quantizers=n_q, dim=d, codebook_size=k, kmeans_init=False)
    for layer, table in zip(ref.layers, codebooks):
        layer._codebook.embed.copy_(table)
    x = torch.randn(n, d, generator=gen)
    with torch.no_grad():
        want = ref.encode(x.t().unsqueeze(0))[:, 0]
    quantizer = Quantizer(format="test", codebooks=codebooks)
    assert torch.equal(encode_frames(quantizer, x), want)
    assert torch.equal(quantizer.encode(x), want)
    acc = AuditAccumulator(quantizer.codebook_sizes)
    AuditRunner(quantizer, torch.device("cpu")).audit(x, acc)
    for layer in range(n_q):
        assert np.array_equal(acc.layers[layer].counts, np.bincount(want[layer].numpy(), minlength=k))


def test_encode_frames_on_a_projected_quantizer_uses_its_own_layers():
    class Doubled(Quantizer):
        plain_residual = False          # its layer output is not the codebook row: declared, not detected

        def layer_output(self, layer, codes):
            return super().layer_output(layer, codes) * 0.5

    gen = torch.Generator().manual_seed(3)
    quantizer = Doubled(format="test", codebooks=[torch.randn(32, 8, generator=gen) for _ in range(3)])
    x = torch.randn(9000, 8, generator=gen)
    assert torch.equal(encode_frames(quantizer, x), quantizer.encode(x))
