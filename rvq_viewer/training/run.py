"""The what-if trainer run step by step for a GUI worker: its state, its control and its numbers.

- `train_steps`: a generator that trains `settings.steps` steps over frames already read, yields
  `StepBatch`es (compact per-step numbers and dead-code events as arrays) at most every ~50 ms, and
  obeys a `TrainControl` (pause / resume / stop, and a lock that makes saving safe while it runs);
- `evaluate_codebooks`: what the codebooks reached on the training frames at the end.
Frames are read by the pipeline (`rvq_viewer.pipeline.sample_frames`), which owns every feature read.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..errors import CancelledError
from ..quant import nearest_codes
from .trainer import StepStats, Trainer, TrainSettings

MAX_TRAIN_FRAMES = 200_000
EVAL_FRAMES = 50_000              # frames the end-of-run evaluation encodes
BATCH_INTERVAL = 0.05             # s between StepBatches yielded by `train_steps`


@dataclass
class TrainingFrames:
    frames: torch.Tensor   # [N, D] float32, on the CPU
    total: int             # frames in the files (after the checkpoint's transform)
    note: str              # one line for the user: what was read and how it was sampled
    key: tuple = ()        # what they were read from, to reuse them for the next run


def frames_key(paths, dim: int, max_frames: int, transformed: bool) -> tuple:
    return (tuple(str(p) for p in paths), int(dim), int(max_frames), bool(transformed))


def loaded_codebooks_reason(quantizer) -> str:
    """Why the trainer cannot start from this quantizer's codebooks ('' when it can)."""
    if quantizer is None:
        return "no checkpoint open"
    sizes = set(quantizer.codebook_sizes)
    if len(sizes) != 1:
        return "its layers have different codebook sizes"
    if not quantizer.plain_residual or quantizer.codes_per_frame != 1 or any(s != 1 for s in quantizer.layer_strides):
        return f"{quantizer.format} codebooks are not plain Euclidean EMA codebooks"
    return ""


def loaded_codebooks(quantizer) -> list[torch.Tensor]:
    return [c.detach().cpu().float().clone() for c in quantizer.codebooks]


@dataclass
class StepBatch:
    """Several steps' numbers, compact: [n] / [n, L] arrays and the dead-code events as columns."""

    steps: np.ndarray          # int64 [n]
    used: np.ndarray           # int32 [n, L]
    perplexity: np.ndarray     # float32 [n, L]
    dead: np.ndarray           # int32 [n, L]
    events: np.ndarray         # int32 [n, L]: replacements per step and layer
    residual_mse: np.ndarray   # float32 [n]
    event_steps: np.ndarray    # int64 [m]
    event_layers: np.ndarray   # int32 [m]
    event_codes: np.ndarray    # int64 [m]
    elapsed: float = 0.0       # s since the run's first step

    def __len__(self) -> int:
        return int(self.steps.size)

    @classmethod
    def from_stats(cls, stats: list[StepStats], n_q: int, elapsed: float = 0.0) -> "StepBatch":
        n = len(stats)
        events = [e for s in stats for e in s.events]
        ev_layers = np.fromiter((e.layer for e in events), np.int32, len(events))
        ev_steps_raw = np.fromiter((e.step for e in events), np.int64, len(events))
        per_step = np.zeros((n, n_q), dtype=np.int32)
        offset = 0
        for i, s in enumerate(stats):
            m = len(s.events)
            if m:
                per_step[i] = np.bincount(ev_layers[offset:offset + m], minlength=n_q)[:n_q]
            offset += m
        return cls(steps=np.array([s.step for s in stats], dtype=np.int64),
                   used=np.array([s.used for s in stats], dtype=np.int32).reshape(n, n_q),
                   perplexity=np.array([s.perplexity for s in stats], dtype=np.float32).reshape(n, n_q),
                   dead=np.array([s.dead for s in stats], dtype=np.int32).reshape(n, n_q),
                   events=per_step, residual_mse=np.array([s.residual_mse for s in stats], dtype=np.float32),
                   event_steps=ev_steps_raw, event_layers=ev_layers,
                   event_codes=np.fromiter((e.code for e in events), np.int64, len(events)), elapsed=elapsed)


@dataclass
class TrainStatus:
    """A change of state the GUI shows: 'reading', 'initialising', 'running', 'paused', 'stopped',
    'finished'; `frames` comes with 'running' the first time (for reuse by the next run)."""

    state: str
    step: int = 0
    text: str = ""
    frames: TrainingFrames | None = None
    done: int = 0
    total: int = 0
    evaluation: "Evaluation | None" = None


