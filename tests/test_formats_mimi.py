"""Moshi / Mimi: moshi 0.2.13's quantizer files (`moshi/quantization/{base,core_vq,vq}.py`, PyPI, installed
--no-deps because moshi pins torch < 2.10; only these files run, by path, not the package __init__).
Its `SplitResidualVectorQuantizer` holds all-zero codebooks when fresh, so the buffers are filled with
random values first; the state is saved as Mimi's safetensors (bare) or `{"model": state}`.

HF transformers' `MimiModel` names are also tested with a fixture built from the documented key layout:
the same tensors renamed, expected to give moshi's codes, since transformers' port computes the same
thing (embed_sum / clamp(cluster_usage, 1e-5), cdist argmin); transformers' own MimiModel, written by
its own save_pretrained, is in test_formats_transformers.py.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from fixtures_formats import moshi_quantization
from rvq_viewer.errors import LoadError
from rvq_viewer.io import load_quantizer

DIM, IN_DIM, BINS = 32, 48, 64


def filled(module, seed: int):
    g = torch.Generator().manual_seed(seed)
    for name, buf in module.named_buffers():
        if name.endswith("embedding_sum"):
            buf.copy_(torch.randn(buf.shape, generator=g) * 2)
        elif name.endswith("cluster_usage"):
            buf.copy_(torch.rand(buf.shape, generator=g) * 3 + 0.05)
        elif name.endswith("_initialized"):
            buf.fill_(1.0)
    for name, param in module.named_parameters():
        with torch.no_grad():
            param.copy_(torch.randn(param.shape, generator=g) / param.shape[1] ** 0.5)
    return module.eval()


@pytest.fixture(scope="module")
def split():
    mq = moshi_quantization()
    torch.manual_seed(0)
    module = mq.SplitResidualVectorQuantizer(dimension=DIM, n_q=32, bins=BINS, input_dimension=IN_DIM,
                                             output_dimension=IN_DIM)
    return filled(module, 1)


def moshi_codes(module, x: torch.Tensor, n_q: int) -> torch.Tensor:
    module.set_num_codebooks(n_q)
    with torch.no_grad():
        return module.encode(x.t().unsqueeze(0))[0]


def mimi_state(module) -> dict:
    return {"quantizer." + k: v.detach().clone().contiguous() for k, v in module.state_dict().items()}


@pytest.fixture(scope="module")
def x():
    return torch.randn(150, IN_DIM, generator=torch.Generator().manual_seed(2))


def test_mimi_safetensors_uses_8_of_32_by_default(tmp_path, split, x):
    path = tmp_path / "tokenizer-e351c8d8-checkpoint125.safetensors"
    save_file(mimi_state(split), str(path))
    quantizer = load_quantizer(path)
    assert quantizer.format == "mimi" and quantizer.n_q == 8 and quantizer.dim == IN_DIM
    assert any("8 of 32" in n for n in quantizer.notes)
    assert torch.equal(quantizer.encode(x), moshi_codes(split, x, 8))


@pytest.mark.parametrize("n_q", [1, 2, 16, 32])
def test_mimi_n_q_option(tmp_path, split, x, n_q):
    path = tmp_path / "mimi.pt"
    torch.save({"model": mimi_state(split)}, path)
    quantizer = load_quantizer(path, n_q=n_q)
    assert quantizer.n_q == n_q
    assert torch.equal(quantizer.encode(x), moshi_codes(split, x, n_q))


def test_mimi_hf_transformers_names(tmp_path, split, x):
    """Documented-layout fixture: MimiModel's `semantic_/acoustic_residual_vector_quantizer` names."""
    renamed = {}
    for key, value in mimi_state(split).items():
        key = key.replace("rvq_first.", "semantic_residual_vector_quantizer.")
        key = key.replace("rvq_rest.", "acoustic_residual_vector_quantizer.")
        key = key.replace(".vq.layers.", ".layers.").replace("._codebook.", ".codebook.")
        key = key.replace("codebook._initialized", "codebook.initialized").replace("embedding_sum", "embed_sum")
        renamed[key] = value
    assert "quantizer.acoustic_residual_vector_quantizer.layers.30.codebook.embed_sum" in renamed
    path = tmp_path / "model.safetensors"
    save_file(renamed, str(path))
    quantizer = load_quantizer(path, n_q=12)
    assert quantizer.format == "mimi" and any("HF transformers" in n for n in quantizer.notes)
    assert torch.equal(quantizer.encode(x), moshi_codes(split, x, 12))


