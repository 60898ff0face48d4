"""Checkpoint loaders of the first slice (GPT-SoVITS, EnCodec family containers, plain codebooks), each
checked against EnCodec's own `ResidualVectorQuantization.encode` (PyPI encodec 0.1.1, core_vq.py).

Random gaussian features with fixed seeds: no exact float ties occur at these sizes, so codes must be
equal everywhere (the fast search drops ||x||², which could only matter on an exact tie).
"""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from fixtures_formats import fill_encodec_rvq, save_gpt_sovits
from peers import encodec_core_vq
from rvq_viewer.errors import LoadError
from rvq_viewer.io import load_quantizer, read_checkpoint
from rvq_viewer.io.checkpoints import detect_format


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def encodec_rvq(n_q: int, dim: int, k: int, seed: int = 0, scale: float = 1.0):
    cv = encodec_core_vq()
    rvq = cv.ResidualVectorQuantization(num_quantizers=n_q, dim=dim, codebook_size=k)
    fill_encodec_rvq(rvq, gen(seed), scale)
    return rvq.eval()


def ref_codes(rvq, frames: torch.Tensor) -> torch.Tensor:
    """EnCodec's encode on one sequence [T, D] -> [n_q, T]."""
    with torch.no_grad():
        return rvq.encode(frames.t().unsqueeze(0))[:, 0]


# --- GPT-SoVITS ---------------------------------------------------------------------------------------
def sovits_state(dim: int, k: int, kernel: int = 2, seed: int = 0) -> dict:
    """The keys `SynthesizerTrn` saves around its quantizer (a few others included, as in real files)."""
    g = gen(seed)
    rvq = encodec_rvq(1, dim, k, seed)
    state = {f"quantizer.vq.{key}": value.clone() for key, value in rvq.state_dict().items()}
    state["ssl_proj.weight"] = torch.randn(dim, dim, kernel, generator=g) / dim ** 0.5
    state["ssl_proj.bias"] = torch.randn(dim, generator=g) * 0.1
    state["enc_p.encoder_ssl.attn_layers.0.conv_q.weight"] = torch.randn(8, 8, 1, generator=g)
    state["dec.conv_pre.weight"] = torch.randn(8, 8, 7, generator=g)
    return state


def sovits_reference(state: dict, frames: torch.Tensor, fp16: bool) -> torch.Tensor:
    """ssl_proj with torch's conv1d, then EnCodec's encode, on the fp32 upcast of what was stored."""
    cast = (lambda t: t.half().float()) if fp16 else (lambda t: t.float())
    weight, bias = cast(state["ssl_proj.weight"]), cast(state["ssl_proj.bias"])
    kernel = weight.shape[-1]
    latent = torch.nn.functional.conv1d(frames.t().unsqueeze(0), weight, bias, stride=kernel)  # [1, D, T']
    cv = encodec_core_vq()
    dim, k = state["quantizer.vq.layers.0._codebook.embed"].shape[1], state["quantizer.vq.layers.0._codebook.embed"].shape[0]
    rvq = cv.ResidualVectorQuantization(num_quantizers=1, dim=int(dim), codebook_size=int(k))
    rvq.load_state_dict({key[len("quantizer.vq."):]: cast(v) for key, v in state.items()
                         if key.startswith("quantizer.vq.")})
    with torch.no_grad():
        return rvq.eval().encode(latent)[:, 0]


@pytest.mark.parametrize("magic", [None, b"03", b"04", b"05", b"06"])
def test_gpt_sovits_export_codes_match_conv_then_encodec(tmp_path, magic):
    state = sovits_state(dim=48, k=96, seed=1)
    path = tmp_path / "xxx_e8_s1234.pth"
    save_gpt_sovits(path, state, magic=magic)
    assert "utils" not in sys.modules or not hasattr(sys.modules["utils"], "HParams")
    quantizer = load_quantizer(path)
    assert quantizer.format == "gpt-sovits"
    assert (quantizer.n_q, quantizer.codebook_size, quantizer.dim, quantizer.frame_stride) == (1, 96, 48, 2)
    assert any("8epoch_1234iteration" in note for note in quantizer.notes)
    assert any("fp16" in note for note in quantizer.notes)
    frames = torch.randn(101, 48, generator=gen(2)) * 2
    ours = quantizer.encode(frames)
    assert ours.shape == (1, 50)   # stride 2 drops the odd last frame, as the conv does
    assert torch.equal(ours, sovits_reference(state, frames, fp16=True))


def test_gpt_sovits_config_is_read_as_plain_data(tmp_path):
    path = tmp_path / "w.pth"
    save_gpt_sovits(path, sovits_state(16, 32))
    ckpt = read_checkpoint(path)
    assert ckpt.meta["info"] == "8epoch_1234iteration"
    assert ckpt.meta["config"]["model"]["semantic_frame_rate"] == "25hz"
    assert "weight" in ckpt.wrappers


