"""The training-process monitor against the peers' own training code: counts, replacements, codes of every
family's output, ranks, drops, and that it imports light."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from fixtures_formats import dac_quantize, moshi_quantization, require
from peers import encodec_core_vq
from rvq_viewer.io.run_db import RunReader, run_files
from rvq_viewer.monitor import CodebookMonitor, MonitorError
from rvq_viewer.pipeline import open_run
from rvq_viewer.quant import ResidualVectorQuantization


def blobs(generator: torch.Generator, n_blobs: int = 16, dim: int = 8, scale: float = 3.0) -> torch.Tensor:
    return torch.randn(n_blobs, dim, generator=generator) * scale


def batch(centers: torch.Tensor, generator: torch.Generator, shape: tuple) -> torch.Tensor:
    """Frames around `centers`: [*shape, D]."""
    pick = torch.randint(0, centers.shape[0], shape, generator=generator)
    return centers[pick] + 0.3 * torch.randn(*shape, centers.shape[1], generator=generator)


def recorded_counts(run_dir) -> dict[int, list[np.ndarray]]:
    """step_to -> per-layer counts, from the database itself (not through the pipeline)."""
    reader = RunReader(run_files(run_dir)[0])
    try:
        return {w.step_to: [row.counts for row in reader.window_layers(w.id)] for w in reader.windows()}
    finally:
        reader.close()


def test_encodec_core_vq_in_training_counts_every_code_and_the_ema_crossings(tmp_path):
    cv = encodec_core_vq()
    torch.manual_seed(0)
    rvq = cv.ResidualVectorQuantization(num_quantizers=3, dim=8, codebook_size=32, kmeans_init=True,
                                        kmeans_iters=4, threshold_ema_dead_code=2)
    rvq.train()
    monitor = CodebookMonitor(tmp_path / "run", every=3, snapshot_every=2, queue_size=100).attach(rvq)
    g = torch.Generator().manual_seed(1)
    centers = blobs(g)
    expected: dict[int, np.ndarray] = {}
    sizes: dict[int, torch.Tensor] = {}
    for step in range(11):
        x = batch(centers, g, (2, 40)).transpose(1, 2)           # EnCodec takes [B, D, T]
        _, codes, _ = rvq(x)
        window_end = min(step // 3 * 3 + 2, 10)
        counts = np.stack([np.bincount(codes[i].flatten().numpy(), minlength=32) for i in range(3)])
        expected[window_end] = expected.get(window_end, 0) + counts
        sizes[step] = torch.stack([layer._codebook.cluster_size.clone() for layer in rvq.layers])
    monitor.close()
    got = recorded_counts(tmp_path / "run")
    assert sorted(got) == [2, 5, 8, 10]
    for end, counts in expected.items():
        assert np.array_equal(np.stack(got[end]), counts), end
    run = open_run(tmp_path / "run")
    assert [(w.step_from, w.step_to, w.steps) for w in run.windows] == [(0, 2, 3), (3, 5, 3), (6, 8, 3), (9, 10, 2)]
    # Died / revived events are the peer's own EMA sizes crossing its threshold between window ends.
    dead = {end: sizes[end] < 2 for end in (2, 5, 8, 10)}
    want = set()
    for before, after in ((2, 5), (5, 8), (8, 10)):
        for kind, mask in (("died", dead[after] & ~dead[before]), ("revived", dead[before] & ~dead[after])):
            want |= {(after, int(layer), int(code), kind) for layer, code in mask.nonzero().tolist()}
    got_events = {(e.step, e.layer, e.code, e.kind) for e in run.events if e.kind != "replaced"}
    assert got_events == want and want
    # The newest window's EMA-dead count is the peer's.
    assert run.windows[-1].ema_dead == [int(d.sum()) for d in dead[10]]
    run.close()


def test_vector_quantize_pytorch_replacements_are_the_peers_own_expiry(tmp_path):
    vq = require("vector_quantize_pytorch")
    torch.manual_seed(0)
    rvq = vq.ResidualVQ(dim=8, num_quantizers=3, codebook_size=64, kmeans_init=True, kmeans_iters=5,
                        threshold_ema_dead_code=2, decay=0.8)
    truth: dict[tuple[int, int, int], torch.Tensor] = {}
    step = {"now": 0}
    for index, layer in enumerate(rvq.layers):
        book = layer._codebook
        original = book.replace

        def replace(samples, batch_mask, seq_mask=None, _original=original, _layer=index, _book=book):
            before = _book.embed.detach().clone()
            _original(samples, batch_mask=batch_mask, seq_mask=seq_mask)
            changed = (before != _book.embed).any(-1)[0].nonzero().flatten().tolist()
            truth.update({(step["now"], _layer, c): _book.embed[0, c].detach().clone() for c in changed})
        book.replace = replace
    rvq.train()
    monitor = CodebookMonitor(tmp_path / "run", every=1, snapshot_every=1, queue_size=1000).attach(rvq)
    g = torch.Generator().manual_seed(1)
    centers = blobs(g)
    for s in range(30):
        step["now"] = s
        rvq(batch(centers, g, (4, 64)))
    monitor.close()
    run = open_run(tmp_path / "run")
    replaced = [e for e in run.events if e.kind == "replaced"]
    assert not run.drops
    # Every recorded replacement is one the peer made, at that step, and the monitor's snapshot holds the
    # very row the peer wrote.
    assert replaced
    reader = run.readers[0]
    for e in replaced:
        assert (e.step, e.layer, e.code) in truth, e
        window = next(w for w, s in reader.snapshot_windows() if s == e.step)
        row = reader.snapshot(window)[e.layer][e.code]
        assert np.array_equal(row, truth[(e.step, e.layer, e.code)].numpy())
    # Step 0 has no earlier state to compare with; after it, nearly every code that no frame chose in its
    # step is found (one respawned near where it was does not jump; a code chosen by a frame and replaced
    # in the same step moves as its frames would, and is not told apart).
    counts = recorded_counts(tmp_path / "run")
    unchosen = {k for k in truth if k[0] > 0 and counts[k[0]][k[1]][k[2]] == 0}
    found = unchosen & {(e.step, e.layer, e.code) for e in replaced}
    assert len(unchosen) > 20 and len(found) >= 0.9 * len(unchosen)
    run.close()


def _own_rvq():
    rvq = ResidualVectorQuantization(num_quantizers=2, dim=8, codebook_size=32, kmeans_init=True, kmeans_iters=3)
    return rvq, lambda g: (torch.randn(2, 8, 20, generator=g),), lambda out: out.codes.reshape(2, -1)


class ResidualVectorQuantizer(torch.nn.Module):
    """GPT-SoVITS's `module/quantize.py` wrapper, by its interface: `self.vq` is the core RVQ (its
    `module/core_vq.py`, which rvq_viewer.quant mirrors, EMA update before expiry) and forward returns
    (quantized, codes [n_q, B, T], mean commitment loss, the asked layers' outputs)."""

    def __init__(self, dimension: int, n_q: int, bins: int):
        super().__init__()
        self.vq = ResidualVectorQuantization(num_quantizers=n_q, dim=dimension, codebook_size=bins, kmeans_init=True,
                                             kmeans_iters=3, expire_before_ema=False)

    def forward(self, x, n_q=None, layers=None):
        out = self.vq(x, n_q=n_q, layers=layers)
        return out.quantized, out.codes, out.losses.mean(), out.layer_outputs


def _gpt_sovits():
    module = ResidualVectorQuantizer(8, 2, 32)
    return module, lambda g: (torch.randn(2, 8, 20, generator=g),), lambda out: out[1].reshape(2, -1)


def _vqp_grouped():
    vq = require("vector_quantize_pytorch")
    rvq = vq.GroupedResidualVQ(dim=16, num_quantizers=2, groups=2, codebook_size=32)
    # [G, B, N, n_q]; group g's code k is g * 32 + k in the layer (io/formats/vqpytorch.py numbering)
    return rvq, lambda g: (torch.randn(2, 20, 16, generator=g),), \
        lambda out: (out[1] + torch.arange(2).view(2, 1, 1, 1) * 32).permute(3, 1, 2, 0).reshape(2, -1)


def _vqp_heads():
    vq = require("vector_quantize_pytorch")
    module = vq.VectorQuantize(dim=16, codebook_size=32, heads=2, separate_codebook_per_head=True)
    return module, lambda g: (torch.randn(2, 20, 16, generator=g),), \
        lambda out: (out[1] + torch.tensor([0, 32])).reshape(1, -1)


def _vqp_rvq():
    vq = require("vector_quantize_pytorch")
    module = vq.ResidualVQ(dim=8, num_quantizers=3, codebook_size=32)
    return module, lambda g: (torch.randn(2, 20, 8, generator=g),), lambda out: out[1].reshape(-1, 3).t()


def _dac():
    module = dac_quantize().ResidualVectorQuantize(input_dim=16, n_codebooks=3, codebook_size=32, codebook_dim=8)
    return module, lambda g: (torch.randn(2, 16, 20, generator=g),), lambda out: out[1].transpose(0, 1).reshape(3, -1)


def _moshi():
    module = moshi_quantization().SplitResidualVectorQuantizer(dimension=16, n_q=3, bins=32, input_dimension=16,
                                                               output_dimension=16, q_dropout=False)
    return module, lambda g: (torch.randn(2, 16, 20, generator=g), 12.5), \
        lambda out: out.codes.transpose(0, 1).reshape(3, -1)


def _snac():
    import snac.vq
    module = snac.vq.ResidualVectorQuantize(input_dim=16, codebook_size=32, codebook_dim=8, vq_strides=[4, 2, 1])
    return module, lambda g: (torch.randn(2, 16, 20, generator=g),), lambda out: [c.reshape(-1) for c in out[1]]


FAMILIES = {"rvq-viewer / EnCodec order": _own_rvq, "GPT-SoVITS": _gpt_sovits,
            "vqpytorch ResidualVQ": _vqp_rvq, "vqpytorch heads": _vqp_heads, "vqpytorch groups": _vqp_grouped,
            "DAC": _dac, "moshi": _moshi, "SNAC": _snac}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_codes_come_from_each_familys_own_output(tmp_path, family):
    torch.manual_seed(0)
    module, inputs, reference = FAMILIES[family]()
    module.train()
    monitor = CodebookMonitor(tmp_path / "run", every=2, queue_size=100).attach(module)
    g = torch.Generator().manual_seed(3)
    expected = None
    for _ in range(3):
        out = module(*inputs(g))
        layers = reference(out)
        sizes = monitor.sizes
        counts = [np.bincount(np.asarray(c).reshape(-1), minlength=k) for c, k in zip(layers, sizes)]
        expected = counts if expected is None else [a + b for a, b in zip(expected, counts)]
    monitor.close()
    run = open_run(tmp_path / "run")
    assert run.codebook_sizes == monitor.sizes
    got, _, _ = run.window_data(0)
    second, _, _ = run.window_data(1)
    assert [(w.step_from, w.step_to) for w in run.windows] == [(0, 1), (2, 2)]
    for layer, want in enumerate(expected):
        assert np.array_equal(got[layer] + second[layer], want), layer
    run.close()


def test_hugging_face_codecs_are_watched_through_encode(tmp_path):
    require("transformers")
    from transformers import EncodecConfig
    from transformers.models.encodec.modeling_encodec import EncodecResidualVectorQuantizer
    config = EncodecConfig(codebook_size=32, codebook_dim=8, hidden_size=8, target_bandwidths=[1.5, 3.0],
                           sampling_rate=24000, upsampling_ratios=[8, 5, 4, 2])
    module = EncodecResidualVectorQuantizer(config)
    with torch.no_grad():
        for layer in module.layers:
            layer.codebook.embed.copy_(torch.randn_like(layer.codebook.embed))
            layer.codebook.inited.fill_(1)
    monitor = CodebookMonitor(tmp_path / "run", every=5).attach(module)
    codes = module.encode(torch.randn(2, 8, 30), bandwidth=3.0)           # [n_q, B, T]
    monitor.close()
    got = recorded_counts(tmp_path / "run")[0]
    assert len(got) == codes.shape[0]
    for layer in range(codes.shape[0]):
        assert np.array_equal(got[layer], np.bincount(codes[layer].flatten().numpy(), minlength=32))


def test_log_counts_codes_of_a_loop_and_ranks_merge(tmp_path):
    g = torch.Generator().manual_seed(0)
    total = np.zeros((2, 16), dtype=np.int64)
    monitors = [CodebookMonitor(tmp_path, every=4, rank=r, codebook_size=16) for r in (0, 1)]
    for step in range(8):
        for mon in monitors:
            codes = torch.randint(0, 16, (2, 50), generator=g)
            mon.log(step, codes)
            total += np.stack([np.bincount(c.numpy(), minlength=16) for c in codes])
    for mon in monitors:
        mon.close()
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".sqlite") == \
        ["rvq-monitor.rank0.sqlite", "rvq-monitor.rank1.sqlite"]
    run = open_run(tmp_path)
    assert [w.ranks for w in run.windows] == [2, 2]
    merged = [run.window_data(i)[0] for i in range(2)]
    assert np.array_equal(np.stack(merged[0]) + np.stack(merged[1]), total)
    assert run.windows[0].frames == [400, 400]            # 4 steps x 50 codes x 2 ranks
    run.close()


