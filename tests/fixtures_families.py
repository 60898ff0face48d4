"""Builders for the implicit and reparameterised families: the peers' own modules, saved the way their users
save them (the whole model's `state_dict()`, the quantizer under a prefix such as `quantizer.`).

Peers (installed --no-deps by scripts/bootstrap.sh test): vector-quantize-pytorch (FSQ, ResidualFSQ,
GroupedResidualFSQ, LFQ, ResidualLFQ, GroupedResidualLFQ, SimVQ, ResidualSimVQ, VectorQuantize heads,
GroupedResidualVQ), stable-codec (its posthoc `ResidualFSQBottleneck`, files run by path: the package
`__init__` imports stable-audio-tools and torchaudio), s3tokenizer (`model_v2.py`, run by path with a
stand-in for its audio `utils`, which import onnx and torchaudio), transformers (X-Codec2).
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import torch
from torch import nn

from fixtures_formats import load_by_path, require


class Model(nn.Module):
    """A user's model: an encoder, the quantizer under `quantizer.`, a decoder."""

    def __init__(self, quantizer: nn.Module, dim: int):
        super().__init__()
        self.encoder = nn.Linear(12, dim)
        self.quantizer = quantizer
        self.decoder = nn.Linear(dim, 12)


def save_in_model(quantizer: nn.Module, dim: int, path: Path, wrap: str | None = None, extra: dict | None = None) -> Path:
    """torch.save(model.state_dict()) of a `Model` holding `quantizer` (inside {wrap: state, **extra} if asked)."""
    state = Model(quantizer, dim).state_dict()
    torch.save(state if wrap is None else {wrap: state, **(extra or {})}, path)
    return path


def module_indices(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The module's own eval-mode indices for one sequence x [T, dim] (its second output)."""
    module.eval()
    with torch.no_grad():
        return module(x.unsqueeze(0))[1]


def stable_codec_bottleneck():
    """stable-codec 0.1.2's `ResidualFSQBottleneck` (residual_fsq.py + fsq.py, by path)."""
    return load_by_path("stable_codec", "_stable_codec", [], ["fsq", "residual_fsq"]).ResidualFSQBottleneck


def s3tokenizer_v2():
    """s3tokenizer 0.3.0's `model_v2` module. It imports `s3tokenizer.model` and `s3tokenizer.utils` by
    absolute name; `utils` (audio loading: onnx, torchaudio) is replaced by a stand-in whose functions
    raise, since only the quantizer runs here."""
    if "s3tokenizer.model_v2" in sys.modules:
        return sys.modules["s3tokenizer.model_v2"]
    spec = importlib.util.find_spec("s3tokenizer")
    if spec is None or not spec.submodule_search_locations:
        require("s3tokenizer")     # fails with the install line
    root = Path(list(spec.submodule_search_locations)[0])
    package = types.ModuleType("s3tokenizer")
    package.__path__ = [str(root)]
    sys.modules["s3tokenizer"] = package
    utils = types.ModuleType("s3tokenizer.utils")

    def unused(*args, **kwargs):
        raise NotImplementedError("stand-in for s3tokenizer.utils: audio helpers are not needed")

    for name in ("make_non_pad_mask", "mask_to_bias", "onnx2torch", "merge_tokenized_segments", "load_audio",
                 "log_mel_spectrogram", "padding"):
        setattr(utils, name, unused)
    sys.modules["s3tokenizer.utils"] = utils
    for name in ("model", "model_v2"):
        mspec = importlib.util.spec_from_file_location(f"s3tokenizer.{name}", root / f"{name}.py")
        module = importlib.util.module_from_spec(mspec)
        sys.modules[f"s3tokenizer.{name}"] = module
        mspec.loader.exec_module(module)
    return sys.modules["s3tokenizer.model_v2"]


def s3tokenizer_model(state_dim: int = 64):
    v2 = s3tokenizer_v2()
    config = sys.modules["s3tokenizer.model"].ModelConfig(n_mels=16, n_audio_state=state_dim, n_audio_head=4,
                                                          n_audio_layer=1)
    return v2.S3TokenizerV2("speech_tokenizer_v2_25hz", config).eval()


def xcodec2_model(quantization_dim: int = 48, levels=(4, 4, 4, 4, 4, 4, 4, 4)):
    """A small transformers `Xcodec2Model` (random weights), as `save_pretrained` writes it."""
    transformers = require("transformers")
    semantic = transformers.Wav2Vec2BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                               intermediate_size=32, output_hidden_size=16,
                                               feature_projection_input_dim=16, conformer_conv_dw_kernel_size=3,
                                               num_adapter_layers=1)
    config = transformers.Xcodec2Config(hidden_size=32, intermediate_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, num_key_value_heads=2, head_dim=16,
                                        encoder_hidden_size=4, downsampling_ratios=[2, 2],
                                        quantization_dim=quantization_dim, quantization_levels=list(levels),
                                        semantic_model_config=semantic.to_dict())
    return transformers.Xcodec2Model(config).eval()


def implicit_family_files(root: Path, seed: int = 0) -> dict[str, tuple[Path, str, dict]]:
    """name -> (file, format detected, load options it needs) for the families of this issue, built with
    the peers' modules (vector-quantize-pytorch only, so that the table stays quick)."""
    vqp = require("vector_quantize_pytorch")
    torch.manual_seed(seed)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    out: dict[str, tuple[Path, str, dict]] = {}

    def put(name, fmt, module, dim, options=None, **save):
        out[name] = (save_in_model(module, dim, root / f"{name}.pt", **save), fmt, options or {})

    put("fsq", "fsq", vqp.FSQ(levels=[8, 5, 5, 5], dim=32), 32, {"levels": [8, 5, 5, 5]})
    put("residual_fsq", "fsq", vqp.ResidualFSQ(levels=[8, 5, 5, 5], num_quantizers=3, dim=32), 32,
        {"levels": [8, 5, 5, 5], "stages": 3})
    put("grouped_fsq", "fsq", vqp.GroupedResidualFSQ(levels=[5, 5, 5], num_quantizers=2, dim=32, groups=2), 32,
        {"levels": [5, 5, 5], "stages": 2})
    put("fsq_config", "fsq", vqp.FSQ(levels=[7, 5, 5, 5, 5], dim=24), 24, {}, wrap="model",
        extra={"config": {"levels": [7, 5, 5, 5, 5]}})
    put("lfq", "lfq", vqp.LFQ(dim=32, codebook_size=2 ** 10), 32)
    put("residual_lfq", "lfq", vqp.ResidualLFQ(dim=32, codebook_size=2 ** 8, num_quantizers=3), 32)
    put("grouped_lfq", "lfq", vqp.GroupedResidualLFQ(dim=32, codebook_size=2 ** 6, num_quantizers=2, groups=2), 32)
    put("simvq", "simvq", vqp.SimVQ(dim=32, codebook_size=128), 32)
    put("residual_simvq", "simvq", vqp.ResidualSimVQ(dim=32, codebook_size=64, num_quantizers=3), 32)
    put("vq_heads", "vector-quantize-pytorch",
        vqp.VectorQuantize(dim=32, codebook_size=64, codebook_dim=8, heads=4, separate_codebook_per_head=True), 32)
    put("grouped_rvq", "vector-quantize-pytorch",
        vqp.GroupedResidualVQ(dim=32, num_quantizers=2, groups=2, codebook_size=64), 32)
    return out
