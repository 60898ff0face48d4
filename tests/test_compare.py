"""Comparison of two audits: deltas, nearest-code matching, one joint projection."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rvq_viewer.analysis.audit import run_audit
from rvq_viewer.locations import demo_paths
from rvq_viewer.analysis.compare import compare, joint_projection, match_codes, rank_frequency
from rvq_viewer.quant import DeadCodeRule, Quantizer
from rvq_viewer.io import FeatureSource, load_quantizer

DEMO = demo_paths()[0].parent


def make_quantizer(*codebooks, cluster_size=None) -> Quantizer:
    return Quantizer(format="plain", codebooks=[torch.as_tensor(np.asarray(c), dtype=torch.float32) for c in codebooks],
                     cluster_size=None if cluster_size is None else
                     [torch.as_tensor(np.asarray(c), dtype=torch.float32) for c in cluster_size],
                     dead_code_rule=DeadCodeRule())


def audit(quantizer, frames, tmp_path, name):
    path = tmp_path / name
    np.save(path, np.asarray(frames, dtype=np.float32))
    return run_audit(quantizer, FeatureSource([path], quantizer.dim), "cpu")


def test_matching_recovers_a_permutation_of_the_codes(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(64, 8)) * 3
    perm = rng.permutation(64)
    b = a[perm] + 1e-3 * rng.normal(size=(64, 8))      # B holds A's codes in another order, barely moved
    qa, qb = make_quantizer(a), make_quantizer(b)
    frames = rng.normal(size=(6000, 8)) * 3
    cmp = compare(audit(qa, frames, tmp_path, "a.npy"), audit(qb, frames, tmp_path, "b.npy"), qa, qb)
    assert cmp.kind == "quantizers"
    match = cmp.matches[0]
    inverse = np.argsort(perm)
    assert (match.index == inverse).all() and (match.reverse_index == perm).all()
    summary = match.summary()
    assert summary["mutual_nearest"] == 64 and summary["close_fraction"] == 1.0
    assert summary["b_codes_unmatched"] == 0 and summary["median_relative"] < 1e-2
    # Same codes, barely moved: the deltas are (almost) zero.
    d = cmp.layers[0]
    assert d.delta["utilization"] == 0 and d.delta["dead"] == 0
    assert abs(d.delta["perplexity"]) < 1e-3 * d.a["perplexity"] and abs(d.delta["snr_db"]) < 1e-2
    assert cmp.layers[0].delta["ema_dead"] is None       # neither side has EMA statistics


def test_one_quantizer_on_two_feature_sets(tmp_path):
    rng = np.random.default_rng(1)
    table = rng.normal(size=(32, 6)) * 3
    q = make_quantizer(table, cluster_size=[np.full(32, 10.0)])
    wide = table[rng.integers(0, 32, 5000)] + 0.1 * rng.normal(size=(5000, 6))
    narrow = table[rng.integers(0, 8, 5000)] + 0.1 * rng.normal(size=(5000, 6))
    cmp = compare(audit(q, wide, tmp_path, "wide.npy"), audit(q, narrow, tmp_path, "narrow.npy"), q, q,
                  "train", "other domain")
    assert cmp.kind == "features"
    d = cmp.layers[0]
    assert d.a["used"] == 32 and d.b["used"] == 8 and d.delta["used"] == -24
    assert d.delta["utilization"] == pytest.approx(-0.75) and d.delta["dead"] == 24
    assert d.delta["ema_dead"] == 0
    match = cmp.matches[0]
    assert (match.distance == 0).all() and match.summary()["same_index_unchanged"] == 32
    proj = cmp.projections[0]
    np.testing.assert_allclose(proj.a, proj.b)
    data = json.loads(cmp.to_json())
    assert data["kind"] == "features" and data["layers"][0]["delta"]["used"] == -24
    assert "other domain" not in cmp.table() and "100.0%" in cmp.table()


def test_joint_projection_is_fitted_once_on_both_sets():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(200, 10))
    b = a + np.eye(10)[3] * 8.0                     # B = A moved far along axis 3
    proj = joint_projection(a, b)
    # One fit: both sets go through the same mean and axes ...
    np.testing.assert_allclose(proj.transform(a), proj.a, atol=1e-9)
    np.testing.assert_allclose(proj.transform(b), proj.b, atol=1e-9)
    # ... and the first axis is the shift between them, which a fit on either set alone would miss.
    assert abs(proj.components[0, 3]) > 0.99 and proj.explained[0] > 0.5
    gap = proj.b[:, 0].mean() - proj.a[:, 0].mean()
    assert abs(gap) == pytest.approx(8.0, rel=0.02)
    assert proj.components.shape == (2, 10) and proj.explained.sum() <= 1 + 1e-9
    # Deterministic signs.
    again = joint_projection(a, b)
    np.testing.assert_array_equal(again.components, proj.components)


def test_match_codes_with_different_codebook_sizes():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(16, 4))
    b = np.concatenate([a[:8], rng.normal(size=(40, 4)) + 20])
    match = match_codes(a, b)
    assert (match.index[:8] == np.arange(8)).all() and (match.distance[:8] == 0).all()
    assert match.same_index_distance is None
    assert match.summary()["codes_b"] == 48


def test_layers_and_dimensions_that_do_not_line_up(tmp_path):
    rng = np.random.default_rng(4)
    qa = make_quantizer(rng.normal(size=(16, 4)), rng.normal(size=(16, 4)))
    qb = make_quantizer(rng.normal(size=(16, 4)))
    frames = rng.normal(size=(2000, 4))
    cmp = compare(audit(qa, frames, tmp_path, "a.npy"), audit(qb, frames, tmp_path, "b.npy"), qa, qb)
    assert len(cmp.layers) == 1 and "first 1" in cmp.notes[0]
    no_tables = compare(audit(qa, frames, tmp_path, "c.npy"), audit(qa, frames, tmp_path, "d.npy"))
    assert no_tables.kind == "audits" and no_tables.matches == [None, None]
    assert no_tables.projections == [None, None]


def test_rank_frequency():
    shares = rank_frequency([0, 5, 1, 4])
    assert shares.tolist() == [0.5, 0.4, 0.1, 0.0]
    assert rank_frequency([0, 0]).tolist() == [0.0, 0.0]


def test_demo_healthy_against_collapsed():
    results = {}
    for name in ("healthy", "collapsed"):
        q = load_quantizer(DEMO / f"{name}.pt")
        results[name] = (q, run_audit(q, FeatureSource([DEMO / "heldout.npy"], q.dim), "cpu"))
    (qa, ra), (qb, rb) = results["healthy"], results["collapsed"]
    cmp = compare(ra, rb, qa, qb, "healthy", "collapsed")
    assert cmp.kind == "quantizers" and len(cmp.layers) == 4
    for d in cmp.layers:
        assert d.delta["utilization"] < -0.5 and d.delta["perplexity"] < 0 and d.delta["snr_db"] < 0
    for m, p in zip(cmp.matches, cmp.projections):
        assert m.index.shape == (512,) and p.a.shape == (512, 2) and p.b.shape == (512, 2)
        assert p.fitted_on == "used codes"
    json.dumps(cmp.to_dict(), allow_nan=False)


def test_compare_stops_between_distance_blocks_when_asked(tmp_path):
    from rvq_viewer.errors import CancelledError
    rng = np.random.default_rng(3)
    books = [rng.normal(size=(2048, 16)) for _ in range(3)]
    qa, qb = make_quantizer(*books), make_quantizer(*[b + 0.1 for b in books])
    frames = rng.normal(size=(500, 16))
    ra, rb = audit(qa, frames, tmp_path, "a.npy"), audit(qb, frames, tmp_path, "b.npy")
    asked = []

    def should_stop() -> bool:
        asked.append(1)
        return len(asked) > 2      # the third distance block of layer 0's matching
    with pytest.raises(CancelledError):
        compare(ra, rb, qa, qb, should_stop=should_stop)
    assert len(asked) == 3
    # Without a stop request the same call runs to the end, asking between every block.
    asked.clear()
    full = compare(ra, rb, qa, qb, should_stop=lambda: asked.append(1) and False)
    assert len(full.matches) == 3 and len(asked) >= 3 * 3 * 2        # more than once per search