def test_rank_zero_only_leaves_other_ranks_silent(tmp_path):
    mon = CodebookMonitor(tmp_path, ranks="zero", rank=1, codebook_size=8)
    mon.log(0, torch.zeros(1, 5, dtype=torch.long))
    mon.close()
    assert not list(tmp_path.iterdir())


def test_a_full_queue_drops_windows_and_records_it_without_waiting(tmp_path, monkeypatch):
    from rvq_viewer.monitor import writer
    original = writer.Writer.write

    def slow(self, db, item):
        time.sleep(0.3)
        original(self, db, item)
    monkeypatch.setattr(writer.Writer, "write", slow)
    mon = CodebookMonitor(tmp_path, every=1, queue_size=1, codebook_size=8)
    worst = 0.0
    for step in range(12):
        start = time.perf_counter()
        mon.log(step, torch.full((1, 4), step % 8))
        worst = max(worst, time.perf_counter() - start)
    mon.close()
    assert worst < 0.1                         # never waited for the 0.3 s writer
    run = open_run(tmp_path)
    kept = {w.step_to for w in run.windows}
    dropped = [(a, b) for a, b, _, _ in run.drops]
    assert mon.dropped > 0 and sum(n for _, _, n, _ in run.drops) == mon.dropped
    assert len(kept) + mon.dropped == 12
    for a, b in dropped:                       # each drop row spans steps that have no window
        assert a not in kept and b not in kept
    run.close()


