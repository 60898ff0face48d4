"""The what-if trainer's worker job: frames through the pipeline, then the trainer's steps."""

from __future__ import annotations

import threading
from typing import Iterator

import torch

from ..pipeline import AuditSpec, sample_frames
from ..quant import Quantizer
from ..training import (BATCH_INTERVAL, MAX_TRAIN_FRAMES, StepBatch, TrainControl, TrainingFrames, TrainSettings,
                        TrainStatus, train_steps)


def train_job(cancel: threading.Event, control: TrainControl, settings: TrainSettings,
              frames: TrainingFrames | None = None, spec: AuditSpec | None = None, quantizer: Quantizer | None = None,
              max_frames: int = MAX_TRAIN_FRAMES, init_codebooks: list[torch.Tensor] | None = None,
              interval: float = BATCH_INTERVAL) -> Iterator[StepBatch | TrainStatus]:
    """Read frames (unless given: a sample of the spec's features, through the quantizer's input
    transform), then train `settings.steps` steps (see `training.train_steps`)."""
    if frames is None:
        yield TrainStatus("reading", text="reading feature frames…")
        frames = sample_frames(spec, quantizer, max_frames, seed=settings.seed, should_stop=cancel.is_set)
    if cancel.is_set():
        return
    yield from train_steps(cancel, control, settings, frames, init_codebooks, interval)
