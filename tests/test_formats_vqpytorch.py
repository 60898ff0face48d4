"""vector-quantize-pytorch: the package's own modules (PyPI, installed --no-deps) with random weights,
saved as users save them (a state dict, bare or inside their model), loaded by rvq-viewer, and the
codes compared with the module's own eval-mode forward on the same features."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from fixtures_formats import require

vqp = require("vector_quantize_pytorch")

from rvq_viewer.analysis.audit import run_audit  # noqa: E402
from rvq_viewer.errors import LoadError  # noqa: E402
from rvq_viewer.io import FeatureSource, load_quantizer  # noqa: E402


def seeded(seed: int):
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed + 100)


def module_codes(module, x: torch.Tensor) -> torch.Tensor:
    """The package's indices for one sequence x [T, dim], as [n_q, T * slots] like rvq-viewer's."""
    module.eval()
    with torch.no_grad():
        out = module(x.unsqueeze(0))
    indices = out[1]
    return indices


def save(module, path, prefix: str = "", wrap: str | None = None, extra: dict | None = None):
    state = {prefix + k: v.detach().clone() for k, v in module.state_dict().items()}
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
        return path
    package = state if wrap is None else {wrap: state, **(extra or {})}
    torch.save(package, path)
    return path


@pytest.mark.parametrize("kwargs", [
    dict(dim=32, num_quantizers=4, codebook_size=64),
    dict(dim=32, num_quantizers=3, codebook_size=64, codebook_dim=8),               # project_in / out
    dict(dim=24, num_quantizers=3, codebook_size=(32, 64, 128)),                     # sizes per layer
    dict(dim=32, num_quantizers=4, codebook_size=64, use_cosine_sim=True),
    dict(dim=32, num_quantizers=2, codebook_size=64, use_cosine_sim=True, codebook_dim=16),
], ids=["euclid", "projected", "sizes", "cosine", "cosine-projected"])
def test_residual_vq_parity(tmp_path, kwargs):
    seeded(0)
    rvq = vqp.ResidualVQ(**kwargs)
    path = save(rvq, tmp_path / "rvq.pt")
    quantizer = load_quantizer(path)
    assert quantizer.format == "vector-quantize-pytorch"
    assert quantizer.n_q == kwargs["num_quantizers"] and quantizer.dim == kwargs["dim"]
    assert quantizer.cosine == kwargs.get("use_cosine_sim", False)
    x = torch.randn(300, kwargs["dim"], generator=torch.Generator().manual_seed(1)) * 2
    ref = module_codes(rvq, x)[0].t()                                  # [n_q, T]
    assert torch.equal(quantizer.encode(x), ref)


def test_residual_vq_inside_a_model_and_in_safetensors(tmp_path):
    seeded(1)
    rvq = vqp.ResidualVQ(dim=16, num_quantizers=3, codebook_size=32)
    x = torch.randn(100, 16, generator=torch.Generator().manual_seed(2))
    ref = module_codes(rvq, x)[0].t()
    wrapped = save(rvq, tmp_path / "model.ckpt", prefix="codec.quantizer.", wrap="state_dict",
                   extra={"epoch": 2, "hyper_parameters": {"lr": 3e-4}})
    flat = save(rvq, tmp_path / "model.safetensors", prefix="rvq.")
    for path in (wrapped, flat):
        quantizer = load_quantizer(path)
        assert torch.equal(quantizer.encode(x), ref), path.name


@pytest.mark.parametrize("kwargs", [
    dict(dim=32, codebook_size=64),
    dict(dim=32, codebook_size=64, codebook_dim=8, heads=4, separate_codebook_per_head=True),
    dict(dim=32, codebook_size=64, codebook_dim=8, heads=4, separate_codebook_per_head=False),
    dict(dim=32, codebook_size=64, codebook_dim=16, layernorm_after_project_in=True),
    dict(dim=32, codebook_size=64, use_cosine_sim=True, codebook_dim=8, heads=2, separate_codebook_per_head=True),
], ids=["plain", "heads-separate", "heads-shared", "layernorm", "cosine-heads"])
def test_vector_quantize_parity(tmp_path, kwargs):
    seeded(3)
    vq = vqp.VectorQuantize(**kwargs)
    path = save(vq, tmp_path / "vq.pt", prefix="vq.")
    heads = kwargs.get("heads", 1)
    separate = kwargs.get("separate_codebook_per_head", False)
    # Heads sharing one codebook with dim == heads * codebook_dim leave no trace in the keys.
    quantizer = load_quantizer(path, heads=heads if heads > 1 and not separate else None)
    assert quantizer.codes_per_frame == heads
    k = kwargs["codebook_size"]
    assert quantizer.codebook_size == (k * heads if separate else k)
    x = torch.randn(150, 32, generator=torch.Generator().manual_seed(4))
    ref = module_codes(vq, x)[0]                                        # [T] or [T, heads]
    if ref.ndim == 1:
        ref = ref.unsqueeze(1)
    if separate:
        ref = ref + torch.arange(heads) * k                            # table t's codes are t*K + k
    assert torch.equal(quantizer.encode(x)[0], ref.reshape(-1))


def test_grouped_residual_vq_parity(tmp_path):
    seeded(5)
    grvq = vqp.GroupedResidualVQ(dim=32, groups=2, num_quantizers=3, codebook_size=64, codebook_dim=8)
    path = save(grvq, tmp_path / "grvq.pt")
    quantizer = load_quantizer(path)
    assert quantizer.codes_per_frame == 2 and quantizer.codebook_size == 128
    x = torch.randn(80, 32, generator=torch.Generator().manual_seed(6))
    ref = module_codes(grvq, x)                                         # [G, 1, T, n_q]
    ref = (ref[:, 0] + (torch.arange(2) * 64)[:, None, None]).permute(2, 1, 0).reshape(3, -1)
    assert torch.equal(quantizer.encode(x), ref)


def test_initted_float_before_1_26_is_accepted(tmp_path):
    seeded(6)
    rvq = vqp.ResidualVQ(dim=16, num_quantizers=2, codebook_size=32)
    state = rvq.state_dict()
    legacy = {k: (torch.tensor([float(v)]) if k.endswith("initted") else v) for k, v in state.items()}
    assert legacy["layers.0._codebook.initted"].shape == (1,)
    torch.save(legacy, tmp_path / "old.pt")
    quantizer = load_quantizer(tmp_path / "old.pt")
    assert any("< 1.26" in note for note in quantizer.notes)
    x = torch.randn(40, 16, generator=torch.Generator().manual_seed(7))
    assert torch.equal(quantizer.encode(x), module_codes(rvq, x)[0].t())


def test_kmeans_init_never_run_is_refused_and_after_training_matches(tmp_path):
    seeded(7)
    rvq = vqp.ResidualVQ(dim=16, num_quantizers=2, codebook_size=16, kmeans_init=True, kmeans_iters=2)
    save(rvq, tmp_path / "fresh.pt")
    with pytest.raises(LoadError, match="initted = False"):
        load_quantizer(tmp_path / "fresh.pt")
    rvq.train()
    with torch.no_grad():
        rvq(torch.randn(1, 200, 16))                 # k-means init and one EMA step
    save(rvq, tmp_path / "trained.pt")
    quantizer = load_quantizer(tmp_path / "trained.pt")
    x = torch.randn(60, 16, generator=torch.Generator().manual_seed(8))
    assert torch.equal(quantizer.encode(x), module_codes(rvq, x)[0].t())


def test_cosine_mode_from_config_beats_detection(tmp_path):
    seeded(8)
    rvq = vqp.ResidualVQ(dim=16, num_quantizers=2, codebook_size=32, use_cosine_sim=True)
    path = save(rvq, tmp_path / "cfg.pt", wrap="model",
                extra={"config": {"quantizer": {"use_cosine_sim": True, "codebook_size": 32,
                                                "threshold_ema_dead_code": 1.5}}})
    quantizer = load_quantizer(path)
    assert quantizer.cosine and any("from the config" in n for n in quantizer.notes)
    assert quantizer.dead_code_rule.value == 1.5
    forced = load_quantizer(path, cosine=False)
    assert not forced.cosine


def test_unit_norm_detection_is_said(tmp_path):
    seeded(9)
    rvq = vqp.ResidualVQ(dim=16, num_quantizers=2, codebook_size=32, use_cosine_sim=True)
    quantizer = load_quantizer(save(rvq, tmp_path / "c.pt"))
    assert quantizer.cosine and any("detected" in n and "unit-norm" in n for n in quantizer.notes)


def test_shared_heads_without_projection_need_the_config(tmp_path):
    seeded(10)
    vq = vqp.VectorQuantize(dim=32, codebook_size=32, codebook_dim=8, heads=4, separate_codebook_per_head=False)
    state = {k: v for k, v in vq.state_dict().items() if "project" not in k}   # dim == heads * codebook_dim
    torch.save({"model": state, "config": {"heads": 4, "codebook_size": 32}}, tmp_path / "h.pt")
    quantizer = load_quantizer(tmp_path / "h.pt")
    assert quantizer.codes_per_frame == 4 and quantizer.dim == 32


def test_ema_dead_codes_and_audit_over_heads(tmp_path):
    seeded(11)
    vq = vqp.VectorQuantize(dim=16, codebook_size=8, codebook_dim=4, heads=4, separate_codebook_per_head=True)
    with torch.no_grad():
        vq._codebook.cluster_size.copy_(torch.arange(32, dtype=torch.float).reshape(4, 8) / 4)
    quantizer = load_quantizer(save(vq, tmp_path / "v.pt"))
    assert quantizer.ema_dead_codes(0).tolist() == list(range(8))             # sizes 0 .. 1.75 < 2
    np.save(tmp_path / "f.npy", np.random.default_rng(0).standard_normal((64, 16)).astype(np.float32))
    result = run_audit(quantizer, FeatureSource([tmp_path / "f.npy"], quantizer.dim), "cpu")
    assert sum(result.layers[0].counts) == 64 * 4 and len(result.layers[0].counts) == 32


def test_unsupported_variants_are_refused(tmp_path):
    seeded(12)
    vq = vqp.VectorQuantize(dim=16, codebook_size=16, affine_param=True)
    vq.eval()
    torch.save(vq.state_dict(), tmp_path / "affine.pt")
    with pytest.raises(LoadError, match="affine_param"):
        load_quantizer(tmp_path / "affine.pt")
