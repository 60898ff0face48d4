"""Descript Audio Codec: `dac/nn/quantize.py` from the PyPI package (descript-audio-codec 1.0.0,
installed --no-deps) run from its file, because `import dac` pulls audiotools and its audio stack.
Its `ResidualVectorQuantize` with random weights is saved the way audiotools' `BaseModel.save` writes
DAC weights ({"state_dict", "metadata": {"kwargs"}}), loaded by rvq-viewer, and compared code for code
with the module's eval-mode forward."""

from __future__ import annotations

import warnings

import pytest
import torch

from fixtures_formats import dac_quantize
from rvq_viewer.errors import LoadError
from rvq_viewer.io import load_quantizer


@pytest.fixture(scope="module")
def dq():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)        # torch.nn.utils.weight_norm is deprecated
        warnings.simplefilter("ignore", DeprecationWarning)   # and so is the torch.jit.script it uses
        return dac_quantize()


def build(dq, seed=0, **kwargs):
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return dq.ResidualVectorQuantize(**kwargs).eval()


def save_dac(rvq, path, kwargs):
    state = {"quantizer." + k: v for k, v in rvq.state_dict().items()}
    state["encoder.block.0.weight_v"] = torch.randn(8, 1, 7)
    torch.save({"state_dict": state, "metadata": {"kwargs": {"latent_dim": kwargs["input_dim"], **kwargs}}}, path)
    return path


def dac_codes(rvq, latent: torch.Tensor, n_quantizers=None) -> torch.Tensor:
    with torch.no_grad():
        out = rvq(latent.t().unsqueeze(0), n_quantizers=n_quantizers)
    return out[1][0]                     # (z, codes [B, n_q, T], latents, commitment, codebook losses)


@pytest.mark.parametrize("kwargs", [
    dict(input_dim=64, n_codebooks=6, codebook_size=128, codebook_dim=8),
    dict(input_dim=32, n_codebooks=3, codebook_size=64, codebook_dim=[4, 8, 16]),
], ids=["uniform", "dims-per-layer"])
def test_dac_codes_match(tmp_path, dq, kwargs):
    rvq = build(dq, **kwargs)
    quantizer = load_quantizer(save_dac(rvq, tmp_path / "weights.pth", kwargs))
    assert quantizer.format == "dac" and quantizer.n_q == kwargs["n_codebooks"]
    assert not quantizer.has_ema and quantizer.ema_dead_codes(0) is None
    assert any("usage comes from encoding alone" in n for n in quantizer.notes)
    latent = torch.randn(400, kwargs["input_dim"], generator=torch.Generator().manual_seed(1))
    assert torch.equal(quantizer.encode(latent), dac_codes(rvq, latent))


def test_dac_fewer_quantizers(tmp_path, dq):
    kwargs = dict(input_dim=32, n_codebooks=8, codebook_size=64, codebook_dim=8)
    rvq = build(dq, seed=2, **kwargs)
    quantizer = load_quantizer(save_dac(rvq, tmp_path / "w.pth", kwargs), n_q=3)
    latent = torch.randn(100, 32, generator=torch.Generator().manual_seed(3))
    assert torch.equal(quantizer.encode(latent), dac_codes(rvq, latent, n_quantizers=3)[:3])


def test_dac_converted_plain_weights(tmp_path, dq):
    """Converted files (HF transformers removes weight norm) hold a plain `weight` per conv."""
    kwargs = dict(input_dim=32, n_codebooks=4, codebook_size=64, codebook_dim=8)
    rvq = build(dq, seed=4, **kwargs)
    latent = torch.randn(200, 32, generator=torch.Generator().manual_seed(5))
    expected = dac_codes(rvq, latent)
    for module in rvq.modules():
        if hasattr(module, "weight_g"):
            torch.nn.utils.remove_weight_norm(module)
    state = {"quantizer." + k: v for k, v in rvq.state_dict().items()}
    assert not any(k.endswith("weight_g") for k in state)
    torch.save(state, tmp_path / "plain.pt")
    quantizer = load_quantizer(tmp_path / "plain.pt")
    assert quantizer.format == "dac" and any("plain 1x1" in n for n in quantizer.notes)
    assert torch.equal(quantizer.encode(latent), expected)


def test_dac_decode_is_the_sum_of_out_projections(tmp_path, dq):
    kwargs = dict(input_dim=16, n_codebooks=3, codebook_size=32, codebook_dim=4)
    rvq = build(dq, seed=6, **kwargs)
    quantizer = load_quantizer(save_dac(rvq, tmp_path / "w.pth", kwargs))
    latent = torch.randn(50, 16, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        z_q = rvq(latent.t().unsqueeze(0))[0][0].t()
    assert torch.allclose(quantizer.decode(quantizer.encode(latent)), z_q, atol=1e-5)


def test_dac_zero_direction_is_refused(tmp_path, dq):
    kwargs = dict(input_dim=16, n_codebooks=2, codebook_size=32, codebook_dim=4)
    rvq = build(dq, seed=8, **kwargs)
    path = save_dac(rvq, tmp_path / "w.pth", kwargs)
    package = torch.load(path)
    package["state_dict"]["quantizer.quantizers.1.in_proj.weight_v"][2].zero_()
    torch.save(package, path)
    with pytest.raises(LoadError, match="layer 1 in_proj: weight norm of a zero direction"):
        load_quantizer(path)
