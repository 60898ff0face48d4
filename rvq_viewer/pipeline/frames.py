"""Frames for the what-if trainer, read through the same feature source as every audit."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..errors import CancelledError, LoadError
from ..quant import Quantizer
from ..training import MAX_TRAIN_FRAMES, TrainingFrames
from .audit import open_features
from .spec import AuditSpec


def frames_key(spec: AuditSpec, max_frames: int, transformed: bool) -> tuple:
    """What a sample was read from, so the next run on the same files reuses it."""
    return (tuple(str(p) for p in spec.features), spec.layout, spec.key, int(max_frames), bool(transformed))


def sample_frames(spec: AuditSpec, quantizer: Quantizer, max_frames: int = MAX_TRAIN_FRAMES, seed: int = 0,
                  should_stop: Callable[[], bool] | None = None,
                  progress: Callable[[int, int], None] | None = None) -> TrainingFrames:
    """At most `max_frames` frames of the spec's features, drawn uniformly at random while they stream.

    Each chunk keeps each frame with probability max_frames / total, so memory stays near the cap. Where
    the quantizer's input goes through a transform (GPT-SoVITS's ssl_proj, a project_in) the frames are
    taken after it, in the space its codebooks live in."""
    source = open_features(spec, quantizer)
    total_in = source.total_frames()
    if total_in == 0:
        raise LoadError("the feature files hold no frames", spec.features[0] if spec.features else None)
    stride = max(1, quantizer.frame_stride)
    keep_p = min(1.0, max_frames / max(1, total_in // stride))
    rng = np.random.default_rng(seed)
    kept: list[torch.Tensor] = []
    seen = done = 0
    transform = quantizer.transform is not None
    for chunk in source:
        if should_stop is not None and should_stop():
            raise CancelledError("cancelled")
        frames = chunk.frames
        done += len(frames)
        if transform:
            frames = quantizer.prepare(frames).cpu()
        frames = frames.float()
        seen += len(frames)
        if keep_p < 1.0:
            frames = frames[torch.from_numpy(rng.random(len(frames)) < keep_p)]
        if len(frames):
            kept.append(frames.contiguous())
        if progress is not None:
            progress(done, total_in)
    if not kept:
        raise LoadError("no frames left to train on", spec.features[0])
    out = torch.cat(kept)
    if len(out) > max_frames:
        out = out[torch.from_numpy(np.sort(rng.choice(len(out), max_frames, replace=False)))]
    files = len(source.files)
    note = f"{len(out):,} frames of {seen:,} in {files} file{'s' if files != 1 else ''}"
    note += " (all)" if len(out) == seen else f" (random {len(out) / max(seen, 1):.0%})"
    if transform:
        note += ", after the checkpoint's input transform"
    note += f", dim {out.shape[1]}"
    return TrainingFrames(out, seen, note, frames_key(spec, max_frames, transform))
