"""GPT-SoVITS s2G (SoVITS) weights and training checkpoints.

HuBERT features [T, 768] at 50 Hz go through `ssl_proj` (Conv1d 768->768, kernel 2 stride 2 for the
25 Hz models, kernel 1 for 50 Hz) before the one-layer EnCodec-rule quantizer, as the model's
`extract_latent` does. Exported weights store every tensor in fp16: everything is upcast to fp32.

v3/v4 LoRA exports (`s2_train_v3_lora.py`: header bytes `03`/`04`, a `lora_rank` entry) keep only the
trained parameters and the buffers: the quantizer's codebook is there, the frozen `ssl_proj` is not.
GPT-SoVITS's own inference loads the base model (s2Gv3.pth / s2Gv4.pth) and the LoRA file over it; so
does the `base` option here. Without a base, only features already through ssl_proj can be encoded.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from ...quant import Quantizer
from ...errors import LoadError
from ..containers import SOVITS_MAGICS, read_container
from .base import Checkpoint, Format, find_config_value, float_tensor, unwrap
from .encodec import build_encodec_rvq, find_rvq_prefixes

PREFIX = "quantizer.vq."
HEADER_VERSIONS = {b"03": "v3 LoRA", b"04": "v4 LoRA", b"05": "v2Pro", b"06": "v2ProPlus"}
TRAINING_INFO = re.compile(r"^\d+epoch_\d+iteration$")   # process_ckpt.savee's `info`
# Modules of SynthesizerTrn / SynthesizerTrnV3 beside the quantizer (text encoder, reference encoder,
# v3/v4's flow-matching decoder): keys no other EnCodec-layout project has at the top level.
MODULE_PREFIXES = ("enc_p.", "ref_enc.", "cfm.", "ssl_proj.")


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


def gpt_sovits_marks(ckpt: Checkpoint) -> list[str]:
    """What says a file is GPT-SoVITS's, beyond an EnCodec-layout quantizer at `quantizer.vq.`."""
    marks = []
    if ckpt.header[:2] in SOVITS_MAGICS:
        marks.append(f"header bytes {ckpt.header[:2].decode()}")
    if "lora_rank" in ckpt.meta:
        marks.append("a lora_rank entry")
    if isinstance(ckpt.meta.get("info"), str) and TRAINING_INFO.match(ckpt.meta["info"]):
        marks.append("its info string")
    if find_config_value(ckpt.meta.get("config"), ("semantic_frame_rate",)) is not None:
        marks.append("its config's semantic_frame_rate")
    if any(key.startswith(MODULE_PREFIXES) for key in ckpt.state):
        marks.append("SynthesizerTrn's modules")
    return marks


def _detect(ckpt: Checkpoint) -> bool:
    return PREFIX in find_rvq_prefixes(ckpt.state) and ("ssl_proj.weight" in ckpt.state or bool(gpt_sovits_marks(ckpt)))


def _version(ckpt: Checkpoint) -> str | None:
    if ckpt.header[:2] in HEADER_VERSIONS:
        return HEADER_VERSIONS[ckpt.header[:2]]
    version = find_config_value(ckpt.meta.get("config"), ("version",))
    return str(version)[:20] if version is not None else None


def _projection_source(ckpt: Checkpoint, notes: list[str]) -> Checkpoint | None:
    """The checkpoint whose ssl_proj to use: this file's, the base model's, or None (none needed)."""
    base = ckpt.options.get("base")
    if "ssl_proj.weight" in ckpt.state:
        if base is not None:
            notes.append(f"base {Path(base).name} not used: this file has its own ssl_proj "
                         "(GPT-SoVITS loads the file over the base)")
        return ckpt
    version = _version(ckpt)
    what = f"GPT-SoVITS {version or ''} export".replace("  ", " ")
    if "lora_rank" in ckpt.meta:
        what += f" (LoRA rank {ckpt.meta['lora_rank']})"
    if base is not None:
        base_ckpt = _read_base(Path(base))
        notes.append(f"{what}: ssl_proj from the base model {Path(base).name}, the codebook from this file "
                     "(GPT-SoVITS loads the base, then the LoRA file over it)")
        return base_ckpt
    if ckpt.options.get("skip_transform"):
        rate = find_config_value(ckpt.meta.get("config"), ("semantic_frame_rate",))
        notes.append(f"{what}: no ssl_proj in the file and no base model named; features are taken as "
                     "already through ssl_proj" + (f" ({rate} per its config)" if isinstance(rate, str) else ""))
        return None
    example = "s2Gv4.pth" if version == "v4 LoRA" else "s2Gv3.pth"
    dim = int(ckpt.state[PREFIX + "layers.0._codebook.embed"].shape[-1])
    raise LoadError(f"{what} holds no ssl_proj (a LoRA export keeps only trained weights), so raw {dim}-dim "
                    f"HuBERT frames cannot be projected: name the base model (--base {example}), or pass "
                    "--skip-transform for features already through ssl_proj", ckpt.path)


def _read_base(path: Path) -> Checkpoint:
    base = unwrap(read_container(path), path)
    if "ssl_proj.weight" not in base.state:
        raise LoadError("not a GPT-SoVITS base model: it has no ssl_proj.weight", path)
    return base


def _build(ckpt: Checkpoint) -> Quantizer:
    notes: list[str] = []
    source = _projection_source(ckpt, notes)
    if isinstance(ckpt.meta.get("info"), str):
        notes.append(f"trained: {ckpt.meta['info'][:80]}")
    if ckpt.state[PREFIX + "layers.0._codebook.embed"].dtype == torch.float16:
        notes.append("exported weights are fp16: upcast to fp32 before the lookup")
    if source is None:
        return build_encodec_rvq(ckpt, PREFIX, "gpt-sovits", notes=notes)
    weight = float_tensor(source, "ssl_proj.weight", (None, None, None))
    if weight.shape[0] != weight.shape[1] or weight.shape[-1] not in (1, 2):
        raise LoadError(f"ssl_proj.weight has shape {list(weight.shape)}, expected [D, D, 1 or 2]", source.path)
    bias = float_tensor(source, "ssl_proj.bias", (int(weight.shape[0]),), required=False)
    notes.insert(0, f"semantic frame rate {'25 Hz' if weight.shape[-1] == 2 else '50 Hz'}")
    if ckpt.options.get("skip_transform"):
        notes.append("ssl_proj skipped: features are taken as already projected")
        return build_encodec_rvq(ckpt, PREFIX, "gpt-sovits", notes=notes)
    projection = SslProjection(weight, bias)
    quantizer = build_encodec_rvq(ckpt, PREFIX, "gpt-sovits", notes=notes, transform=projection,
                                  frame_stride=projection.stride, input_dim=int(weight.shape[1]))
    if quantizer.codebooks[0].shape[1] != weight.shape[0]:
        raise LoadError(f"ssl_proj gives {weight.shape[0]}-dim frames but the codebook is "
                        f"{quantizer.codebooks[0].shape[1]}-dim", source.path)
    return quantizer


GPT_SOVITS = Format("gpt-sovits", "GPT-SoVITS s2G weights, v3/v4 LoRA exports or G_*.pth (ssl_proj, then a "
                    "1-layer RVQ)", _detect, _build)
