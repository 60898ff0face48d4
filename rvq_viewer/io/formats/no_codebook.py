"""Known models whose files hold no codebook to audit, named with their reason instead of the generic
"no quantizer recognised": codecs whose quantizer is a fixed grid (FSQ), transformers codecs saved
without their codebooks, wav2vec2's Gumbel quantizer, GPT-SoVITS weights without their quantizer."""

from __future__ import annotations

from .base import Checkpoint

# transformers model types (config.json `model_type`) with a quantizer but no stored codebook.
NO_CODEBOOK_MODELS = {
    "xcodec2": "X-codec2 uses finite scalar quantization (FSQ): its codes are points of a fixed grid, "
               "not rows of a learned codebook",
    "neucodec": "NeuCodec uses finite scalar quantization (FSQ): its codes are points of a fixed grid, "
                "not rows of a learned codebook",
    "pocket_tts_audio_tokenizer": "the Pocket TTS audio tokenizer is Mimi without its residual quantizer's "
                                  "codebooks",
}


def no_codebook_reason(ckpt: Checkpoint) -> str | None:
    """Why this file, of a family we know, has no codebook to audit; None when we cannot tell."""
    model = ckpt.model_type()
    if model is not None:
        for name, reason in NO_CODEBOOK_MODELS.items():
            if model == name or model.startswith(name + "_"):
                return f"{reason} (config.json model_type '{model}'): no codebook to audit"
    if any(key.endswith("quantizer.codevectors") for key in ckpt.state):
        return ("a wav2vec2-style Gumbel quantizer (quantizer.codevectors): codes are picked by a learned "
                "projection from groups of codevectors, not by the nearest row of a residual codebook; "
                "not a quantizer rvq-viewer audits")
    if "ssl_proj.weight" in ckpt.state:
        return ("GPT-SoVITS weights without their quantizer (quantizer.vq.layers.0._codebook.embed is missing): "
                "nothing to audit")
    return None
