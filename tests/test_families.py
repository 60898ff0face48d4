"""What usage means per family, checked against independent counts of the peers' own indices, a
constructed degenerate case per family diagnosed as such, the detection table over every fixture, and the
family numbers reaching the JSON and the HTML report through the same result objects."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from fixtures_families import implicit_family_files, module_indices, save_in_model
from fixtures_formats import family_files, require

vqp = require("vector_quantize_pytorch")

import rvq_viewer  # noqa: E402
from rvq_viewer.cli import main  # noqa: E402
from rvq_viewer.errors import LoadError  # noqa: E402
from rvq_viewer.io import detect_format, load_quantizer, read_checkpoint  # noqa: E402
from rvq_viewer.pipeline import LoadOptions  # noqa: E402
from rvq_viewer.report import write_report  # noqa: E402


def features(tmp_path, n: int, dim: int, seed: int = 7, scale: float = 1.5):
    x = (np.random.default_rng(seed).standard_normal((n, dim)) * scale).astype(np.float32)
    np.save(tmp_path / "feats.npy", x)
    return tmp_path / "feats.npy", torch.from_numpy(x)


def audit(path, feats, **load):
    return rvq_viewer.audit(path, [feats], load=LoadOptions(**load), device="cpu")


def perplexity(values: np.ndarray) -> float:
    p = np.unique(values, return_counts=True)[1] / values.size
    return math.exp(-(p * np.log(p)).sum())


# --- usage against independent counts ------------------------------------------------------------------
def test_fsq_cells_and_level_histograms_match_the_modules_levels(tmp_path):
    torch.manual_seed(0)
    fsq = vqp.FSQ(levels=[8, 5, 5, 5], dim=32)
    path = save_in_model(fsq, 32, tmp_path / "m.pt")
    feats, x = features(tmp_path, 3000, 32)
    layer = audit(path, feats, levels=(8, 5, 5, 5)).result.layers[0]
    indices = module_indices(fsq, x)[0]
    levels = fsq.indices_to_level_indices(indices).numpy()             # the module's own level per dim
    grid = layer.family["grids"][0]
    assert grid["cells_used"] == len(np.unique(indices)) == layer.used and grid["cells"] == 1000
    for j, size in enumerate([8, 5, 5, 5]):
        assert grid["dims"][j]["counts"] == np.bincount(levels[:, j], minlength=size).tolist()
        assert grid["dims"][j]["levels_used"] == len(np.unique(levels[:, j]))
    assert layer.utilization == pytest.approx(len(np.unique(indices)) / 1000)


def test_lfq_bit_balance_and_correlation_match_the_modules_bits(tmp_path):
    torch.manual_seed(1)
    lfq = vqp.LFQ(dim=32, codebook_size=2 ** 10)
    path = save_in_model(lfq, 32, tmp_path / "m.pt")
    feats, x = features(tmp_path, 4000, 32)
    stats = audit(path, feats).result.layers[0].family["bit_stats"][0]
    indices = module_indices(lfq, x)[0]
    bits = ((indices.unsqueeze(-1) & lfq.mask) != 0).numpy().astype(float)   # the module's own bit order
    assert np.allclose(stats["ones"], bits.mean(axis=0))
    assert np.allclose(np.asarray(stats["correlation"]), np.corrcoef(bits.T), atol=1e-9)
    assert stats["dead"] == []


def test_heads_and_groups_are_counted_per_table_never_pooled(tmp_path):
    torch.manual_seed(2)
    vq = vqp.VectorQuantize(dim=32, codebook_size=64, codebook_dim=8, heads=4, separate_codebook_per_head=True)
    path = save_in_model(vq, 32, tmp_path / "m.pt")
    feats, x = features(tmp_path, 2000, 32)
    layer = audit(path, feats).result.layers[0]
    indices = module_indices(vq, x)[0].numpy()                            # [T, heads]
    tables = layer.family["tables"]
    assert [t["used"] for t in tables] == [len(np.unique(indices[:, h])) for h in range(4)]
    assert [t["perplexity"] for t in tables] == pytest.approx([perplexity(indices[:, h]) for h in range(4)])
    # The layer's numbers are the means over heads (vector-quantize-pytorch #109), not one pooled count.
    assert layer.utilization == pytest.approx(np.mean([len(np.unique(indices[:, h])) / 64 for h in range(4)]))
    assert layer.perplexity == pytest.approx(np.mean([perplexity(indices[:, h]) for h in range(4)]))
    pooled = perplexity(indices.ravel() + 64 * np.tile(np.arange(4), len(indices)))
    assert layer.perplexity < pooled / 2


def test_grouped_residual_vq_groups_per_layer(tmp_path):
    torch.manual_seed(3)
    grvq = vqp.GroupedResidualVQ(dim=32, num_quantizers=2, groups=2, codebook_size=32)
    path = save_in_model(grvq, 32, tmp_path / "m.pt")
    feats, x = features(tmp_path, 1500, 32)
    result = audit(path, feats).result
    indices = module_indices(grvq, x).numpy()                             # [groups, 1, T, layers]
    for layer in range(2):
        used = [t["used"] for t in result.layers[layer].family["tables"]]
        assert used == [len(np.unique(indices[g, 0, :, layer])) for g in range(2)]


def test_simvq_usage_is_on_the_effective_codebook(tmp_path):
    torch.manual_seed(4)
    sim = vqp.SimVQ(dim=32, codebook_size=128)
    path = save_in_model(sim, 32, tmp_path / "m.pt")
    feats, x = features(tmp_path, 2000, 32)
    layer = audit(path, feats).result.layers[0]
    indices = module_indices(sim, x)[0].numpy()
    assert np.array_equal(layer.counts, np.bincount(indices, minlength=128))
    assert layer.used == len(np.unique(indices))


# --- a degenerate case per family -------------------------------------------------------------------------
def _ids(verdicts):
    return {v.id: v for v in verdicts}


def test_an_fsq_dimension_pinned_at_one_level_is_its_collapse(tmp_path):
    torch.manual_seed(5)
    fsq = vqp.FSQ(levels=[8, 5, 5, 5], dim=32)
    with torch.no_grad():                        # dimension 2 gets no signal: always its middle level
        fsq.project_in.weight[2].zero_()
        fsq.project_in.bias[2] = 0.0
    path = save_in_model(fsq, 32, tmp_path / "m.pt")
    feats, _ = features(tmp_path, 3000, 32)
    outcome = audit(path, feats, levels=(8, 5, 5, 5))
    found = _ids(outcome.verdicts)
    pinned = found["fsq_pinned_dimension"]
    assert pinned.severity == "collapse" and pinned.evidence["dims"] == [2] and pinned.view == "family"
    assert found["summary"].severity == "collapse"
    text = " ".join(v.title + v.message + v.cause for v in outcome.verdicts)
    assert "EMA-dead" not in text and not any(v.id.startswith("ema") for v in outcome.verdicts)
    assert "duplicate_centroids" not in found and "low_rank" not in found   # no geometry on a fixed grid


def test_an_fsq_dimension_squeezed_to_few_levels_is_a_warning(tmp_path):
    torch.manual_seed(6)
    fsq = vqp.FSQ(levels=[8, 5, 5, 5], dim=32)
    with torch.no_grad():
        fsq.project_in.weight[0] *= 0.1            # dimension 0 barely moves: 3 of its 8 levels used
    path = save_in_model(fsq, 32, tmp_path / "m.pt")
    feats, _ = features(tmp_path, 3000, 32)
    narrow = _ids(audit(path, feats, levels=(8, 5, 5, 5)).verdicts)["fsq_narrow_dimension"]
    assert narrow.severity == "warning" and narrow.evidence["dims"] == [0] and narrow.evidence["levels_used"] == [3]


def test_an_lfq_bit_always_one_is_a_dead_bit(tmp_path):
    torch.manual_seed(7)
    lfq = vqp.LFQ(dim=32, codebook_size=2 ** 10)
    with torch.no_grad():
        lfq.project_in.weight[3].zero_()
        lfq.project_in.bias[3] = 1.0             # bit 3 is set for every frame
    path = save_in_model(lfq, 32, tmp_path / "m.pt")
    feats, _ = features(tmp_path, 3000, 32)
    outcome = audit(path, feats)
    dead = _ids(outcome.verdicts)["lfq_dead_bit"]
    assert dead.severity == "collapse" and dead.evidence["always_one"] == [3] and dead.evidence["bits"] == [3]
    assert outcome.result.layers[0].family["bit_stats"][0]["ones"][3] == 1.0
    assert "EMA-dead" not in " ".join(v.title + v.message for v in outcome.verdicts)


def test_one_collapsed_head_is_named_not_averaged_away(tmp_path):
    torch.manual_seed(8)
    vq = vqp.VectorQuantize(dim=32, codebook_size=64, codebook_dim=8, heads=4, separate_codebook_per_head=True)
    with torch.no_grad():                         # head 2: every code far from the data but one
        vq._codebook.embed[2] = 50.0 + torch.rand(64, 8)
        vq._codebook.embed[2, 0] = 0.0
    path = save_in_model(vq, 32, tmp_path / "m.pt")
    feats, _ = features(tmp_path, 2000, 32)
    outcome = audit(path, feats)
    low = _ids(outcome.verdicts)["low_utilization"]
    assert low.severity == "collapse" and "(table 2)" in low.title
    assert [t["table"] for t in low.evidence["tables"]] == ["table 2"]
    assert outcome.result.layers[0].family["tables"][2]["used"] == 1


def test_a_simvq_transform_that_throws_the_codes_away_collapses(tmp_path):
    torch.manual_seed(9)
    sim = vqp.SimVQ(dim=32, codebook_size=128)
    with torch.no_grad():
        sim.code_transform.weight *= 100.0        # every effective code far from the frames
    path = save_in_model(sim, 32, tmp_path / "m.pt")
    feats, _ = features(tmp_path, 2000, 32)
    found = _ids(audit(path, feats).verdicts)
    assert found["low_utilization"].severity == "collapse"
    assert "code_transform" in found["low_utilization"].remedy and "k-means" not in found["low_utilization"].remedy


# --- detection over every fixture ---------------------------------------------------------------------------
def test_no_family_is_mistaken_for_another(tmp_path):
    table = {name: (path, fmt, {}) for name, (path, fmt) in family_files(tmp_path / "existing").items()}
    table.update(implicit_family_files(tmp_path / "implicit"))
    families = {"fsq": "fsq", "residual_fsq": "fsq", "grouped_fsq": "fsq", "fsq_config": "fsq", "lfq": "lfq",
                "residual_lfq": "lfq", "grouped_lfq": "lfq", "simvq": "simvq", "residual_simvq": "simvq"}
    seen = set()
    for name, (path, fmt, options) in table.items():
        quantizer = load_quantizer(path, **options)
        assert quantizer.format == fmt, name
        assert quantizer.family.name == families.get(name, "vq"), name
        if name in families:
            assert detect_format(read_checkpoint(path, **options)).name == fmt, name
        seen.add(quantizer.family.name)
        if options.get("levels") is not None:      # FSQ projections alone: ask for the levels
            with pytest.raises(LoadError, match="give the levels"):
                load_quantizer(path)
    assert seen == {"vq", "fsq", "lfq", "simvq"}


# --- the same numbers in every client -------------------------------------------------------------------------
def test_family_numbers_reach_the_json_and_the_html_report(tmp_path, capsys):
    torch.manual_seed(10)
    path = save_in_model(vqp.ResidualFSQ(levels=[8, 5, 5, 5], num_quantizers=2, dim=32), 32, tmp_path / "m.pt")
    feats, _ = features(tmp_path, 2000, 32)
    out = tmp_path / "audit.json"
    assert main(["audit", str(path), str(feats), "--levels", "8,5,5,5", "--stages", "2", "--json", str(out),
                 "--quiet", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "grid" in printed and "levels used:bits" in printed
    data = json.loads(out.read_text())
    assert data["quantizer"]["family"] == "fsq" and data["quantizer"]["levels"] == [8, 5, 5, 5]
    python = audit(path, feats, levels=(8, 5, 5, 5), stages=2)
    for layer_json, layer in zip(data["layers"], python.result.layers):
        assert layer_json["family"]["grids"][0]["dims"][0]["counts"] == layer.family["grids"][0]["dims"][0]["counts"]
    html = write_report(tmp_path / "report.html", python).read_text()
    assert "frames per level of each FSQ dimension" in html and "levels used" in html