def test_an_unknown_module_or_unknown_sizes_say_so(tmp_path):
    with pytest.raises(MonitorError, match="not a quantizer module"):
        CodebookMonitor(tmp_path).attach(torch.nn.Linear(3, 3))
    mon = CodebookMonitor(tmp_path)
    with pytest.raises(MonitorError, match="codebook sizes unknown"):
        mon.log(0, torch.zeros(1, 3, dtype=torch.long))
    mon.close()


def test_eval_mode_calls_are_not_training_steps(tmp_path):
    rvq, inputs, _ = _own_rvq()
    g = torch.Generator().manual_seed(0)
    rvq.train()
    mon = CodebookMonitor(tmp_path, every=10).attach(rvq)
    rvq(*inputs(g))
    rvq.eval()
    rvq(*inputs(g))
    mon.close()
    counts = recorded_counts(tmp_path)[0]
    assert [int(c.sum()) for c in counts] == [40, 40]      # one training call of 2 x 20 frames


def test_the_monitor_imports_nothing_heavy():
    code = ("import sys, rvq_viewer.monitor; heavy = [m for m in ('PySide6', 'pyqtgraph', 'umap', 'numba', 'scipy', "
            "'sklearn', 'superqt', 'rvq_viewer.gui', 'rvq_viewer.app') if m in sys.modules]; print(heavy)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
