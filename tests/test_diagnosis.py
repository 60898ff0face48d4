"""Verdicts on quantizers built so that the truth is known, and on the demo healthy / collapsed pair."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from rvq_viewer.analysis.audit import run_audit
from rvq_viewer.locations import demo_paths
from rvq_viewer.quant import DeadCodeRule, Quantizer
from rvq_viewer.analysis.diagnosis import (EXIT_COLLAPSE, PairAccumulator, Verdict, diagnose, exit_code_for,
                                  format_verdicts, report_dict, worst, write_json)
from rvq_viewer.analysis.audit import pairs as redundancy
from rvq_viewer.analysis.audit.pairs import MOMENT_STRIDE
from rvq_viewer.analysis.diagnosis import geometry, rules, thresholds
from rvq_viewer.quant import nearest_neighbours
from rvq_viewer.io import FeatureSource, load_quantizer

DEMO = demo_paths()[0].parent


def make_quantizer(*codebooks, cluster_size=None, rule=None) -> Quantizer:
    return Quantizer(format="plain", codebooks=[torch.as_tensor(np.asarray(c), dtype=torch.float32) for c in codebooks],
                     cluster_size=None if cluster_size is None else
                     [torch.as_tensor(np.asarray(c), dtype=torch.float32) for c in cluster_size],
                     dead_code_rule=rule or DeadCodeRule())


def audit(quantizer, frames, tmp_path, name="features.npy", pairs=True, chunk=4096):
    path = tmp_path / name
    np.save(path, np.asarray(frames, dtype=np.float32))
    source = FeatureSource([path], quantizer.dim, chunk_frames=chunk)
    result = run_audit(quantizer, source, "cpu", pairs=pairs)
    return result, result.pairs


def by_key(verdicts):
    return {v.key: v for v in verdicts}


def ids_at(verdicts, layer):
    return {v.id for v in verdicts if v.layer == layer}


# --- constructed truths ----------------------------------------------------------------------------------
def test_half_of_the_codes_unused_is_a_warning_not_a_collapse(tmp_path):
    rng = np.random.default_rng(0)
    table = rng.normal(size=(64, 8)) * 3
    frames = table[rng.integers(0, 32, 20000)] + 0.05 * rng.normal(size=(20000, 8))
    result, pairs = audit(make_quantizer(table), frames, tmp_path)
    verdicts = diagnose(result, make_quantizer(table), pairs)
    v = by_key(verdicts)["low_utilization@0"]
    assert v.severity == "warning"
    assert v.evidence["used"] == 32 and v.evidence["ratio"] == pytest.approx(0.5, abs=1e-3)
    assert v.view == "dead_codes" and "k-means" in v.remedy
    assert "low_perplexity" not in ids_at(verdicts, 0) and "dominant_codes" not in ids_at(verdicts, 0)
    assert verdicts[0].id == "summary" and verdicts[0].severity == "warning"
    assert exit_code_for(verdicts, "collapse") == 0
    assert exit_code_for(verdicts, "warning") == EXIT_COLLAPSE


def test_a_few_codes_taking_everything_is_a_collapse(tmp_path):
    rng = np.random.default_rng(1)
    table = rng.normal(size=(256, 8)) * 3
    frames = table[rng.choice(4, 8000, p=[0.4, 0.3, 0.2, 0.1])] + 0.05 * rng.normal(size=(8000, 8))
    q = make_quantizer(table)
    result, _ = audit(q, frames, tmp_path, pairs=False)
    verdicts = diagnose(result, q)
    found = by_key(verdicts)
    assert found["low_utilization@0"].severity == "collapse"
    assert found["low_perplexity@0"].severity == "collapse"
    top = found["dominant_codes@0"]
    assert top.severity == "collapse" and top.evidence["top_codes"] == 3        # ceil(1% of 256)
    assert top.evidence["top_share"] == pytest.approx(0.9, abs=0.02)
    assert verdicts[0].severity == "collapse" and worst(verdicts) == "collapse"
    assert exit_code_for(verdicts, "collapse") == EXIT_COLLAPSE == 3


def test_duplicated_centroids_are_found_and_their_exact_copies_never_win(tmp_path):
    rng = np.random.default_rng(2)
    table = rng.normal(size=(64, 8))
    table[32:40] = table[0:8]                                   # exact copies
    table[40:44] = table[8:12] + 1e-4 * rng.normal(size=(4, 8))  # near copies
    q = make_quantizer(table)
    result, _ = audit(q, rng.normal(size=(20000, 8)), tmp_path, pairs=False)
    v = by_key(diagnose(result, q))["duplicate_centroids@0"]
    assert v.severity == "warning" and v.view == "centroids"
    assert v.evidence["codes_with_duplicate"] == 24
    assert v.evidence["exact_duplicates"] == 16
    assert v.evidence["unused_among_them"] == 8                  # ties go to the lower index
    pairs = {(a, b) for a, b, _ in v.evidence["pairs"]}
    assert {(i, 32 + i) for i in range(8)} <= pairs and {(8 + i, 40 + i) for i in range(4)} <= pairs
    # The same codebook without the copies: nothing to report.
    clean = make_quantizer(rng.normal(size=(64, 8)))
    result, _ = audit(clean, rng.normal(size=(20000, 8)), tmp_path, "clean.npy", pairs=False)
    assert "duplicate_centroids" not in {v.id for v in diagnose(result, clean)}


def test_rank_two_codebook_is_low_rank_against_full_rank_features(tmp_path):
    rng = np.random.default_rng(3)
    flat = rng.normal(size=(64, 2)) @ rng.normal(size=(2, 16))
    q = make_quantizer(flat)
    result, pairs = audit(q, rng.normal(size=(16000, 16)), tmp_path)
    v = by_key(diagnose(result, q, pairs))["low_rank@0"]
    assert v.evidence["effective_rank"] < 2.01 and v.evidence["participation_ratio"] < 2.01
    assert v.evidence["input_effective_rank"] > 14
    assert v.evidence["ratio"] < thresholds.LOW_RANK_RATIO and v.view == "centroids"
    # Without input statistics the dimension D is the reference, and the verdict still holds.
    assert "low_rank" in ids_at(diagnose(result, q), 0)
    # A full-rank codebook on the same features is fine.
    full = make_quantizer(rng.normal(size=(64, 16)))
    result, pairs = audit(full, rng.normal(size=(16000, 16)), tmp_path, "full.npy")
    assert "low_rank" not in ids_at(diagnose(result, full, pairs), 0)


def test_pairs_gathered_by_the_audit_pass_are_used(tmp_path):
    """Once the audit feeds a PairAccumulator and keeps it on the result, diagnose picks it up."""
    rng = np.random.default_rng(10)
    first = rng.normal(size=(16, 8)) * 4
    q = make_quantizer(first, 0.1 * first)
    result, pairs = audit(q, 1.1 * first[rng.integers(0, 16, 5000)], tmp_path)
    result.pairs = pairs
    assert "redundant_stage@1" in by_key(diagnose(result, q))


def test_a_stage_that_copies_the_previous_one_is_redundant(tmp_path):
    rng = np.random.default_rng(4)
    first = rng.normal(size=(16, 8)) * 4
    codes = rng.integers(0, 16, 20000)
    frames = 1.1 * first[codes] + 0.01 * rng.normal(size=(20000, 8))
    q = make_quantizer(first, 0.1 * first)            # stage 1 is a scaled copy of stage 0
    result, pairs = audit(q, frames, tmp_path)
    v = by_key(diagnose(result, q, pairs))["redundant_stage@1"]
    assert v.severity == "warning" and v.evidence["redundancy"] > 0.95
    assert v.evidence["mi"] == pytest.approx(v.evidence["h_b"], rel=1e-6)
    assert "fewer layers" in v.remedy
    # A second stage that codes something independent of the first is not redundant.
    second = rng.normal(size=(16, 8)) * 0.3
    frames = first[codes] + second[rng.integers(0, 16, 20000)] + 0.01 * rng.normal(size=(20000, 8))
    q = make_quantizer(first, second)
    result, pairs = audit(q, frames, tmp_path, "independent.npy")
    assert pairs.mutual_information(0)["redundancy"] < 0.05
    assert "redundant_stage" not in {v.id for v in diagnose(result, q, pairs)}


def test_stages_that_stop_helping(tmp_path):
    rng = np.random.default_rng(5)
    first = rng.normal(size=(32, 8)) * 3
    frames = first[rng.integers(0, 32, 8000)] + 0.5 * rng.normal(size=(8000, 8))
    tiny = 1e-4 * rng.normal(size=(32, 8))             # can barely move the residual
    far = 100 + rng.normal(size=(32, 8))              # every code is far: the residual grows
    q = make_quantizer(first, tiny, far)
    result, _ = audit(q, frames, tmp_path, pairs=False)
    found = by_key(diagnose(result, q))
    assert "stage_no_gain@1" in found and found["stage_no_gain@1"].view == "residuals"
    assert found["stage_no_gain@1"].evidence["gain_db"] < thresholds.STAGE_GAIN_FRACTION * found["stage_no_gain@1"].evidence["reference_gain_db"]
    assert "residual_grows@2" in found and found["residual_grows@2"].evidence["gain_db"] < 0
    assert "stage_no_gain@0" not in found and "residual_grows@0" not in found


def test_features_unlike_the_training_data_are_named(tmp_path):
    rng = np.random.default_rng(6)
    table = rng.normal(size=(64, 8)) * 3
    alive = np.full(64, 40.0)                           # the checkpoint: every code busy in training
    q = make_quantizer(table, cluster_size=[alive], rule=DeadCodeRule("absolute", 2.0))
    frames = table[rng.integers(0, 32, 20000)] + 0.05 * rng.normal(size=(20000, 8))
    result, _ = audit(q, frames, tmp_path, pairs=False)
    v = by_key(diagnose(result, q))["ema_disagreement@0"]
    assert v.severity == "warning" and v.view == "dead_codes"
    assert v.evidence["unused_but_ema_alive"] == 32 and v.evidence["ema_dead"] == 0
    assert v.evidence["expected_unused_if_training_data"] < 1e-6
    assert "differ from the training data" in v.message
    assert "normalisation" in v.remedy


def test_ema_threshold_is_judged_against_the_uniform_share_so_it_scales_with_k():
    rule = DeadCodeRule("absolute", 2.0)              # EnCodec's default, whatever K
    batch = 2048.0

    def verdict(k):
        sizes = np.random.default_rng(k).dirichlet(np.ones(k)) * batch
        return rules.ema_threshold_verdict(make_quantizer(np.zeros((k, 4)), cluster_size=[sizes], rule=rule))

    small, large = verdict(512), verdict(8192)        # uniform share 4 and 0.25 frames per code
    assert small.id == "ema_threshold_scale" and small.severity == "info"
    assert small.evidence["ratio"] == pytest.approx(0.5)
    assert large.id == "ema_threshold_scale" and large.severity == "warning"
    assert large.evidence["ratio"] == pytest.approx(8.0) and large.evidence["fraction_below"] > 0.9
    assert verdict(64) is None                          # share 32: a threshold of 2 is 0.06x
    relative = make_quantizer(np.zeros((512, 4)), cluster_size=[np.full(512, 8.0)], rule=DeadCodeRule("relative", 0.1))
    assert rules.ema_threshold_verdict(relative) is None


def test_a_checkpoint_with_most_codes_ema_dead_is_flagged():
    sizes = np.zeros(256)
    sizes[:20] = 100.0
    q = make_quantizer(np.zeros((256, 4)), cluster_size=[sizes])
    v = rules.ema_threshold_verdict(q)
    assert v.id == "ema_dead_majority" and v.severity == "warning"
    assert v.evidence["fraction_below"] == pytest.approx(236 / 256)


def test_usage_is_judged_against_a_uniform_codebook_on_the_same_frames(tmp_path):
    """2048 frames over K=4096 codes leave most codes unused even when usage is perfectly uniform:
    no dead-code verdict, only a note that the frames are few."""
    rng = np.random.default_rng(7)
    table = rng.normal(size=(4096, 8)) * 10
    frames = table[rng.integers(0, 4096, 2048)] + 1e-3 * rng.normal(size=(2048, 8))
    q = make_quantizer(table)
    result, _ = audit(q, frames, tmp_path, pairs=False)
    assert result.layers[0].utilization < 0.45
    verdicts = diagnose(result, q)
    ids = {v.id for v in verdicts}
    assert "low_utilization" not in ids and "low_perplexity" not in ids
    assert "few_frames" in ids and by_key(verdicts)["layer_ok@0"].severity == "ok"


def test_uniform_reference():
    util, ppl = thresholds.uniform_reference(512, 12550)
    assert util == pytest.approx(1.0, abs=1e-9) and 490 < ppl < 512
    util, ppl = thresholds.uniform_reference(65536, 10000)
    assert util == pytest.approx(1 - math.exp(-10000 / 65536), rel=1e-3)
    assert ppl < 10000


# --- pair statistics -------------------------------------------------------------------------------------
def feed(acc: PairAccumulator, q, frames) -> None:
    """What the audit engine feeds for one piece of frames: each layer's codes and input rows."""
    layer_input = q.prepare(frames)
    for step in q.iter_layers(layer_input):
        acc.add_step(step.index, step.codes)
        acc.add_moments(step.index, layer_input[::MOMENT_STRIDE])
        layer_input = step.residual


