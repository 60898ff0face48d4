"""LFQ and SimVQ families against vector-quantize-pytorch's own modules (LFQ, ResidualLFQ,
GroupedResidualLFQ, SimVQ, ResidualSimVQ), saved inside a user's model: rvq-viewer's codes must equal
the module's indices on the same frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fixtures_families import module_indices, save_in_model
from fixtures_formats import require

vqp = require("vector_quantize_pytorch")

from rvq_viewer.analysis.audit import run_audit  # noqa: E402
from rvq_viewer.errors import LoadError  # noqa: E402
from rvq_viewer.io import FeatureSource, load_quantizer  # noqa: E402


def frames(n: int, dim: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kwargs", [
    dict(dim=32, codebook_size=2 ** 10),
    dict(dim=12, codebook_size=2 ** 12),                                    # no projection: dim == bits
    dict(dim=40, codebook_size=2 ** 6, num_codebooks=3),
    dict(dim=40, codebook_size=2 ** 6, num_codebooks=2, cosine_sim_project_in=True),
    dict(dim=32, codebook_size=2 ** 8, orthogonal_rotation=True),
    dict(dim=32, codebook_size=2 ** 8, spherical=True),                     # BSQ: the same sign pattern
], ids=["plain", "no-projection", "three-codebooks", "cosine-project-in", "rotation", "spherical"])
def test_lfq_parity(tmp_path, kwargs):
    torch.manual_seed(0)
    lfq = vqp.LFQ(**kwargs)
    path = save_in_model(lfq, kwargs["dim"], tmp_path / "model.pt")
    quantizer = load_quantizer(path)
    assert quantizer.format == "lfq" and quantizer.family.name == "lfq"
    heads = kwargs.get("num_codebooks", 1)
    bits = int(np.log2(kwargs["codebook_size"]))
    assert quantizer.bits == bits and quantizer.codes_per_frame == heads
    x = frames(500, kwargs["dim"])
    ref = module_indices(lfq, x)[0].long()
    if heads > 1:
        ref = (ref + torch.arange(heads) * 2 ** bits).reshape(-1)
    assert torch.equal(quantizer.encode(x)[0], ref)


@pytest.mark.parametrize("stages", [1, 4])
def test_residual_lfq_parity(tmp_path, stages):
    torch.manual_seed(1)
    rlfq = vqp.ResidualLFQ(dim=32, codebook_size=2 ** 8, num_quantizers=stages)
    path = save_in_model(rlfq, 32, tmp_path / "model.ckpt", wrap="state_dict", extra={"global_step": 10})
    quantizer = load_quantizer(path)
    assert quantizer.n_q == stages and quantizer.scales == [2.0 ** -i for i in range(stages)]
    x = frames(400, 32)
    assert torch.equal(quantizer.encode(x), module_indices(rlfq, x)[0].t().long())


def test_grouped_residual_lfq_parity(tmp_path):
    torch.manual_seed(2)
    grouped = vqp.GroupedResidualLFQ(dim=32, codebook_size=2 ** 6, num_quantizers=2, groups=2)
    quantizer = load_quantizer(save_in_model(grouped, 32, tmp_path / "model.pt"))
    x = frames(300, 32)
    ref = module_indices(grouped, x)[:, 0].permute(2, 1, 0).long() + torch.arange(2) * 64
    assert torch.equal(quantizer.encode(x), ref.reshape(2, -1))


def test_lfq_at_262144_codes_counts_every_code(tmp_path):
    """2^18 = 262,144 sign patterns: one counts array of that length per layer, all codes reachable."""
    torch.manual_seed(3)
    lfq = vqp.LFQ(dim=64, codebook_size=2 ** 18)
    quantizer = load_quantizer(save_in_model(lfq, 64, tmp_path / "model.pt"))
    x = frames(20000, 64, seed=4)
    np.save(tmp_path / "f.npy", x.numpy())
    result = run_audit(quantizer, FeatureSource([tmp_path / "f.npy"], 64), "cpu")
    counts = result.layers[0].counts
    ref = module_indices(lfq, x)[0].long().numpy()
    assert counts.size == 262144 and counts.sum() == 20000
    assert np.array_equal(counts, np.bincount(ref, minlength=262144))
    assert len(result.layers[0].family["bit_stats"][0]["ones"]) == 18


@pytest.mark.parametrize("stages", [None, 3])
def test_simvq_parity(tmp_path, stages):
    torch.manual_seed(5)
    module = (vqp.SimVQ(dim=32, codebook_size=256) if stages is None
              else vqp.ResidualSimVQ(dim=32, codebook_size=128, num_quantizers=stages))
    quantizer = load_quantizer(save_in_model(module, 32, tmp_path / "model.pt"))
    assert quantizer.format == "simvq" and quantizer.family.name == "simvq" and quantizer.family.learned
    layers = [module] if stages is None else list(module.layers)
    for table, layer in zip(quantizer.codebooks, layers):     # what is searched and shown: W(C)
        assert torch.allclose(table, layer.codebook.detach(), atol=1e-6)
    x = frames(500, 32)
    ref = module_indices(module, x)[0].long()
    assert torch.equal(quantizer.encode(x), ref.unsqueeze(0) if stages is None else ref.t())


def test_simvq_with_a_deeper_code_transform_is_refused(tmp_path):
    torch.manual_seed(6)
    deep = vqp.SimVQ(dim=16, codebook_size=32, codebook_transform=nn.Sequential(nn.Linear(16, 32), nn.ReLU(),
                                                                                nn.Linear(32, 16)))
    with pytest.raises(LoadError, match=r"not one Linear \(quantizer.code_transform.0.bias"):
        load_quantizer(save_in_model(deep, 16, tmp_path / "model.pt"))
