"""The speech codecs that ship an FSQ: X-Codec2 / NeuCodec (HF transformers), CosyVoice 2's S3Tokenizer v2
and Stable Codec's posthoc residual FSQ. Their levels are known from their config or their code.

- X-Codec2 and NeuCodec (transformers 5 `Xcodec2Model` / `NeuCodecModel`, `save_pretrained`):
  `quantizer.project_in.{weight [d, quantization_dim], bias}` and `quantizer.project_out.*` inside the whole
  model, `config.json` beside it with `model_type` and `quantization_levels` (default eight 4s, 65,536
  cells). Their quantizer bounds the projected input once and then its FSQ bounds and rounds it again
  ("for consistency with the original checkpoint"): rule "tanh", pre "bound".
- S3Tokenizer v2 (xingchensong/S3Tokenizer `model_v2.py`, CosyVoice 2): `quantizer._codebook.project_down.
  {weight [8, 1280], bias}` and no up-projection; level = round(0.999 tanh(h)) + 1 on each of 8 dims,
  code = sum level_j 3^j (3^8 = 6,561 cells).
- Stable Codec (Stability-AI/stable-codec): the posthoc `ResidualFSQBottleneck` holds no weights at all; its
  presets, set at run time, are `1x46656_400bps` (levels 6^6), `2x15625_700bps` (5^6, scales 1, 0.25) and
  `4x729_1000bps` (3^6, scales 1, 0.5, 0.25, 0.125), applied to the 6-dim pre-bottleneck latents after
  one tanh, in float64 (stable-codec 0.1.2). Open any file of the model with `levels` set to a preset
  name (or `--format stable-codec` with levels and stages: each scale 1/(L-1) of the last); the features
  are those latents.
"""

from __future__ import annotations

import math

import torch

from ...errors import LoadError
from ...quant import FSQQuantizer, FSQRule, Quantizer
from .base import Checkpoint, Format, float_tensor
from .fsq import count_option, levels_option, parse_levels, projection

XCODEC2_TYPES = ("xcodec2", "neucodec")
XCODEC2_DEFAULT_LEVELS = [4] * 8
S3_KEY = "_codebook.project_down.weight"
STABLE_PRESETS = {
    "1x46656_400bps": ([6] * 6, [1.0]),
    "2x15625_700bps": ([5] * 6, [1.0, 0.25]),
    "4x729_1000bps": ([3] * 6, [1.0, 0.5, 0.25, 0.125]),
}


# --- X-Codec2 / NeuCodec -------------------------------------------------------------------------------
def _xcodec2_prefix(ckpt: Checkpoint) -> str | None:
    """The quantizer's prefix (`quantizer.`, or `model.quantizer.` in a training wrapper)."""
    for key in ckpt.state:
        if key.endswith("quantizer.project_in.weight") and not key.endswith("_codebook.project_in.weight"):
            prefix = key[: -len("project_in.weight")]
            stem = prefix[: -len("quantizer.")]
            if prefix + "project_out.weight" not in ckpt.state:
                continue
            model_type = str(ckpt.sidecar_config().get("model_type", "")).lower()
            if model_type in XCODEC2_TYPES or (stem + "fc_encoder.weight" in ckpt.state and any(
                    k.startswith(stem + "semantic_adapter.") for k in ckpt.state)):
                return prefix
    return None


def _detect_xcodec2(ckpt: Checkpoint) -> bool:
    return _xcodec2_prefix(ckpt) is not None


def _build_xcodec2(ckpt: Checkpoint) -> Quantizer:
    prefix = _xcodec2_prefix(ckpt)
    config = ckpt.sidecar_config()
    name = "NeuCodec" if str(config.get("model_type", "")).lower() == "neucodec" else "X-Codec2"
    notes = []
    levels = levels_option(ckpt)
    if levels is not None:
        notes.append(f"levels {levels} from the options")
    elif isinstance(config.get("quantization_levels"), list):
        levels = parse_levels(config["quantization_levels"], ckpt)
        notes.append(f"levels {levels} from config.json")
    else:
        levels = XCODEC2_DEFAULT_LEVELS
        notes.append(f"no config.json with quantization_levels beside the file: {name}'s default levels {levels} "
                     "assumed (give levels to override)")
    proj_in = projection(ckpt, prefix + "project_in.", len(levels))
    proj_out = projection(ckpt, prefix + "project_out.")
    if proj_in is None:
        raise LoadError(f"missing key {prefix + 'project_in.weight'!r}", ckpt.path)
    notes.insert(0, f"{name} FSQ at '{prefix}': {len(levels)} dims, one codebook of {math.prod(levels):,} cells")
    return FSQQuantizer(format="xcodec2", source=str(ckpt.path), input_dim=int(proj_in[0].shape[1]), notes=notes,
                        levels=levels, rule=FSQRule("tanh"), stage_scales=[None], projections=[proj_in],
                        out_projections=[proj_out], pre="bound")