def test_gpt_sovits_real_shapes_768(tmp_path):
    """One case at the real size: ssl_proj [768, 768, 2], a 1024 x 768 codebook, all fp16."""
    state = sovits_state(dim=768, k=1024, seed=3)
    path = tmp_path / "real_e8_s1234.pth"
    save_gpt_sovits(path, state)
    quantizer = load_quantizer(path)
    frames = torch.randn(120, 768, generator=gen(4))
    assert torch.equal(quantizer.encode(frames), sovits_reference(state, frames, fp16=True))


def test_gpt_sovits_training_checkpoint_fp32(tmp_path):
    """logs_s2_*/G_*.pth: {"model": fp32 state, "iteration", "optimizer", "learning_rate"}."""
    state = sovits_state(dim=32, k=64, seed=5)
    path = tmp_path / "G_2333.pth"
    torch.save({"model": state, "iteration": 2333, "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4}]},
                "learning_rate": 1e-4}, path)
    quantizer = load_quantizer(path)
    assert quantizer.format == "gpt-sovits"
    frames = torch.randn(64, 32, generator=gen(6))
    assert torch.equal(quantizer.encode(frames), sovits_reference(state, frames, fp16=False))


def test_gpt_sovits_50hz_kernel_1(tmp_path):
    state = sovits_state(dim=24, k=40, kernel=1, seed=7)
    path = tmp_path / "w50.pth"
    save_gpt_sovits(path, state)
    quantizer = load_quantizer(path)
    assert quantizer.frame_stride == 1 and any("50 Hz" in n for n in quantizer.notes)
    frames = torch.randn(33, 24, generator=gen(8))
    assert torch.equal(quantizer.encode(frames), sovits_reference(state, frames, fp16=True))


def test_gpt_sovits_skip_transform_takes_projected_features(tmp_path):
    state = sovits_state(dim=40, k=64, seed=9)
    path = tmp_path / "w.pth"
    save_gpt_sovits(path, state)
    quantizer = load_quantizer(path, skip_transform=True)
    assert quantizer.transform is None and quantizer.frame_stride == 1 and quantizer.dim == 40
    assert any("skipped" in note for note in quantizer.notes)
    frames = torch.randn(90, 40, generator=gen(10))
    projected = torch.nn.functional.conv1d(frames.t().unsqueeze(0), state["ssl_proj.weight"].half().float(),
                                           state["ssl_proj.bias"].half().float(), stride=2)[0].t()
    expected = sovits_reference(state, frames, fp16=True)
    assert torch.equal(quantizer.encode(projected), expected)


