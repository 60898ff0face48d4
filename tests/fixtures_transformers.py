"""Small transformers codec models for the format tests: configs that build in a blink, random
codebooks (fresh models hold zero codebooks), and the model's own quantizer run on frames."""

from __future__ import annotations

import torch

from fixtures_formats import require

transformers = require("transformers")


def small(name: str):
    """A small config of one transformers codec (the defaults would build 100M-parameter models)."""
    configs = {
        "encodec": lambda: transformers.EncodecConfig(hidden_size=16, num_filters=4, codebook_size=64,
                                                      upsampling_ratios=[2, 2], num_lstm_layers=1,
                                                      target_bandwidths=[60.0, 240.0]),
        "dac": lambda: transformers.DacConfig(encoder_hidden_size=4, decoder_hidden_size=8, hidden_size=32,
                                              n_codebooks=4, codebook_size=64, codebook_dim=8,
                                              downsampling_ratios=[2, 2], upsampling_ratios=[2, 2]),
        "mimi": lambda: transformers.MimiConfig(hidden_size=32, num_filters=4, codebook_size=64, codebook_dim=16,
                                                num_quantizers=6, upsampling_ratios=[2, 2], num_hidden_layers=1,
                                                num_attention_heads=2, num_key_value_heads=2, intermediate_size=32,
                                                head_dim=16, upsample_groups=32,
                                                vector_quantization_hidden_dimension=16),
        "xcodec": lambda: transformers.XcodecConfig(
            codebook_size=64, target_bandwidths=[24, 96],
            acoustic_model_config={"encoder_hidden_size": 4, "decoder_hidden_size": 8, "hidden_size": 16,
                                   "downsampling_ratios": [2, 2], "upsampling_ratios": [2, 2]},
            semantic_model_config={"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                                   "intermediate_size": 32, "conv_dim": [8, 8], "conv_stride": [5, 2],
                                   "conv_kernel": [10, 3]}),
    }
    return configs[name]()


def randomise_codebooks(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Fresh models hold zero (Xcodec, EnCodec) or tiny codebooks: give every EMA codebook random rows
    and mark it initialised, and every nn.Embedding codebook (DAC) random rows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith(("codebook.embed", "codebook.embed_avg")):
                buf.copy_(torch.randn(buf.shape, generator=g))
            elif name.endswith(("codebook.cluster_size", "codebook.cluster_usage")):
                buf.copy_(torch.rand(buf.shape, generator=g) * 5 + 0.1)
            elif name.endswith("codebook.embed_sum"):
                buf.copy_(torch.randn(buf.shape, generator=g) * 3)
            elif name.endswith(("codebook.inited", "codebook.initialized")):
                buf.fill_(1.0)
        for name, param in model.named_parameters():
            if name.endswith("codebook.weight"):
                param.copy_(torch.randn(param.shape, generator=g))
    return model.eval()


def frames(dim: int, n: int = 150, seed: int = 7) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed)) * 2


def their_codes(encode, x: torch.Tensor) -> torch.Tensor:
    """The model's own quantizer on frames [T, D] given as its [1, D, T] hidden states: [n_q, T]."""
    with torch.no_grad():
        codes = encode(x.t().unsqueeze(0))
    return codes[:, 0] if codes.ndim == 3 else codes