# --- S3Tokenizer v2 --------------------------------------------------------------------------------------
def _s3_key(ckpt: Checkpoint) -> str | None:
    return next((k for k in sorted(ckpt.state) if k.endswith(S3_KEY)), None)


def _detect_s3(ckpt: Checkpoint) -> bool:
    return _s3_key(ckpt) is not None


def _build_s3(ckpt: Checkpoint) -> Quantizer:
    key = _s3_key(ckpt)
    weight = float_tensor(ckpt, key, (8, None), "S3Tokenizer project_down.weight")
    bias = float_tensor(ckpt, key[: -len("weight")] + "bias", (8,), required=False)
    given = levels_option(ckpt)
    if given is not None and given != [3] * 8:
        raise LoadError(f"S3Tokenizer v2 quantizes 8 dims to 3 levels each; levels {given} do not apply", ckpt.path)
    notes = [f"S3Tokenizer v2 FSQ at '{key[: -len('project_down.weight')]}': 8 dims x 3 levels (6,561 cells); "
             "no up-projection is published, so the map shows the grid itself"]
    return FSQQuantizer(format="s3tokenizer", source=str(ckpt.path), input_dim=int(weight.shape[1]), notes=notes,
                        levels=[3] * 8, rule=FSQRule("scaled_tanh"), stage_scales=[None], projections=[(weight, bias)])


# --- Stable Codec -----------------------------------------------------------------------------------------
def _preset(ckpt: Checkpoint) -> str | None:
    value = ckpt.options.get("levels")
    return value if isinstance(value, str) and value in STABLE_PRESETS else None


def _detect_stable(ckpt: Checkpoint) -> bool:
    return _preset(ckpt) is not None


def _build_stable(ckpt: Checkpoint) -> Quantizer:
    preset = _preset(ckpt)
    if preset is not None:
        levels, scales = STABLE_PRESETS[preset]
        if ckpt.options.get("stages") not in (None, len(scales)):
            raise LoadError(f"the {preset} preset has {len(scales)} stages, not {ckpt.options['stages']}", ckpt.path)
        origin = f"preset {preset}"
    else:
        levels = levels_option(ckpt)
        if levels is None:
            raise LoadError("Stable Codec's posthoc FSQ holds no weights: give a preset as levels "
                            f"({', '.join(STABLE_PRESETS)}) or levels and --stages", ckpt.path)
        # As the presets: each stage's scale is half the previous stage's step, 1 / (L - 1) of its scale.
        scales = [(1.0 / (levels[0] - 1)) ** i for i in range(count_option(ckpt, "stages") or 1)]
        origin = f"levels {levels}, {len(scales)} stage(s) with scales {scales}"
    notes = [f"Stable Codec posthoc residual FSQ ({origin}): no weights in the file; features are the "
             f"{len(levels)}-dim pre-bottleneck latents (tanh, then each stage rounds (r + s) / (2s / (L - 1)))"]
    return FSQQuantizer(format="stable-codec", source=str(ckpt.path), input_dim=len(levels), notes=notes,
                        levels=levels, rule=FSQRule("dithered"), stage_scales=[float(s) for s in scales],
                        projections=[None], pre="tanh", divide=False, dtype=torch.float64)


XCODEC2 = Format("xcodec2", "HF transformers X-Codec2 / NeuCodec FSQ (quantizer.project_in/out, levels from "
                 "config.json)", _detect_xcodec2, _build_xcodec2)
S3TOKENIZER = Format("s3tokenizer", "CosyVoice 2 S3Tokenizer v2 FSQ (_codebook.project_down, 3^8 cells)",
                     _detect_s3, _build_s3)
STABLE_CODEC = Format("stable-codec", "Stable Codec posthoc residual FSQ (a preset such as 2x15625_700bps as levels)",
                      _detect_stable, _build_stable)