def test_pair_accumulator_merges_shards_into_the_whole_and_matches_a_dense_histogram(monkeypatch):
    monkeypatch.setattr(redundancy, "_COMPACT_AT", 64)   # exercise the compaction path
    rng = np.random.default_rng(8)
    q = make_quantizer(rng.normal(size=(32, 6)), rng.normal(size=(16, 6)) * 0.3, rng.normal(size=(8, 6)) * 0.1)
    frames = torch.as_tensor(rng.normal(size=(3000, 6)), dtype=torch.float32)
    whole = PairAccumulator.for_quantizer(q)
    feed(whole, q, frames)
    left, right = PairAccumulator.for_quantizer(q), PairAccumulator.for_quantizer(q)
    for start in range(0, 1500, 100):
        feed(left, q, frames[start:start + 100])
    for start in range(1500, 3000, 100):
        feed(right, q, frames[start:start + 100])
    merged = left.merge(right)
    assert merged.frames == whole.frames == 3000
    codes = q.encode(frames).numpy()
    for pair in range(2):
        a, b, c = merged.joint(pair)
        dense = np.zeros((q.codebook_sizes[pair], q.codebook_sizes[pair + 1]), dtype=np.int64)
        np.add.at(dense, (codes[pair], codes[pair + 1]), 1)
        assert (dense[a, b] == c).all() and c.sum() == dense.sum()
        wa, wb, wc = whole.joint(pair)
        assert (wa == a).all() and (wb == b).all() and (wc == c).all()
    # Input moments: sums add up (the covariance rows are strided per chunk, so compare counts only).
    assert merged.moments[0].count > 0 and merged.input_spectrum(0).shape == (6,)
    with pytest.raises(ValueError):
        merged.merge(PairAccumulator([32, 16], 6))
    # A copy is independent (the audit's streamed snapshots copy their accumulator).
    clone = merged.copy()
    feed(clone, q, frames[:500])
    assert clone.frames == 3500 and merged.frames == 3000 and merged.joint(0)[2].sum() == 3000
    assert clone.moments[0].count > merged.moments[0].count


