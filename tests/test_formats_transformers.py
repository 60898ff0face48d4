"""transformers' own codec models (transformers 5.24, from the registry): every `*Model` in it whose
quantizer has a codebook is built with a small config, given random codebooks, written by its own
`save_pretrained`, opened here as a folder and as its model.safetensors, and encoded: the codes must
equal the model's own quantizer's, bit for bit.

Covered: EncodecModel, DacModel, MimiModel, XcodecModel, WavTokenizerEncoderModel (and the whole
WavTokenizerModel around it), HiggsAudioV2TokenizerModel's quantizer. The Higgs modeling file imports
torchaudio at its top (only to resample audio), and no torchaudio installs beside this torch: its file
runs with an empty stand-in `torchaudio` module, its quantizer class is built from its own config, and
its state dict is written with safetensors and `config.save_pretrained` (the whole model's
`save_pretrained` would build the audio parts that need torchaudio).

Without a codebook, refused with their reason: Xcodec2Model and NeuCodecModel (finite scalar
quantization: a fixed grid), PocketTTSAudioTokenizerModel (Mimi without its RVQ codebooks), and the
wav2vec2-family `*ForPreTraining` Gumbel quantizers (codevectors chosen by a learned projection).
"""

from __future__ import annotations

import importlib
import json
import sys
import types
import warnings

import pytest
import torch

from fixtures_transformers import frames, randomise_codebooks, small, their_codes, transformers
from rvq_viewer.cli import main
from rvq_viewer.errors import LoadError
from rvq_viewer.io import load_quantizer
from rvq_viewer.io.checkpoints import NoQuantizerError

