"""SNAC: the package's own model (PyPI snac 1.2.1, installed --no-deps) with random weights, saved as its
HF repos hold it (a bare `pytorch_model.bin` and `config.json`), against rvq-viewer on the encoder's
latents. Codes come at several rates: level i codes one frame per `vq_strides[i]` latent frames."""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import pytest
import torch

from fixtures_formats import require

snac = require("snac")

from rvq_viewer.analysis.audit import run_audit  # noqa: E402
from rvq_viewer.io import FeatureSource, load_quantizer  # noqa: E402


def small_snac(vq_strides, seed: int = 0):
    torch.manual_seed(seed)
    config = dict(sampling_rate=24000, encoder_dim=8, encoder_rates=[2, 4], decoder_dim=32, decoder_rates=[4, 2],
                  attn_window_size=None, codebook_size=64, codebook_dim=8, vq_strides=list(vq_strides))
    return snac.SNAC(**config).eval(), config


def save_repo(model, config, folder, with_config=True):
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    if with_config:
        (folder / "config.json").write_text(json.dumps(config))
    return folder / "pytorch_model.bin"


def latents_and_codes(model, n_samples: int, seed: int = 1):
    audio = torch.randn(1, 1, n_samples, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        codes = model.encode(audio)
        z = model.encoder(model.preprocess(audio))
    return z[0].t(), [c[0] for c in codes]


@pytest.mark.parametrize("strides", [[4, 2, 1], [8, 4, 2, 1]])
def test_snac_codes_match_the_model_at_every_rate(tmp_path, strides):
    model, config = small_snac(strides)
    path = save_repo(model, config, tmp_path / "repo")
    quantizer = load_quantizer(path)
    assert quantizer.format == "snac"
    assert quantizer.layer_strides == strides and quantizer.frame_stride == max(strides)
    assert quantizer.dim == 32 and not quantizer.has_ema
    latent, expected = latents_and_codes(model, 8 * 480)
    ours = quantizer.encode(latent)
    assert isinstance(ours, list) and [len(c) for c in ours] == [len(latent) // s for s in strides]
    for level, (a, b) in enumerate(zip(ours, expected)):
        assert torch.equal(a, b), f"level {level}"
    assert quantizer.frames_per_layer(len(latent)) == [len(c) for c in expected]


def test_snac_without_config_uses_defaults_and_says_so(tmp_path):
    model, config = small_snac([8, 4, 2, 1])
    path = save_repo(model, config, tmp_path / "bare", with_config=False)
    quantizer = load_quantizer(path)
    assert quantizer.layer_strides == [8, 4, 2, 1]
    assert any("default" in n for n in quantizer.notes)
    # Strides no default can guess are given as an option.
    odd, cfg = small_snac([2, 2, 1], seed=3)
    path = save_repo(odd, cfg, tmp_path / "odd", with_config=False)
    quantizer = load_quantizer(path, vq_strides=[2, 2, 1])
    latent, expected = latents_and_codes(odd, 8 * 96)
    assert all(torch.equal(a, b) for a, b in zip(quantizer.encode(latent), expected))


def test_iter_layers_codes_at_level_rate_residual_at_base_rate(tmp_path):
    model, config = small_snac([4, 2, 1])
    quantizer = load_quantizer(save_repo(model, config, tmp_path / "r"))
    latent, _ = latents_and_codes(model, 8 * 240)
    residual_norms = []
    for step in quantizer.iter_layers(quantizer.prepare(latent)):
        assert step.codes.shape == (len(latent) // quantizer.layer_strides[step.index],)
        assert step.output.shape == latent.shape and step.residual.shape == latent.shape
        residual_norms.append(float(step.residual.norm()))
    # The model's own forward: z_q is the sum of the outputs, so z - z_q is the last residual.
    with torch.no_grad():
        z_q, _ = model.quantizer(latent.t().unsqueeze(0))
    last = latent - z_q[0].t()
    assert residual_norms[-1] == pytest.approx(float(last.norm()), rel=1e-4)
    decoded = quantizer.decode(quantizer.encode(latent))
    assert torch.allclose(decoded, z_q[0].t(), atol=1e-4)


def test_snac_chunked_features_match_whole_sequences_and_audit_runs(tmp_path):
    model, config = small_snac([4, 2, 1])
    quantizer = load_quantizer(save_repo(model, config, tmp_path / "r"))
    folder = tmp_path / "latents"
    folder.mkdir()
    latents = []
    for i, n in enumerate((8 * 104, 8 * 56, 8 * 200)):
        latent, _ = latents_and_codes(model, n, seed=10 + i)
        latent = latent[: len(latent) - 2] if i == 1 else latent        # one length not a multiple of 4
        latents.append(latent)
        np.save(folder / f"{i}.npy", latent.numpy())
    source = FeatureSource([folder], quantizer.dim, chunk_frames=30, frame_stride=quantizer.frame_stride)
    per = defaultdict(list)
    for chunk in source:
        assert len(chunk.frames) % 4 == 0 or chunk is not None
        per[chunk.sequence].append(quantizer.encode(chunk.frames))
    for i, latent in enumerate(latents):
        whole = quantizer.encode(latent)
        for level in range(3):
            assert torch.equal(torch.cat([c[level] for c in per[i]]), whole[level]), (i, level)
    result = run_audit(quantizer, source, "cpu")
    usable = [len(x) - len(x) % 4 for x in latents]
    assert result.frames == sum(usable)
    assert [sum(layer.counts) for layer in result.layers] == [sum(u // s for u in usable) for s in (4, 2, 1)]


def test_legacy_weight_norm_names_with_config_are_snac(tmp_path):
    """torch's parametrization load hook accepts weight_g / weight_v: such files are SNAC when the
    config beside them names vq_strides."""
    model, config = small_snac([4, 2, 1])
    state = {}
    for key, value in model.state_dict().items():
        key = key.replace("parametrizations.weight.original0", "weight_g")
        state[key.replace("parametrizations.weight.original1", "weight_v")] = value
    folder = tmp_path / "legacy"
    folder.mkdir()
    torch.save(state, folder / "pytorch_model.bin")
    (folder / "config.json").write_text(json.dumps(config))
    quantizer = load_quantizer(folder / "pytorch_model.bin")
    assert quantizer.format == "snac"
    latent, expected = latents_and_codes(model, 8 * 64)
    assert all(torch.equal(a, b) for a, b in zip(quantizer.encode(latent), expected))