def test_single_moshi_rvq(tmp_path, x):
    mq = moshi_quantization()
    torch.manual_seed(3)
    rvq = filled(mq.ResidualVectorQuantizer(dimension=DIM, input_dimension=IN_DIM, n_q=5, bins=BINS), 4)
    torch.save({"model": {"quantizer." + k: v for k, v in rvq.state_dict().items()}}, tmp_path / "rvq.pt")
    quantizer = load_quantizer(tmp_path / "rvq.pt")
    assert quantizer.format == "moshi-rvq" and quantizer.n_q == 5
    with torch.no_grad():
        expected = rvq.encode(x.t().unsqueeze(0))[0]
    assert torch.equal(quantizer.encode(x), expected)


def test_relative_dead_code_rule_is_moshis(tmp_path, split):
    state = mimi_state(split)
    usage = torch.full((BINS,), 1.0)
    usage[[3, 7, 11]] = 0.05          # below 0.1 x the uniform share (about 0.1)
    state["quantizer.rvq_rest.vq.layers.0._codebook.cluster_usage"] = usage
    save_file(state, str(tmp_path / "m.safetensors"))
    quantizer = load_quantizer(tmp_path / "m.safetensors")
    assert quantizer.dead_code_rule.kind == "relative" and quantizer.dead_code_rule.value == 0.1
    assert "Moshi/Mimi" in quantizer.summary()["dead_code_rule"]
    assert quantizer.ema_dead_codes(1).tolist() == [3, 7, 11]


def test_residuals_live_in_the_joined_branch_space(tmp_path, split, x):
    save_file(mimi_state(split), str(tmp_path / "m.safetensors"))
    quantizer = load_quantizer(tmp_path / "m.safetensors", n_q=4)
    latent = quantizer.prepare(x)
    x_sem = x @ split.rvq_first.input_proj.weight[:, :, 0].t()
    x_ac = x @ split.rvq_rest.input_proj.weight[:, :, 0].t()
    assert torch.allclose(latent, torch.cat([x_sem, x_ac], dim=1), atol=1e-5)
    steps = list(quantizer.iter_layers(latent))
    # After the semantic layer the acoustic half is untouched; later layers leave the semantic half be.
    assert torch.equal(steps[0].residual[:, DIM:], latent[:, DIM:])
    for step in steps[1:]:
        assert torch.equal(step.residual[:, :DIM], steps[0].residual[:, :DIM])
    codes = quantizer.encode(x)
    sem_table = quantizer.codebooks[0]
    assert torch.allclose(steps[0].residual[:, :DIM], x_sem - sem_table[codes[0]], atol=1e-5)
    # n_q = 1 is the semantic branch alone.
    semantic = load_quantizer(tmp_path / "m.safetensors", n_q=1)
    assert semantic.prepare(x).shape == (len(x), DIM)


def test_uninitialised_codebook_is_refused(tmp_path, split):
    state = mimi_state(split)
    state["quantizer.rvq_rest.vq.layers.2._codebook._initialized"] = torch.zeros(1)
    save_file(state, str(tmp_path / "m.safetensors"))
    with pytest.raises(LoadError, match=r"rvq_rest\.vq\.layers\.2\._codebook: codebook never initialised"):
        load_quantizer(tmp_path / "m.safetensors")