def saved(model, tmp_path, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save_pretrained(tmp_path, **kwargs)
    return tmp_path


def test_encodec_model(tmp_path):
    model = randomise_codebooks(transformers.EncodecModel(small("encodec")), 1)
    folder = saved(model, tmp_path / "encodec")
    x = frames(16)
    expected = their_codes(lambda h: model.quantizer.encode(h), x)
    assert expected.shape[0] == model.quantizer.num_quantizers > 1
    for path in (folder, folder / "model.safetensors"):
        quantizer = load_quantizer(path)
        assert quantizer.format == "encodec-hf" and quantizer.n_q == expected.shape[0]
        assert torch.equal(quantizer.encode(x), expected)


def test_dac_model(tmp_path):
    model = randomise_codebooks(transformers.DacModel(small("dac")), 2)
    folder = saved(model, tmp_path / "dac")
    x = frames(32)
    with torch.no_grad():
        expected = model.quantizer(x.t().unsqueeze(0))[1][0]
    quantizer = load_quantizer(folder)
    assert quantizer.format == "dac" and quantizer.n_q == 4
    assert any("plain 1x1 conv" in n for n in quantizer.notes)
    assert torch.equal(quantizer.encode(x), expected)


def test_mimi_model(tmp_path):
    model = randomise_codebooks(transformers.MimiModel(small("mimi")), 3)
    folder = saved(model, tmp_path / "mimi")
    x = frames(32)
    quantizer = load_quantizer(folder, n_q=6)
    assert quantizer.format == "mimi"
    assert torch.equal(quantizer.encode(x), their_codes(lambda h: model.quantizer.encode(h, 6), x))


def test_xcodec_model(tmp_path):
    """The issue's case: 'no quantizer recognised among 454 tensors' for `quantizer.quantizers.N.codebook.*`."""
    model = randomise_codebooks(transformers.XcodecModel(small("xcodec")), 4)
    assert "quantizer.quantizers.0.codebook.embed" in model.state_dict()
    folder = saved(model, tmp_path / "xcodec")
    x = frames(32)
    expected = their_codes(lambda h: model.quantizer.encode(h), x)
    quantizer = load_quantizer(folder)
    assert quantizer.format == "xcodec" and quantizer.n_q == expected.shape[0] == 4
    assert any("XcodecModel (config.json model_type 'xcodec')" in n for n in quantizer.notes)
    assert torch.equal(quantizer.encode(x), expected)
    # The safetensors file alone (no config.json beside it): the layout decides, and the note says so.
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "xcodec.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    guessed = load_quantizer(alone / "xcodec.safetensors")
    assert any("no config.json names the model" in n and "XcodecModel's layout" in n for n in guessed.notes)
    assert torch.equal(guessed.encode(x), expected)


@pytest.mark.parametrize("whole", [False, True])
def test_wavtokenizer_models(tmp_path, whole):
    """WavTokenizerEncoderModel's one VQ is `quantizer.codebook.*` (no layer number)."""
    sizes = dict(hidden_size=16, num_filters=4, codebook_size=64, codebook_dim=16, upsampling_ratios=[2, 2],
                 num_lstm_layers=1)
    if whole:
        model = transformers.WavTokenizerModel(transformers.WavTokenizerConfig(
            **sizes, decoder_hidden_size=16, decoder_intermediate_size=32, decoder_num_layers=1,
            decoder_attention_num_groups=4))
        rvq = model.encoder_model.quantizer
    else:
        model = transformers.WavTokenizerEncoderModel(transformers.WavTokenizerEncoderConfig(**sizes))
        rvq = model.quantizer
    randomise_codebooks(model, 5)
    folder = saved(model, tmp_path / "wavtokenizer")
    x = frames(16)
    quantizer = load_quantizer(folder)
    assert quantizer.format == "wavtokenizer" and quantizer.n_q == 1
    assert torch.equal(quantizer.encode(x), their_codes(lambda h: rvq.encode(h), x))


def higgs_modeling():
    """transformers' Higgs Audio v2 tokenizer modeling file, imported with an empty stand-in for the
    torchaudio it imports at its top (its quantizer never uses it); the stand-in is removed again."""
    name = "transformers.models.higgs_audio_v2_tokenizer.modeling_higgs_audio_v2_tokenizer"
    if name in sys.modules:
        return sys.modules[name]
    saved_module = sys.modules.get("torchaudio")
    sys.modules["torchaudio"] = types.ModuleType("torchaudio")
    try:
        return importlib.import_module(name)
    finally:
        if saved_module is None:
            sys.modules.pop("torchaudio", None)
        else:
            sys.modules["torchaudio"] = saved_module


def test_higgs_audio_v2_tokenizer_quantizer(tmp_path):
    """Per-layer project_in / project_out Linear layers around EnCodec's lookup."""
    module = higgs_modeling()
    config = transformers.HiggsAudioV2TokenizerConfig(
        codebook_size=64, codebook_dim=8, target_bandwidths=[24, 96],
        acoustic_model_config={"encoder_hidden_size": 4, "decoder_hidden_size": 8, "hidden_size": 16,
                               "downsampling_ratios": [2, 2], "upsampling_ratios": [2, 2]},
        semantic_model_config={"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                               "intermediate_size": 32})
    rvq = randomise_codebooks(module.HiggsAudioV2TokenizerResidualVectorQuantization(config), 6)
    g = torch.Generator().manual_seed(8)
    with torch.no_grad():
        for p in rvq.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    from safetensors.torch import save_file
    folder = tmp_path / "higgs"
    folder.mkdir()
    save_file({"quantizer." + k: v.contiguous() for k, v in rvq.state_dict().items()}, str(folder / "model.safetensors"))
    config.save_pretrained(folder)
    dim = int(rvq.quantizers[0].project_in.weight.shape[1])
    x = frames(dim)
    expected = their_codes(lambda h: rvq.encode(h), x)
    quantizer = load_quantizer(folder)
    assert quantizer.format == "xcodec" and quantizer.dim == dim and quantizer.n_q == expected.shape[0]
    assert any("HiggsAudioV2TokenizerModel" in n for n in quantizer.notes)
    assert torch.equal(quantizer.encode(x), expected)


@pytest.mark.parametrize("model_type", ["xcodec2", "neucodec"])
def test_fsq_codecs_load_with_their_own_codes(tmp_path, model_type):
    cls = {"xcodec2": ("Xcodec2Model", "Xcodec2Config"), "neucodec": ("NeuCodecModel", "NeuCodecConfig")}[model_type]
    config = getattr(transformers, cls[1])()
    quantizer_cls = getattr(importlib.import_module(f"transformers.models.{model_type}.modeling_{model_type}"),
                            cls[0].replace("Model", "Quantizer"))
    fsq = quantizer_cls(config)   # the model's own quantizer module: what a saved model holds of it
    from safetensors.torch import save_file
    save_file({"quantizer." + k: v.contiguous() for k, v in fsq.state_dict().items()}, str(tmp_path / "model.safetensors"))
    config.save_pretrained(tmp_path)
    quantizer = load_quantizer(tmp_path)
    assert quantizer.format == "xcodec2" and quantizer.cells == 4 ** 8
    x = frames(quantizer.dim)
    with torch.no_grad():
        _, indices = fsq(x.unsqueeze(0))
    assert torch.equal(quantizer.encode(x)[0], indices[0, :, 0].long())


def test_wav2vec2_gumbel_quantizer_is_refused_with_its_reason(tmp_path):
    config = transformers.Wav2Vec2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                         intermediate_size=32, conv_dim=[8, 8], conv_stride=[5, 2],
                                         conv_kernel=[10, 3], codevector_dim=8, proj_codevector_dim=8,
                                         num_codevectors_per_group=16)
    saved(transformers.Wav2Vec2ForPreTraining(config), tmp_path)
    with pytest.raises(NoQuantizerError, match="Gumbel quantizer"):
        load_quantizer(tmp_path)


def test_info_on_a_save_pretrained_folder(tmp_path, capsys):
    model = randomise_codebooks(transformers.XcodecModel(small("xcodec")), 9)
    folder = saved(model, tmp_path / "xcodec")
    assert main(["info", str(folder), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["format"] == "xcodec" and summary["n_q"] == 4


def test_a_base_model_is_refused_for_other_formats(tmp_path):
    model = randomise_codebooks(transformers.EncodecModel(small("encodec")), 10)
    folder = saved(model, tmp_path / "encodec")
    with pytest.raises(LoadError, match="only used for GPT-SoVITS LoRA exports; this checkpoint is encodec-hf"):
        load_quantizer(folder, base=folder / "model.safetensors")


def test_pocket_tts_audio_tokenizer_is_refused_with_its_reason(tmp_path):
    config = transformers.PocketTTSAudioTokenizerConfig(hidden_size=32, num_filters=4, upsampling_ratios=[2, 2],
                                                        num_hidden_layers=1, intermediate_size=32,
                                                        num_attention_heads=2, num_key_value_heads=2, head_dim=16,
                                                        upsample_groups=32, latent_dim=8)
    saved(transformers.PocketTTSAudioTokenizerModel(config), tmp_path)
    with pytest.raises(NoQuantizerError, match="Mimi without its residual quantizer's codebooks"):
        load_quantizer(tmp_path)