@dataclass
class Evaluation:
    """What the codebooks give on (up to EVAL_FRAMES of) the training frames, in eval mode."""

    frames: int
    used: list[int]
    utilization: list[float]
    perplexity: list[float]
    residual_mse: float


class TrainControl:
    """Shared between the GUI and the training worker: pause/stop requests and the trainer's lock.

    The worker holds `lock` during each step; anything else touching the trainer (saving) takes it too.
    """

    def __init__(self):
        self.pause = threading.Event()
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.trainer: Trainer | None = None

    def save(self, path: str | Path) -> int:
        """Save the trainer's current state (waits for the step in progress); returns the step saved."""
        if self.trainer is None:
            raise ValueError("no trainer yet: nothing to save")
        with self.lock:
            self.trainer.save(path)
            return self.trainer.step_count


@torch.no_grad()
def evaluate_codebooks(codebooks: list[torch.Tensor], frames: torch.Tensor, max_frames: int = EVAL_FRAMES,
                       seed: int = 0) -> Evaluation:
    """Greedy residual encoding of (a sample of) `frames` with `codebooks`: use and perplexity per layer."""
    if len(frames) > max_frames:
        g = torch.Generator().manual_seed(seed)
        frames = frames[torch.randperm(len(frames), generator=g)[:max_frames]]
    residual = frames.float().clone()
    used, util, perp = [], [], []
    for cb in codebooks:
        cb = cb.float().contiguous()
        k = cb.shape[0]
        codes = nearest_codes(residual, cb)
        residual -= cb[codes]
        counts = torch.bincount(codes, minlength=k).double()
        p = counts[counts > 0] / counts.sum()
        used.append(int((counts > 0).sum()))
        util.append(used[-1] / k)
        perp.append(float(torch.exp(-(p * p.log()).sum())))
    return Evaluation(len(frames), used, util, perp, residual.pow(2).mean().item())


def train_steps(cancel: threading.Event, control: TrainControl, settings: TrainSettings, frames: TrainingFrames,
                init_codebooks: list[torch.Tensor] | None = None,
                interval: float = BATCH_INTERVAL) -> Iterator[StepBatch | TrainStatus]:
    """Train `settings.steps` steps on `frames`.

    Yields `TrainStatus` on every change of state and `StepBatch`es at most every `interval` s.
    `control.pause` holds it between steps; `control.stop` ends it after the current step (a
    normal end: the trainer stays in `control.trainer` for saving); `cancel` (the worker slot's
    teardown) ends it as soon as possible.
    """
    if cancel.is_set():
        return
    if init_codebooks is None and settings.kmeans_init:
        yield TrainStatus("initialising", text=f"k-means init ({settings.kmeans_iters} iterations on the "
                                                f"first batch of {settings.batch_size:,} frames)…")
    trainer = Trainer(frames.frames, settings, init_codebooks=init_codebooks,
                      should_stop=lambda: cancel.is_set() or control.stop.is_set())
    n_q = settings.n_q
    pending: list[StepStats] = []
    t0 = time.perf_counter()
    last = 0.0
    if init_codebooks is None and settings.kmeans_init and settings.steps > 0:
        try:
            with control.lock:                    # k-means runs inside the first step (seconds at large K)
                pending.append(trainer.step())
        except CancelledError:                    # Stop or teardown during k-means: nothing worth saving
            if not cancel.is_set():
                yield TrainStatus("stopped", 0, "stopped during the k-means initialisation: nothing to save")
            return
    control.trainer = trainer
    yield TrainStatus("running", trainer.step_count, frames.note, frames=frames)

    def flush() -> StepBatch:
        batch = StepBatch.from_stats(pending, n_q, time.perf_counter() - t0)
        pending.clear()
        return batch

    reason = "finished"
    while trainer.step_count < settings.steps:
        if cancel.is_set():
            return
        if control.stop.is_set():
            reason = "stopped"
            break
        if control.pause.is_set():
            if pending:
                yield flush()
            yield TrainStatus("paused", trainer.step_count, f"paused at step {trainer.step_count}")
            while control.pause.is_set() and not control.stop.is_set() and not cancel.is_set():
                control.stop.wait(0.02)
            if cancel.is_set():
                return
            if not control.stop.is_set():
                yield TrainStatus("running", trainer.step_count, "resumed")
            continue
        with control.lock:
            pending.append(trainer.step())
        now = time.perf_counter()
        if now - last >= interval:
            last = now
            yield flush()
    if pending:
        yield flush()
    if cancel.is_set():
        return
    with control.lock:
        evaluation = evaluate_codebooks([cb.embed for cb in trainer.codebooks], frames.frames, seed=settings.seed)
    yield TrainStatus(reason, trainer.step_count, f"{reason} at step {trainer.step_count}", evaluation=evaluation)
