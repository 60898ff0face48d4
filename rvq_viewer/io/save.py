"""Saving quantizers in the EnCodec / GPT-SoVITS layout, atomically."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .outputs import atomic_path

# Keys of the saved state: what EnCodec's `ResidualVectorQuantizer` holds under a model's `quantizer.`.
QUANTIZER_PREFIX = "quantizer.vq."


def save_checkpoint(path: str | Path, rvq: nn.Module, step: int | None = None,
                    config: dict | None = None) -> None:
    """Save a `ResidualVectorQuantization` as `{"state_dict": {"quantizer.vq.layers.{i}._codebook.*"},
    "step": int, "config": dict}`: the keys EnCodec and GPT-SoVITS use, loadable with weights_only."""
    state = {QUANTIZER_PREFIX + k: v.detach().cpu().clone() for k, v in rvq.state_dict().items()}
    package = {"state_dict": state}
    if step is not None:
        package["step"] = int(step)
    if config is not None:
        package["config"] = dict(config)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        # Through a file object: torch.save(path) would store the random temporary name in the archive,
        # so the same state would give different bytes on every save.
        torch.save(package, fh)
