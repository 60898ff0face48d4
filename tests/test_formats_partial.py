"""No format falls through silently: a file that carries a specific family's marks but lacks a part gets
that family's message, never the quantizer of a more general family that would read it another way."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from fixtures_formats import encodec_layers, factorized_layers, mimi_layers, save_gpt_sovits
from rvq_viewer.cli import main
from rvq_viewer.errors import LoadError
from rvq_viewer.io import load_quantizer
from rvq_viewer.io.checkpoints import NoQuantizerError


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def sovits_state(ssl_proj: bool = True) -> dict:
    state = encodec_layers(gen(), "quantizer.vq.", 1, 64, 32)
    state["enc_p.encoder_text.weight"] = torch.randn(8, 8)
    if ssl_proj:
        state["ssl_proj.weight"] = torch.randn(32, 32, 2) * 0.2
    return state


@pytest.mark.parametrize("magic", [b"03", b"04", None])
def test_gpt_sovits_keys_without_ssl_proj_get_gpt_sovits_message(tmp_path, magic, capsys):
    path = tmp_path / "voice.pth"
    save_gpt_sovits(path, sovits_state(ssl_proj=False), magic=magic)
    with pytest.raises(LoadError, match="GPT-SoVITS .*export holds no ssl_proj"):
        load_quantizer(path)
    assert main(["info", str(path)]) == 2
    assert "holds no ssl_proj" in capsys.readouterr().err


def test_gpt_sovits_training_checkpoint_without_ssl_proj(tmp_path):
    path = tmp_path / "G_100.pth"
    torch.save({"model": sovits_state(ssl_proj=False), "iteration": 3, "optimizer": {}, "learning_rate": 1e-4}, path)
    with pytest.raises(LoadError, match="holds no ssl_proj"):
        load_quantizer(path)


def test_gpt_sovits_weights_without_their_quantizer(tmp_path):
    state = {"ssl_proj.weight": torch.randn(32, 32, 2), "enc_p.encoder_text.weight": torch.randn(8, 8)}
    save_gpt_sovits(tmp_path / "voice.pth", state)
    with pytest.raises(NoQuantizerError, match="GPT-SoVITS weights without their quantizer"):
        load_quantizer(tmp_path / "voice.pth")


def test_a_bare_encodec_rvq_is_still_encodec(tmp_path):
    """The control: the same quantizer keys with no GPT-SoVITS mark are EnCodec's layout."""
    torch.save(encodec_layers(gen(), "quantizer.vq.", 2, 64, 32), tmp_path / "rvq.th")
    assert load_quantizer(tmp_path / "rvq.th").format == "encodec"


@pytest.mark.parametrize("hf, drop, keep", [(False, "quantizer.rvq_first.", "rvq_rest"),
                                            (False, "quantizer.rvq_rest.", "rvq_first"),
                                            (True, "quantizer.acoustic_", "semantic_residual_vector_quantizer"),
                                            (True, "quantizer.semantic_", "acoustic_residual_vector_quantizer")])
def test_a_mimi_file_missing_one_branch_gets_mimis_message(tmp_path, hf, drop, keep):
    state = {k: v for k, v in mimi_layers(gen(), 8, 64, 16, 24, hf=hf).items() if not k.startswith(drop)}
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(LoadError, match=rf"Mimi split quantizer with only its {keep} branch: "
                                        rf"{drop.rstrip('.')}\w* is missing"):
        load_quantizer(tmp_path / "model.safetensors")


def test_a_mimi_branch_without_its_input_proj(tmp_path):
    state = mimi_layers(gen(), 8, 64, 16, 24)
    del state["quantizer.rvq_rest.input_proj.weight"]
    save_file(state, str(tmp_path / "mimi.safetensors"))
    with pytest.raises(LoadError, match=r"quantizer\.rvq_rest\.input_proj\.weight is missing"):
        load_quantizer(tmp_path / "mimi.safetensors")


def test_dac_codebooks_without_in_proj(tmp_path):
    state = {k: v for k, v in factorized_layers(gen(), "quantizer.", 3, 64, 8, 32, "weight_norm").items()
             if ".in_proj." not in k}
    torch.save({"state_dict": state, "metadata": {"kwargs": {}}}, tmp_path / "weights.pth")
    with pytest.raises(LoadError, match=r"a DAC-style codebook \(quantizer\.quantizers\.\d\.codebook\.weight\) "
                                        r"without its in_proj"):
        load_quantizer(tmp_path / "weights.pth")