def test_gpt_sovits_cli_info_names_the_format(tmp_path):
    path = tmp_path / "w.pth"
    save_gpt_sovits(path, sovits_state(16, 32), magic=b"04")
    out = subprocess.run([sys.executable, "-m", "rvq_viewer", "info", str(path)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "gpt-sovits" in out.stdout


# --- EnCodec-family containers ------------------------------------------------------------------------
def encodec_model_state(rvq, prefix: str = "quantizer.vq.") -> dict:
    g = gen(11)
    state = {f"{prefix}{k}": v.clone() for k, v in rvq.state_dict().items()}
    state["encoder.model.0.conv.conv.weight_v"] = torch.randn(32, 1, 7, generator=g)
    state["decoder.model.0.conv.conv.weight_g"] = torch.randn(32, 1, 1, generator=g)
    return state


@pytest.fixture(scope="module")
def rvq8():
    return encodec_rvq(n_q=8, dim=32, k=128, seed=12)


@pytest.fixture(scope="module")
def frames32():
    return torch.randn(200, 32, generator=gen(13)) * 2


def test_encodec_bare_state_dict(tmp_path, rvq8, frames32):
    """EnCodec's released files are a bare model state_dict."""
    path = tmp_path / "encodec_24khz-d7cc33bc.th"
    torch.save(encodec_model_state(rvq8), path)
    quantizer = load_quantizer(path)
    assert quantizer.format == "encodec" and quantizer.n_q == 8 and quantizer.has_ema
    assert torch.equal(quantizer.encode(frames32), ref_codes(rvq8, frames32))
    # A lower bandwidth: the first n_q layers.
    four = load_quantizer(path, n_q=4)
    assert torch.equal(four.encode(frames32), ref_codes(rvq8, frames32)[:4])


def test_audiocraft_export(tmp_path, rvq8, frames32):
    path = tmp_path / "compression_state_dict.bin"
    package = {"best_state": {"model": encodec_model_state(rvq8)}, "xp.cfg": "sample_rate: 32000\nchannels: 1\n",
               "version": "1.3.0", "exported": True}
    torch.save(package, path)
    quantizer = load_quantizer(path)
    assert quantizer.format == "audiocraft"
    assert torch.equal(quantizer.encode(frames32), ref_codes(rvq8, frames32))


def test_lightning_state_dict_with_prefix(tmp_path, rvq8, frames32):
    path = tmp_path / "epoch=3-step=100.ckpt"
    state = encodec_model_state(rvq8, prefix="model.codec.quantizer.vq.")
    torch.save({"state_dict": state, "epoch": 3, "global_step": 100, "pytorch-lightning_version": "2.1.0",
                "hyper_parameters": {"lr": 1e-4, "n_q": 8}, "optimizer_states": [{"state": {}}],
                "lr_schedulers": [], "callbacks": {}}, path)
    quantizer = load_quantizer(path)
    assert quantizer.format == "encodec"
    assert torch.equal(quantizer.encode(frames32), ref_codes(rvq8, frames32))


def test_encodec_inited_zero_is_refused(tmp_path, rvq8):
    state = encodec_model_state(rvq8)
    state["quantizer.vq.layers.3._codebook.inited"] = torch.zeros(1)
    path = tmp_path / "fresh.pt"
    torch.save(state, path)
    with pytest.raises(LoadError, match=r"layer 3 .*inited = 0") as info:
        load_quantizer(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_detect_format_by_keys_without_building(tmp_path, rvq8):
    path = tmp_path / "x.pt"
    torch.save(encodec_model_state(rvq8), path)
    assert detect_format(read_checkpoint(path)).name == "encodec"
    assert detect_format(read_checkpoint(path), "codebooks").name == "codebooks"
    with pytest.raises(LoadError, match="unknown format"):
        detect_format(read_checkpoint(path), "nope")


# --- plain codebook tensors ---------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".npy", ".npz", ".pt", ".safetensors"])
def test_plain_codebooks_in_every_container(tmp_path, suffix, rvq8, frames32):
    tables = torch.stack([layer._codebook.embed for layer in rvq8.layers])      # [8, 128, 32]
    path = tmp_path / f"codebooks{suffix}"
    if suffix == ".npy":
        np.save(path, tables.numpy())
    elif suffix == ".npz":
        np.savez(path, codebooks=tables.numpy())
    elif suffix == ".pt":
        torch.save(tables, path)
    else:
        save_file({"codebooks": tables.contiguous()}, str(path))
    quantizer = load_quantizer(path)
    assert quantizer.format == "codebooks" and quantizer.n_q == 8 and not quantizer.has_ema
    assert torch.equal(quantizer.encode(frames32), ref_codes(rvq8, frames32))


def test_plain_single_table(tmp_path):
    table = torch.randn(64, 16, generator=gen(14))
    path = tmp_path / "one.npy"
    np.save(path, table.numpy())
    quantizer = load_quantizer(path)
    frames = torch.randn(50, 16, generator=gen(15))
    expected = torch.cdist(frames, table).argmin(dim=1)
    assert quantizer.n_q == 1 and torch.equal(quantizer.encode(frames)[0], expected)


def test_safetensors_container_of_a_model(tmp_path, rvq8, frames32):
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in encodec_model_state(rvq8).items()}, str(path))
    quantizer = load_quantizer(path)
    assert quantizer.format == "encodec"
    assert torch.equal(quantizer.encode(frames32), ref_codes(rvq8, frames32))


def test_n_q_out_of_range_is_one_line(tmp_path, rvq8):
    path = tmp_path / "x.pt"
    torch.save(encodec_model_state(rvq8), path)
    with pytest.raises(LoadError, match="n_q=9 asked, the quantizer has 8 layers"):
        load_quantizer(path, n_q=9)


def test_bytes_io_roundtrip_of_a_legacy_pickle(tmp_path, rvq8, frames32):
    """Non-zip (legacy) torch files load through the same restricted unpickler."""
    path = tmp_path / "legacy.pt"
    buf = io.BytesIO()
    torch.save(encodec_model_state(rvq8), buf, _use_new_zipfile_serialization=False)
    path.write_bytes(buf.getvalue())
    quantizer = load_quantizer(path)
    assert torch.equal(quantizer.encode(frames32), ref_codes(rvq8, frames32))


def test_cli_skip_transform_and_forced_format(tmp_path, capsys):
    from rvq_viewer.cli import main
    import json
    path = tmp_path / "w.pth"
    save_gpt_sovits(path, sovits_state(dim=20, k=32))
    assert main(["info", str(path), "--json", "--skip-transform"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["format"] == "gpt-sovits" and summary["dim"] == 20
    assert any("skipped" in note for note in summary["notes"])
    # Forcing the EnCodec family on the same keys works; forcing an unrelated family is one line.
    assert load_quantizer(path, format="encodec").transform is None
    assert main(["info", str(path), "--format", "mimi"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a mimi checkpoint" in err and "detected: gpt-sovits" in err
