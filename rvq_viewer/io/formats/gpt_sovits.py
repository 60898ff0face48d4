"""GPT-SoVITS s2G (SoVITS) weights and training checkpoints.

HuBERT features [T, 768] at 50 Hz go through `ssl_proj` (Conv1d 768->768, kernel 2 stride 2 for the
25 Hz models, kernel 1 for 50 Hz) before the one-layer EnCodec-rule quantizer, as the model's
`extract_latent` does. Exported weights store every tensor in fp16: everything is upcast to fp32.
"""

from __future__ import annotations

import torch

from ...quant import Quantizer
from ...errors import LoadError
from .base import Checkpoint, Format, float_tensor
from .encodec import build_encodec_rvq, find_rvq_prefixes

PREFIX = "quantizer.vq."


class SslProjection(torch.nn.Module):
    """GPT-SoVITS's ssl_proj applied to one sequence of frames [T, D] -> [T', D]."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.weight = torch.nn.Parameter(weight.float(), requires_grad=False)
        self.bias = None if bias is None else torch.nn.Parameter(bias.float(), requires_grad=False)
        self.stride = int(weight.shape[-1])  # kernel == stride in both GPT-SoVITS variants

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        if frames.shape[0] < self.stride:   # a lone trailing frame: the conv drops it, as in the model
            return frames.new_zeros((0, self.weight.shape[0]))
        out = torch.nn.functional.conv1d(frames.t().unsqueeze(0), self.weight, self.bias, stride=self.stride)
        return out.squeeze(0).t()


def _detect(ckpt: Checkpoint) -> bool:
    return "ssl_proj.weight" in ckpt.state and PREFIX in find_rvq_prefixes(ckpt.state)


def _build(ckpt: Checkpoint) -> Quantizer:
    weight = float_tensor(ckpt, "ssl_proj.weight", (None, None, None))
    if weight.shape[0] != weight.shape[1] or weight.shape[-1] not in (1, 2):
        raise LoadError(f"ssl_proj.weight has shape {list(weight.shape)}, expected [D, D, 1 or 2]", ckpt.path)
    bias = float_tensor(ckpt, "ssl_proj.bias", (int(weight.shape[0]),), required=False)
    rate = "25 Hz" if weight.shape[-1] == 2 else "50 Hz"
    notes = [f"semantic frame rate {rate}"]
    if isinstance(ckpt.meta.get("info"), str):
        notes.append(f"trained: {ckpt.meta['info'][:80]}")
    if ckpt.state["ssl_proj.weight"].dtype == torch.float16:
        notes.append("exported weights are fp16: upcast to fp32 before the lookup")
    if ckpt.options.get("skip_transform"):
        notes.append("ssl_proj skipped: features are taken as already projected")
        return build_encodec_rvq(ckpt, PREFIX, "gpt-sovits", notes=notes)
    projection = SslProjection(weight, bias)
    quantizer = build_encodec_rvq(ckpt, PREFIX, "gpt-sovits", notes=notes, transform=projection,
                                  frame_stride=projection.stride, input_dim=int(weight.shape[1]))
    if quantizer.codebooks[0].shape[1] != weight.shape[0]:
        raise LoadError(f"ssl_proj gives {weight.shape[0]}-dim frames but the codebook is "
                        f"{quantizer.codebooks[0].shape[1]}-dim", ckpt.path)
    return quantizer


GPT_SOVITS = Format("gpt-sovits", "GPT-SoVITS s2G weights or G_*.pth (ssl_proj, then a 1-layer RVQ)",
                    _detect, _build)