def test_mutual_information_floor_and_redundancy():
    rng = np.random.default_rng(9)
    a = rng.integers(0, 64, 200_000)
    b = rng.integers(0, 64, 200_000)
    keys, counts = np.unique(a * 64 + b, return_counts=True)
    stats = redundancy.mutual_information_from_joint(keys // 64, keys % 64, counts, 64, 64)
    assert stats["mi"] == pytest.approx(stats["mi_floor"], abs=0.01) and stats["redundancy"] < 0.02
    # b a function of a: redundant, even with few frames per cell.
    perm = rng.permutation(64)
    a = rng.integers(0, 64, 3000)
    keys, counts = np.unique(a * 64 + perm[a], return_counts=True)
    stats = redundancy.mutual_information_from_joint(keys // 64, keys % 64, counts, 64, 64)
    assert stats["redundancy"] == pytest.approx(1.0) and stats["nmi"] == pytest.approx(1.0)


def test_steps_must_come_in_order():
    acc = PairAccumulator([4, 4])
    with pytest.raises(ValueError):
        acc.add_step(1, torch.zeros(3, dtype=torch.long))


def test_geometry_measures():
    assert geometry.effective_rank(np.array([4.0, 4.0, 4.0, 0.0])) == pytest.approx(3.0)
    assert geometry.participation_ratio(np.array([1.0, 1.0, 0.0])) == pytest.approx(2.0)
    assert geometry.effective_rank(np.zeros(3)) == 0.0
    points = np.array([[0.0, 0.0], [3.0, 4.0], [3.0, 4.0], [10.0, 0.0]])
    index, dist = nearest_neighbours(points)
    assert dist.tolist() == [5.0, 0.0, 0.0, pytest.approx(math.hypot(7, 4))]
    assert index[1] == 2 and index[2] == 1


@pytest.mark.parametrize("k, other", [(300, None), (4500, None), (300, 700), (4500, 2000)])
def test_nearest_neighbours_agree_with_brute_force(k, other):
    # Both paths (blocks sized from K with the own code masked; the search engine for two tables) and
    # blocks of both sizes: against a float64 brute force, with ties resolved to the lower index.
    rng = np.random.default_rng(k)
    a = rng.normal(size=(k, 12)).astype(np.float32)
    b = a if other is None else rng.normal(size=(other, 12)).astype(np.float32)
    index, dist = nearest_neighbours(a, None if other is None else b)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    d = np.maximum((a64 ** 2).sum(1)[:, None] + (b64 ** 2).sum(1)[None, :] - 2 * a64 @ b64.T, 0.0)
    if other is None:
        np.fill_diagonal(d, np.inf)
    np.testing.assert_allclose(dist, np.sqrt(d.min(axis=1)), rtol=1e-6)
    best = d[np.arange(k), index]
    assert np.all(best <= d.min(axis=1) * (1 + 1e-5) + 1e-9)     # the chosen code is a nearest one


# --- verdict objects -------------------------------------------------------------------------------------
def test_verdict_validation_and_json():
    with pytest.raises(ValueError):
        Verdict("x", 0, "fatal", "t")
    with pytest.raises(ValueError):
        Verdict("x", 0, "ok", "t", view="nowhere")
    v = Verdict("x", None, "info", "t", {"a": float("nan"), "b": np.int64(3), "c": [np.float32(0.5)]})
    data = v.to_dict()
    assert json.loads(json.dumps(data, allow_nan=False))["evidence"] == {"a": None, "b": 3, "c": [0.5]}
    assert Verdict.from_dict(data).key == "x@all"
    assert exit_code_for([v], "never") == 0 and exit_code_for([v], None) == 0
    with pytest.raises(ValueError):
        exit_code_for([v], "sometimes")


def test_every_threshold_is_documented():
    table = thresholds.threshold_table()
    names = {name for name, _, _ in table}
    assert {"UTIL_WARN", "UTIL_COLLAPSE", "PPL_WARN", "PPL_COLLAPSE", "TOP_SHARE_WARN_FACTOR", "DUP_FACTOR",
            "LOW_RANK_RATIO", "STAGE_GAIN_FRACTION", "REDUNDANCY_WARN", "EMA_THRESHOLD_WARN"} <= names
    assert all(len(doc) > 40 for _, _, doc in table)


# --- demo quantizers -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo():
    out = {}
    for name in ("healthy", "collapsed"):
        q = load_quantizer(DEMO / f"{name}.pt")
        source = FeatureSource([DEMO / "heldout.npy"], q.dim)
        result = run_audit(q, source, "cpu", pairs=True)
        out[name] = (q, result, result.pairs)
    return out


def test_demo_healthy_has_no_collapse_and_no_warning(demo, tmp_path):
    q, result, pairs = demo["healthy"]
    verdicts = diagnose(result, q, pairs)
    assert verdicts[0].id == "summary" and verdicts[0].severity == "ok"
    assert [v.key for v in verdicts if v.rank >= 2] == []
    assert {v.layer for v in verdicts if v.id == "layer_ok"} == {0, 1, 2, 3}
    # Whatever else is said (its EMA threshold of 2 is half the uniform share at K=512 and batch 2048,
    # so the checkpoint calls codes dead that the features use), it is information only.
    assert {v.severity for v in verdicts} <= {"ok", "info"}
    assert exit_code_for(verdicts, "collapse") == 0 and exit_code_for(verdicts, "warning") == 0
    path = tmp_path / "healthy.json"
    write_json(path, result, verdicts)
    data = json.loads(path.read_text())
    assert data["frames"] == result.frames and data["verdicts"][0]["id"] == "summary"


def test_demo_collapsed_collapses_on_every_layer(demo):
    q, result, pairs = demo["collapsed"]
    verdicts = diagnose(result, q, pairs)
    assert verdicts[0].severity == "collapse"
    assert verdicts[0].evidence["collapsed_layers"] == [0, 1, 2, 3]
    for layer in range(4):
        found = by_key(verdicts)
        assert found[f"low_utilization@{layer}"].severity == "collapse"
        assert found[f"low_perplexity@{layer}"].severity == "collapse"
    assert by_key(verdicts)["ema_dead_majority@all"].severity == "warning"
    assert exit_code_for(verdicts, "collapse") == EXIT_COLLAPSE
    json.dumps(report_dict(result, verdicts), allow_nan=False)
    text = format_verdicts(verdicts, "warning")
    assert text.startswith("[collapse] all: Collapsed") and "what to try:" in text


def test_pairs_of_multi_rate_layers_are_aligned_by_time():
    """SNAC-like: layer 0 codes every 2 residual frames, layer 1 every frame."""
    from rvq_viewer.analysis.audit.pairs import PairAccumulator
    acc = PairAccumulator([4, 4], layer_strides=[2, 1])
    acc.add_step(0, torch.tensor([0, 1, 2]))
    acc.add_step(1, torch.tensor([0, 0, 1, 1, 2, 2]))
    a, b, counts = acc.joint(0)
    assert sorted(zip(a.tolist(), b.tolist(), counts.tolist())) == [(0, 0, 2), (1, 1, 2), (2, 2, 2)]
