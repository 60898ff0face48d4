"""EnCodec-rule families told apart by their keys, and `rvq-viewer info` on a real-layout file of every
supported family.

SpeechTokenizer: its own `speechtokenizer/quantization/core_vq.py` (PyPI 1.0.1, --no-deps; the file is
run by path since the package __init__ imports its trainer). WavTokenizer's own Lightning layout
(not on PyPI) and HF transformers' EncodecModel names are documented-layout fixtures here, compared with
EnCodec's own encode, whose math both copy; transformers' own models, written by their own
save_pretrained, are in test_formats_transformers.py.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from fixtures_formats import encodec_layers, family_files, fill_encodec_rvq, speechtokenizer_core_vq
from peers import encodec_core_vq
from rvq_viewer.cli import main
from rvq_viewer.io import load_quantizer


def gen(seed):
    return torch.Generator().manual_seed(seed)


def encodec_ref(state: dict, prefix: str, n_q: int, dim: int, k: int, hf: bool = False):
    cv = encodec_core_vq()
    rvq = cv.ResidualVectorQuantization(num_quantizers=n_q, dim=dim, codebook_size=k)
    sub = {}
    for key, value in state.items():
        if key.startswith(prefix):
            rest = key[len(prefix):]
            sub[rest.replace(".codebook.", "._codebook.") if hf else rest] = value
    rvq.load_state_dict(sub)
    return rvq.eval()


def codes_of(rvq, frames):
    with torch.no_grad():
        return rvq.encode(frames.t().unsqueeze(0))[:, 0]


def test_speechtokenizer_parity_with_its_own_core_vq(tmp_path):
    cv = speechtokenizer_core_vq()
    rvq = cv.ResidualVectorQuantization(num_quantizers=8, dim=64, codebook_size=256)
    fill_encodec_rvq(rvq, gen(0))
    rvq.eval()
    state = {f"quantizer.vq.{k}": v for k, v in rvq.state_dict().items()}
    state.update({"transform.weight": torch.randn(48, 64, generator=gen(1)), "transform.bias": torch.zeros(48),
                  "encoder.model.0.conv.conv.weight": torch.randn(16, 1, 7, generator=gen(2))})
    torch.save(state, tmp_path / "SpeechTokenizer.pt")
    (tmp_path / "config.json").write_text(json.dumps({"dimension": 64, "n_q": 8, "codebook_size": 256}))
    quantizer = load_quantizer(tmp_path / "SpeechTokenizer.pt")
    assert quantizer.format == "speechtokenizer" and quantizer.dim == 64
    assert any("transform" in n and "not applied" in n for n in quantizer.notes)
    frames = torch.randn(120, 64, generator=gen(3))
    with torch.no_grad():
        expected = rvq.encode(frames.t().unsqueeze(0), n_q=8, st=0)[:, 0]
    assert torch.equal(quantizer.encode(frames), expected)


def test_wavtokenizer_lightning_checkpoint(tmp_path):
    """Documented layout: Lightning `state_dict` with `feature_extractor.encodec.quantizer.vq.layers.0`."""
    prefix = "feature_extractor.encodec.quantizer.vq."
    state = encodec_layers(gen(4), prefix, 1, 512, 64)
    state.update({"backbone.embed.weight": torch.randn(32, 64, 7), "head.out.weight": torch.randn(10, 32)})
    torch.save({"state_dict": state, "epoch": 3, "global_step": 9000, "pytorch-lightning_version": "1.8.6",
                "callbacks": {"ModelCheckpoint": {"best_model_score": torch.tensor(1.0)}},
                "optimizer_states": [], "lr_schedulers": []}, tmp_path / "wavtokenizer.ckpt")
    quantizer = load_quantizer(tmp_path / "wavtokenizer.ckpt")
    assert quantizer.format == "wavtokenizer" and quantizer.codebook_size == 512
    frames = torch.randn(200, 64, generator=gen(5))
    assert torch.equal(quantizer.encode(frames), codes_of(encodec_ref(state, prefix, 1, 64, 512), frames))


def test_hf_transformers_encodec(tmp_path):
    """Documented layout: `quantizer.layers.{i}.codebook.{inited,cluster_size,embed,embed_avg}`."""
    state = encodec_layers(gen(6), "quantizer.", 8, 128, 32, hf=True)
    state["encoder.layers.0.conv.weight_v"] = torch.randn(8, 1, 7)
    save_file(state, str(tmp_path / "model.safetensors"))
    quantizer = load_quantizer(tmp_path / "model.safetensors")
    assert quantizer.format == "encodec-hf" and quantizer.n_q == 8
    frames = torch.randn(90, 32, generator=gen(7))
    ref = encodec_ref(state, "quantizer.", 8, 32, 128, hf=True)
    assert torch.equal(quantizer.encode(frames), codes_of(ref, frames))


@pytest.fixture(scope="module")
def families(tmp_path_factory):
    return family_files(tmp_path_factory.mktemp("families"))


FAMILIES = ["gpt_sovits", "gpt_sovits_G", "encodec", "audiocraft", "encodec_lightning", "encodec_hf",
            "xcodec", "wavtokenizer_hf", "speechtokenizer", "wavtokenizer", "vqpytorch", "dac", "snac", "mimi",
            "mimi_hf", "moshi_rvq", "codebooks"]


@pytest.mark.parametrize("name", FAMILIES)
def test_info_names_the_format_of_every_family(families, name, capsys):
    path, expected = families[name]
    assert main(["info", str(path), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["format"] == expected
    assert summary["n_q"] >= 1 and summary["codebook_size"] >= 1


def test_every_family_is_listed(families):
    assert sorted(families) == sorted(FAMILIES)


@pytest.mark.parametrize("name", FAMILIES)
def test_cli_audit_runs_on_every_family(families, name, tmp_path, capsys):
    import numpy as np
    path, _ = families[name]
    quantizer = load_quantizer(path)
    frames = 40 * max(1, quantizer.frame_stride)
    np.save(tmp_path / "f.npy", np.random.default_rng(0).standard_normal((frames, quantizer.dim)).astype(np.float32))
    out = tmp_path / "report.json"
    assert main(["audit", str(path), str(tmp_path / "f.npy"), "--json", str(out), "--quiet"]) == 0
    capsys.readouterr()
    report = json.loads(out.read_text())
    assert report["quantizer"]["format"] == quantizer.format and len(report["layers"]) == quantizer.n_q
    latent = len(quantizer.prepare(torch.zeros(frames, quantizer.dim)))
    expected = quantizer.frames_per_layer(latent)
    assert [sum(layer["counts"]) for layer in report["layers"]] == expected
