"""Audit numbers against values computed by hand on small constructed codebooks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rvq_viewer.analysis.audit import AuditAccumulator, build_result, iter_audit, run_audit, usage_metrics
from rvq_viewer.analysis.audit.stats import NormHistogram
from rvq_viewer.quant import Quantizer
from rvq_viewer.io import FeatureSource


@pytest.fixture
def two_layer(tmp_path):
    """Layer 0 has 4 codes, code 3 far away and never used; layer 1 refines along x by +-1.

    Frames: (0,0) x2, (10,0) x1, (0,10) x1, then each shifted by (+1, 0) or (-1, 0) as listed below.
    """
    layer0 = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [100.0, 100.0]])
    layer1 = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    cluster = [torch.tensor([5.0, 3.0, 1.0, 0.5]), torch.tensor([2.0, 2.0])]
    quantizer = Quantizer(format="test", codebooks=[layer0, layer1], cluster_size=cluster)
    frames = np.array([[1.0, 0.0], [-1.0, 0.0], [11.0, 0.0], [1.0, 10.0]], dtype=np.float32)
    # Residual after layer 0 is (+-1, 0); layer 1 removes it exactly, except the last frame which we
    # perturb so that something is left: (1, 10.5) -> residual after layer 0 = (1, 0.5).
    frames[3] = [1.0, 10.5]
    path = tmp_path / "f.npy"
    np.save(path, frames)
    return quantizer, path, frames


def test_counts_usage_and_residuals_by_hand(two_layer):
    quantizer, path, frames = two_layer
    result = run_audit(quantizer, FeatureSource([path], dim=2), device="cpu")
    l0, l1 = result.layers
    assert result.frames == 4
    assert l0.counts.tolist() == [2, 1, 1, 0]
    assert (l0.used, l0.utilization, l0.dead_codes.tolist()) == (3, 0.75, [3])
    p = np.array([0.5, 0.25, 0.25])
    entropy = -(p * np.log(p)).sum()
    assert l0.perplexity == pytest.approx(math.exp(entropy))
    assert l0.entropy == pytest.approx(entropy / math.log(4))
    # EMA-dead by the default absolute rule (< 2): codes 2 and 3 of layer 0, none of layer 1.
    assert l0.ema_dead_codes.tolist() == [2, 3] and l1.ema_dead_codes.tolist() == []
    assert l1.counts.tolist() == [3, 1] and l1.dead_codes.tolist() == []

    # Residual norms after layer 0: 1, 1, 1, sqrt(1.25); after layer 1: 0, 0, 0, 0.5.
    input_sq = float((frames.astype(np.float64) ** 2).sum())
    assert l0.residual_norm["mean"] == pytest.approx((3 + math.sqrt(1.25)) / 4)
    assert l0.rel_error == pytest.approx((3 + 1.25) / input_sq)
    assert l1.rel_error == pytest.approx(0.25 / input_sq)
    assert l1.snr_db == pytest.approx(10 * math.log10(input_sq / 0.25))
    assert result.input_norm["mean"] == pytest.approx(np.linalg.norm(frames, axis=1).mean())


def test_json_report_has_the_documented_schema(two_layer):
    quantizer, path, _ = two_layer
    report = run_audit(quantizer, FeatureSource([path], dim=2), device="cpu").to_dict()
    assert set(report["quantizer"]) >= {"format", "n_q", "codebook_size", "dim"}
    assert report["quantizer"]["layer_strides"] == [1, 1]
    assert report["frames"] == 4
    layer = report["layers"][0]
    for key in ("layer", "counts", "used", "utilization", "perplexity", "entropy", "dead_codes",
                "ema_dead_codes", "residual_norm", "rel_error", "snr_db"):
        assert key in layer
    assert {"mean", "p50", "p95"} <= set(layer["residual_norm"])


def test_perfect_reconstruction_has_infinite_snr_written_as_null(tmp_path):
    table = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    quantizer = Quantizer(format="test", codebooks=[table])
    np.save(tmp_path / "f.npy", np.array([[1.0, 1.0], [0.0, 0.0], [1.0, 1.0]], dtype=np.float32))
    result = run_audit(quantizer, FeatureSource([tmp_path / "f.npy"], dim=2), device="cpu")
    assert result.layers[0].rel_error == 0
    assert result.to_dict()["layers"][0]["snr_db"] is None
    assert "inf" in result.table()


def test_two_halves_merge_into_the_audit_of_the_whole(tmp_path):
    gen = torch.Generator().manual_seed(0)
    quantizer = Quantizer(format="test", codebooks=[torch.randn(16, 6, generator=gen) for _ in range(3)])
    frames = torch.randn(1000, 6, generator=gen).numpy()
    np.save(tmp_path / "a.npy", frames[:400])
    np.save(tmp_path / "b.npy", frames[400:])
    np.save(tmp_path / "all.npy", frames)

    def accumulate(path):
        *_, last = iter_audit(quantizer, FeatureSource([path], dim=6, chunk_frames=128), "cpu")
        return last.accumulator

    merged = accumulate(tmp_path / "a.npy").merge(accumulate(tmp_path / "b.npy"))
    whole = accumulate(tmp_path / "all.npy")
    a, b = build_result(merged, quantizer).to_dict(), build_result(whole, quantizer).to_dict()
    for la, lb in zip(a["layers"], b["layers"]):
        assert la["counts"] == lb["counts"]
        assert la["rel_error"] == pytest.approx(lb["rel_error"], rel=1e-9)
        assert la["residual_norm"] == pytest.approx(lb["residual_norm"], rel=1e-9)
    assert a["frames"] == b["frames"] == 1000


def test_merge_refuses_different_shapes():
    with pytest.raises(ValueError):
        AuditAccumulator([4, 4]).merge(AuditAccumulator([4]))
    with pytest.raises(ValueError):
        AuditAccumulator([4]).merge(AuditAccumulator([8]))


def test_percentiles_within_histogram_resolution():
    norms = torch.from_numpy(np.random.default_rng(0).lognormal(0.0, 1.0, 50_000))
    hist = NormHistogram()
    hist.add(norms)
    for q in (5, 50, 95):
        assert hist.percentile(q) == pytest.approx(np.percentile(norms.numpy(), q), rel=0.015)
    assert math.isnan(NormHistogram().percentile(50))


def test_usage_metrics_uniform_and_single_code():
    uniform = usage_metrics(np.full(8, 10))
    assert uniform["perplexity"] == pytest.approx(8) and uniform["entropy"] == pytest.approx(1.0)
    single = usage_metrics(np.array([0, 0, 7, 0]))
    assert (single["used"], single["perplexity"], single["entropy"]) == (1, pytest.approx(1.0), 0.0)
    assert usage_metrics(np.zeros(4, dtype=int))["utilization"] == 0.0


def test_ema_threshold_option_changes_ema_dead_codes(two_layer):
    quantizer, path, _ = two_layer
    result = run_audit(quantizer, FeatureSource([path], dim=2), device="cpu", ema_threshold=4.0)
    assert result.layers[0].ema_dead_codes.tolist() == [1, 2, 3]
    assert result.layers[1].ema_dead_codes.tolist() == [0, 1]
    assert quantizer.dead_code_rule.value == 2.0, "the loaded quantizer is left untouched"


def test_pairs_gathered_in_the_audit_pass_equal_a_dense_count(tmp_path):
    gen = torch.Generator().manual_seed(5)
    quantizer = Quantizer(format="test", codebooks=[torch.randn(8, 3, generator=gen) for _ in range(3)])
    frames = torch.randn(3000, 3, generator=gen)
    np.save(tmp_path / "f.npy", frames.numpy())
    source = FeatureSource([tmp_path / "f.npy"], dim=3, chunk_frames=700)
    result = run_audit(quantizer, source, device="cpu", pairs=True)
    codes = quantizer.encode(frames).numpy()
    for pair in range(2):
        ours = sorted(zip(*(a.tolist() for a in result.pairs.joint(pair))))
        dense = np.zeros((8, 8), dtype=np.int64)
        np.add.at(dense, (codes[pair], codes[pair + 1]), 1)
        assert ours == [(a, b, int(dense[a, b])) for a, b in zip(*np.nonzero(dense))]
        assert sum(c for *_, c in ours) == 3000
    # Input moments: one frame in MOMENT_STRIDE of each 700-frame chunk, of each layer's input residual.
    from rvq_viewer.analysis.audit.pairs import MOMENT_STRIDE
    per_chunk = [-(-n // MOMENT_STRIDE) for n in [700] * 4 + [200]]
    assert result.pairs.moments[0].count == sum(per_chunk)
    sampled = torch.cat([frames[c:c + 700][::MOMENT_STRIDE] for c in range(0, 3000, 700)]).double()
    np.testing.assert_allclose(result.pairs.moments[0].total, sampled.sum(0).numpy(), rtol=1e-6)
    np.testing.assert_allclose(result.pairs.moments[0].outer, (sampled.T @ sampled).numpy(), rtol=1e-6)
    assert "pairs" not in result.to_dict()
    assert run_audit(quantizer, source, device="cpu").pairs is None
