"""Qt-free helpers behind the GUI's checkpoint-series timeline and its live what-if trainer.

Series side (the engine is `rvq_viewer.series`):
- `EventTable`: the events of a series as numpy columns, so a GUI never keeps hundreds of thousands of
  `Event` objects; `aggregate()` folds them into one mark per (step, layer, kind) with counts and
  distinct codes when there are too many to draw one by one.
- `died_at_steps`: for each code EMA-dead at a reference checkpoint, the step at which it last died.
- `PcaProjection`: PCA to 2-D with the same centring, axes and signs as `projection.pca_2d`, but
  keeping the fitted axes so other points (a code's centroid at every checkpoint) can be projected.

Trainer side (the engine is `rvq_viewer.core.train`):
- `read_training_frames`: frames for training from feature files, through the checkpoint's input
  transform, randomly subsampled to a cap while they stream (never all in memory first).
- `train_stream`: a generator job a worker thread runs: trains step by step, yields `StepBatch`es
  (compact per-step numbers and dead-code events as arrays) at most every ~50 ms, and obeys a
  `TrainControl` (pause / resume / stop, and a lock that makes saving safe while it runs).
- `RunHistory`: one run's settings and curves with constant-size event aggregates, and what it
  reached on the training frames at the end (`evaluate_codebooks`); two histories can be compared.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from .core.train import StepStats, TrainSettings, Trainer
from .errors import CancelledError, LoadError

EVENT_KINDS = ("died", "revived", "replaced")
KIND_ID = {kind: i for i, kind in enumerate(EVENT_KINDS)}
MAX_TRAIN_FRAMES = 200_000
EVAL_FRAMES = 50_000              # frames the end-of-run evaluation encodes
BATCH_INTERVAL = 0.05             # s between StepBatches yielded by `train_stream`
RASTER_STEP_BINS = 600            # replacement raster: at most this many step columns...
RASTER_CODE_BINS = 512            # ...and code rows per layer
EVENT_LOG_CAP = 1_000_000         # raw trainer events kept per run (aggregates are always complete)


# ================================================================================================
# Series: events as columns
# ================================================================================================

@dataclass
class EventTable:
    """Events of a series as parallel numpy columns, sorted by (step, layer, kind, code)."""

    steps: np.ndarray          # int64
    layers: np.ndarray         # int32
    codes: np.ndarray          # int64
    kinds: np.ndarray          # int8, index into EVENT_KINDS
    size_before: np.ndarray    # float32 (nan: unknown)
    size_after: np.ndarray     # float32
    jump: np.ndarray           # float32

    def __len__(self) -> int:
        return int(self.steps.size)

    @classmethod
    def empty(cls) -> "EventTable":
        z = np.zeros(0)
        return cls(z.astype(np.int64), z.astype(np.int32), z.astype(np.int64), z.astype(np.int8),
                   z.astype(np.float32), z.astype(np.float32), z.astype(np.float32))

    @classmethod
    def from_events(cls, events) -> "EventTable":
        """From `series.Event`s (or anything with step, layer, code, kind, ema_size_*, jump)."""
        if not events:
            return cls.empty()

        def col(get, dtype):
            return np.fromiter((get(e) for e in events), dtype=dtype, count=len(events))

        nan = float("nan")
        table = cls(col(lambda e: e.step, np.int64), col(lambda e: e.layer, np.int32),
                    col(lambda e: e.code, np.int64), col(lambda e: KIND_ID[e.kind], np.int8),
                    col(lambda e: nan if e.ema_size_before is None else e.ema_size_before, np.float32),
                    col(lambda e: nan if e.ema_size_after is None else e.ema_size_after, np.float32),
                    col(lambda e: nan if e.jump is None else e.jump, np.float32))
        return table.sorted()

    def sorted(self) -> "EventTable":
        order = np.lexsort((self.codes, self.kinds, self.layers, self.steps))
        return EventTable(*(getattr(self, f.name)[order] for f in fields(self)))

    def counts_by_kind(self) -> dict[str, int]:
        found = np.bincount(self.kinds.astype(np.int64), minlength=len(EVENT_KINDS))
        return {kind: int(found[i]) for i, kind in enumerate(EVENT_KINDS)}

    def group_keys(self) -> np.ndarray:
        """One int64 key per event for its (step, layer, kind) group (sortable like the table)."""
        return (self.steps * 1_000_000 + self.layers.astype(np.int64) * 10) + self.kinds

    def aggregate(self) -> "AggregatedEvents":
        """One mark per (step, layer, kind): how many events and how many distinct codes."""
        if len(self) == 0:
            z = np.zeros(0, dtype=np.int64)
            return AggregatedEvents(z, z.astype(np.int32), z.astype(np.int8), z, z, z)
        keys = self.group_keys()
        starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
        ends = np.r_[starts[1:], len(keys)]
        counts = ends - starts
        # distinct codes: the table is sorted by code inside each group, so count code changes
        new_code = np.r_[True, (self.codes[1:] != self.codes[:-1]) | (keys[1:] != keys[:-1])]
        distinct = np.add.reduceat(new_code.astype(np.int64), starts)
        return AggregatedEvents(self.steps[starts], self.layers[starts], self.kinds[starts], counts,
                                distinct, starts)

    def group(self, step: int, layer: int, kind: int | str) -> np.ndarray:
        """Row indices of the events of one (step, layer, kind) mark."""
        kind = KIND_ID[kind] if isinstance(kind, str) else int(kind)
        keys = self.group_keys()
        key = int(step) * 1_000_000 + int(layer) * 10 + kind
        lo, hi = np.searchsorted(keys, key, "left"), np.searchsorted(keys, key, "right")
        return np.arange(lo, hi)

    def codes_at(self, step: int, layer: int, kind: int | str) -> np.ndarray:
        """Distinct codes of one mark, ascending."""
        return np.unique(self.codes[self.group(step, layer, kind)])

    def of_code(self, layer: int, code: int) -> np.ndarray:
        """Row indices of every event of one code, by step."""
        return np.flatnonzero((self.layers == layer) & (self.codes == code))

    def describe_row(self, row: int) -> str:
        kind = EVENT_KINDS[int(self.kinds[row])]
        text = f"step {int(self.steps[row])}: {kind}"
        before, after, jump = (float(v[row]) for v in (self.size_before, self.size_after, self.jump))
        if not math.isnan(before) and not math.isnan(after):
            text += f" (EMA size {before:.3g} → {after:.3g})"
        if not math.isnan(jump):
            text += f", moved {jump:.2g}× the median code spacing"
        return text


@dataclass
class AggregatedEvents:
    """Marks of `EventTable.aggregate()`: parallel arrays, one entry per (step, layer, kind)."""

    steps: np.ndarray
    layers: np.ndarray
    kinds: np.ndarray
    counts: np.ndarray        # events in the mark
    distinct: np.ndarray      # distinct codes in the mark
    first_row: np.ndarray     # the mark's first row in the EventTable

    def __len__(self) -> int:
        return int(self.steps.size)


def summary_arrays(summaries, steps: list[int], n_q: int) -> dict[str, np.ndarray]:
    """`series.Summary` objects -> [S, L] float arrays 'ema_dead', 'used', 'perplexity' (nan: unknown)."""
    index = {s: i for i, s in enumerate(steps)}
    out = {name: np.full((len(steps), n_q), np.nan) for name in ("ema_dead", "used", "perplexity")}
    for s in summaries:
        i = index.get(s.step)
        if i is None or not 0 <= s.layer < n_q:
            continue
        for name in out:
            value = getattr(s, name)
            if value is not None:
                out[name][i, s.layer] = float(value)
    return out


def died_at_steps(dead: np.ndarray, steps: list[int] | np.ndarray,
                  reference: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """When did each code that is dead at checkpoint `reference` die?

    `dead` is [S, K] bool (EMA-dead per checkpoint, steps ascending). Returns (codes, step) for every
    code dead at `reference`: the step of the checkpoint that starts its current run of deadness.
    A code dead since the first checkpoint gets the first step (it died then or earlier).
    """
    dead = np.asarray(dead, dtype=bool)
    steps = np.asarray(steps)
    r = reference % dead.shape[0]
    window = dead[: r + 1]
    onset = window.copy()
    onset[1:] &= ~window[:-1]
    codes = np.flatnonzero(window[r])
    if codes.size == 0:
        return codes, np.zeros(0, dtype=np.int64)
    # last onset at or before r, per code: flip rows, first True
    last = r - np.argmax(onset[::-1][:, codes], axis=0)
    return codes, steps[last].astype(np.int64)


def died_at_mapping(dead_masks: list[np.ndarray], steps, reference: int = -1) -> dict[tuple[int, int], int]:
    """`died_at_steps` for every layer, as {(layer, code): step}."""
    out: dict[tuple[int, int], int] = {}
    for layer, mask in enumerate(dead_masks):
        codes, when = died_at_steps(mask, steps, reference)
        out.update({(layer, int(c)): int(s) for c, s in zip(codes, when)})
    return out


# ================================================================================================
# 2-D projection that can be reused
# ================================================================================================

@dataclass
class PcaProjection:
    """Two principal axes of a point set; `transform` gives the same numbers as `pca_2d` on the
    fitted points (same centring, float64 covariance eigenvectors, sign convention)."""

    mean: np.ndarray   # [d] float32
    axes: np.ndarray   # [d, 2] float32

    @classmethod
    def fit(cls, points: np.ndarray, max_points: int = 20_000, seed: int = 0) -> "PcaProjection":
        x = np.asarray(points, dtype=np.float32)
        if x.ndim != 2:
            raise ValueError(f"points must be [n, d], got shape {x.shape}")
        if len(x) > max_points:
            x = x[np.sort(np.random.default_rng(seed).choice(len(x), max_points, replace=False))]
        n, d = x.shape
        mean = x.mean(axis=0, keepdims=True) if n else np.zeros((1, d), np.float32)
        axes = np.zeros((d, 2), dtype=np.float64)
        if n >= 2 and d > 0:
            xc = x - mean
            if d <= n:
                _, vectors = np.linalg.eigh((xc.T @ xc).astype(np.float64))
                found = vectors[:, ::-1][:, :2]
            else:
                _, _, vt = np.linalg.svd(xc.astype(np.float64), full_matrices=False)
                found = vt[:2].T
            for j in range(found.shape[1]):
                if found[np.argmax(np.abs(found[:, j])), j] < 0:
                    found[:, j] = -found[:, j]
            axes[:, : found.shape[1]] = found
        return cls(mean.reshape(-1).astype(np.float32), axes.astype(np.float32))

    def transform(self, points: np.ndarray) -> np.ndarray:
        x = np.asarray(points, dtype=np.float32).reshape(-1, self.mean.size)
        return (x - self.mean[None, :]) @ self.axes


# ================================================================================================
# Trainer: frames
# ================================================================================================

@dataclass
class TrainingFrames:
    frames: torch.Tensor   # [N, D] float32, on the CPU
    total: int             # frames in the files (after the checkpoint's transform)
    note: str              # one line for the user: what was read and how it was sampled
    key: tuple = ()        # what they were read from, to reuse them for the next run


def frames_key(paths, dim: int, max_frames: int, transformed: bool) -> tuple:
    return (tuple(str(p) for p in paths), int(dim), int(max_frames), bool(transformed))


def read_training_frames(paths: list[str | Path], dim: int, max_frames: int = MAX_TRAIN_FRAMES,
                         quantizer=None, seed: int = 0, cancel: threading.Event | None = None,
                         progress: Callable[[int, int], None] | None = None) -> TrainingFrames:
    """Frames for training from feature files, at most `max_frames`, drawn uniformly at random.

    Streams the files once (`FeatureSource`); each chunk keeps each frame with probability
    max_frames / total, so memory stays near the cap. With a `quantizer` whose input goes through a
    transform (GPT-SoVITS's ssl_proj, a project_in) the frames are taken after it, in the space its
    codebooks live in; its `frame_stride` keeps sequence cuts at whole code frames.
    """
    from .io import FeatureSource
    stride = quantizer.frame_stride if quantizer is not None else 1
    source = FeatureSource(list(paths), dim, frame_stride=stride)
    total_in = source.total_frames()
    if total_in == 0:
        raise LoadError("the feature files hold no frames")
    expected = max(1, total_in // max(1, stride))
    keep_p = min(1.0, max_frames / expected)
    rng = np.random.default_rng(seed)
    kept: list[torch.Tensor] = []
    seen = done = 0
    transform = quantizer is not None and quantizer.transform is not None
    for chunk in source:
        if cancel is not None and cancel.is_set():
            raise CancelledError("cancelled")
        frames = chunk.frames
        done += len(frames)
        if transform:
            frames = quantizer.prepare(frames).cpu()
        frames = frames.float()
        seen += len(frames)
        if keep_p < 1.0:
            mask = rng.random(len(frames)) < keep_p
            frames = frames[torch.from_numpy(mask)]
        if len(frames):
            kept.append(frames.contiguous())
        if progress is not None:
            progress(done, total_in)
    if not kept:
        raise LoadError("no frames left to train on")
    out = torch.cat(kept)
    if len(out) > max_frames:
        out = out[torch.from_numpy(np.sort(rng.choice(len(out), max_frames, replace=False)))]
    files = len(source.files)
    note = f"{len(out):,} frames of {seen:,} in {files} file{'s' if files != 1 else ''}"
    note += " (all)" if len(out) == seen else f" (random {len(out) / max(seen, 1):.0%})"
    if transform:
        note += ", after the checkpoint's input transform"
    note += f", dim {out.shape[1]}"
    return TrainingFrames(out, seen, note, frames_key(paths, dim, max_frames, transform))


def loaded_codebooks_reason(quantizer) -> str:
    """Why the trainer cannot start from this quantizer's codebooks ('' when it can)."""
    if quantizer is None:
        return "no checkpoint open"
    from .core.quantizer import Quantizer
    sizes = set(quantizer.codebook_sizes)
    if len(sizes) != 1:
        return "its layers have different codebook sizes"
    if type(quantizer).lookup is not Quantizer.lookup or quantizer.codes_per_frame != 1 \
            or any(s != 1 for s in quantizer.layer_strides):
        return f"{quantizer.format} codebooks are not plain Euclidean EMA codebooks"
    return ""


def loaded_codebooks(quantizer) -> list[torch.Tensor]:
    return [c.detach().cpu().float().clone() for c in quantizer.codebooks]


# ================================================================================================
# Trainer: the worker job
# ================================================================================================

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
        cb = cb.float()
        k = cb.shape[0]
        block = max(64, (1 << 24) // max(k, 1))
        codes = torch.empty(len(residual), dtype=torch.long)
        sq = cb.pow(2).sum(1)
        for start in range(0, len(residual), block):
            rows = residual[start:start + block]
            codes[start:start + block] = (sq.unsqueeze(0) - 2 * rows @ cb.t()).argmin(dim=1)
        residual -= cb[codes]
        counts = torch.bincount(codes, minlength=k).double()
        p = counts[counts > 0] / counts.sum()
        used.append(int((counts > 0).sum()))
        util.append(used[-1] / k)
        perp.append(float(torch.exp(-(p * p.log()).sum())))
    return Evaluation(len(frames), used, util, perp, residual.pow(2).mean().item())


def train_stream(cancel: threading.Event, control: TrainControl, settings: TrainSettings,
                 frames: TrainingFrames | None = None, feature_paths: list | None = None, dim: int = 0,
                 quantizer=None, max_frames: int = MAX_TRAIN_FRAMES,
                 init_codebooks: list[torch.Tensor] | None = None,
                 interval: float = BATCH_INTERVAL) -> Iterator[StepBatch | TrainStatus]:
    """The training worker: read frames (unless given), then train `settings.steps` steps.

    Yields `TrainStatus` on every change of state and `StepBatch`es at most every `interval` s.
    `control.pause` holds it between steps; `control.stop` ends it after the current step (a
    normal end: the trainer stays in `control.trainer` for saving); `cancel` (the worker slot's
    teardown) ends it as soon as possible.
    """
    if frames is None:
        yield TrainStatus("reading", text="reading feature frames…")
        progress = {"done": 0, "total": 0}
        frames = read_training_frames(feature_paths or [], dim, max_frames, quantizer=quantizer,
                                      seed=settings.seed, cancel=cancel,
                                      progress=lambda d, t: progress.update(done=d, total=t))
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


# ================================================================================================
# Trainer: one run's history
# ================================================================================================

class _Grow:
    """A numpy array that grows along axis 0 with amortised doubling."""

    def __init__(self, tail: tuple = (), dtype=np.float32):
        self._data = np.zeros((64, *tail), dtype=dtype)
        self.n = 0

    def extend(self, rows: np.ndarray) -> None:
        m = len(rows)
        if self.n + m > len(self._data):
            bigger = np.zeros((max(2 * len(self._data), self.n + m), *self._data.shape[1:]), self._data.dtype)
            bigger[: self.n] = self._data[: self.n]
            self._data = bigger
        self._data[self.n:self.n + m] = rows
        self.n += m

    @property
    def values(self) -> np.ndarray:
        return self._data[: self.n]


SETTING_LABELS = {
    "n_q": "n_q", "codebook_size": "K", "kmeans_init": "k-means init", "kmeans_iters": "k-means iters",
    "decay": "decay", "epsilon": "epsilon", "threshold_ema_dead_code": "threshold",
    "threshold_relative": "relative threshold", "expire_before_ema": "expire before EMA",
    "batch_size": "batch", "steps": "steps", "seed": "seed",
}


def describe_settings(s: TrainSettings) -> str:
    init = f"k-means ×{s.kmeans_iters}" if s.kmeans_init else "random init"
    thr = "no expiry" if s.threshold_ema_dead_code <= 0 else \
        (f"dead < {s.threshold_ema_dead_code:g}× uniform share" if s.threshold_relative
         else f"dead < {s.threshold_ema_dead_code:g}")
    order = "EnCodec order" if s.expire_before_ema else "GPT-SoVITS order"
    return f"{s.n_q}×{s.codebook_size}, {init}, {thr}, {order}, decay {s.decay:g}, batch {s.batch_size:,}"


SETTING_WORDS = {
    "kmeans_init": {True: "k-means init", False: "random init"},
    "threshold_relative": {True: "relative threshold", False: "absolute threshold"},
    "expire_before_ema": {True: "EnCodec order", False: "GPT-SoVITS order"},
}


def settings_diff(a: TrainSettings, b: TrainSettings) -> list[str]:
    """'what: a → b' for every setting that differs, in words."""
    out = []
    for f in fields(TrainSettings):
        va, vb = getattr(a, f.name), getattr(b, f.name)
        if va == vb:
            continue
        words = SETTING_WORDS.get(f.name)
        if words is not None:
            out.append(f"{words[va]} → {words[vb]}")
        else:
            out.append(f"{SETTING_LABELS.get(f.name, f.name)} {va:g} → {vb:g}" if isinstance(va, float)
                       else f"{SETTING_LABELS.get(f.name, f.name)} {va} → {vb}")
    return out


def threshold_meaning(s: TrainSettings) -> str:
    """What the dead-code threshold means at this K and batch size, in one line."""
    share = s.batch_size / s.codebook_size     # EMA cluster sizes sum to about the batch size
    t = s.threshold_ema_dead_code
    if t <= 0:
        return "threshold 0: codes are never expired"
    if s.threshold_relative:
        return (f"dead when EMA size < {t:g} × (Σ EMA sizes / K) ≈ {t * share:.3g} "
                f"(uniform share batch/K = {share:.3g})")
    ratio = t / share
    text = f"dead when EMA size < {t:g}: {ratio:.3g}× the uniform share batch/K = {share:.3g}"
    if ratio >= 1:
        text += " — most codes of a uniform codebook would count as dead"
    return text


@dataclass
class RunHistory:
    """One trainer run: its settings, per-step curves, event aggregates and final evaluation."""

    name: str
    settings: TrainSettings
    start: str = ""                 # how the codebooks started, in words
    frames_note: str = ""
    state: str = "starting"
    saved_path: Path | None = None
    evaluation: Evaluation | None = None
    elapsed: float = 0.0
    error: str = ""
    _steps: _Grow = field(default=None, repr=False)
    _arrays: dict = field(default=None, repr=False)
    _log: dict = field(default=None, repr=False)

    def __post_init__(self):
        L, K = self.settings.n_q, self.settings.codebook_size
        self._steps = _Grow((), np.int64)
        self._arrays = {"used": _Grow((L,), np.int32), "perplexity": _Grow((L,), np.float32),
                        "dead": _Grow((L,), np.int32), "events": _Grow((L,), np.int32),
                        "residual_mse": _Grow((), np.float32)}
        self._log = {"steps": _Grow((), np.int64), "layers": _Grow((), np.int32), "codes": _Grow((), np.int64)}
        self.step_bin = max(1, math.ceil(self.settings.steps / RASTER_STEP_BINS))
        self.code_bin = max(1, math.ceil(K / RASTER_CODE_BINS))
        self.raster = np.zeros((L, math.ceil(self.settings.steps / self.step_bin) + 1,
                                math.ceil(K / self.code_bin)), dtype=np.int32)
        self.replace_count = np.zeros((L, K), dtype=np.int64)   # times each code was replaced
        self.last_replaced = np.full((L, K), -1, dtype=np.int64)
        self.total_events = 0
        self.log_truncated = False
        self.version = 0        # bumped on every change, so views redraw only when needed

    # --- growing ------------------------------------------------------------------------------------
    def add(self, batch: StepBatch) -> None:
        if len(batch) == 0:
            return
        self._steps.extend(batch.steps)
        for name, grow in self._arrays.items():
            grow.extend(getattr(batch, name))
        self.elapsed = batch.elapsed
        m = batch.event_codes.size
        if m:
            L = self.settings.n_q
            layers, codes, steps = batch.event_layers, batch.event_codes, batch.event_steps
            ok = (layers >= 0) & (layers < L) & (codes >= 0) & (codes < self.settings.codebook_size)
            layers, codes, steps = layers[ok], codes[ok], steps[ok]
            col = np.minimum(steps // self.step_bin, self.raster.shape[1] - 1)
            np.add.at(self.raster, (layers, col, codes // self.code_bin), 1)
            np.add.at(self.replace_count, (layers, codes), 1)
            self.last_replaced[layers, codes] = np.maximum(self.last_replaced[layers, codes], steps)
            self.total_events += int(layers.size)
            room = EVENT_LOG_CAP - self._log["codes"].n
            if room < layers.size:
                self.log_truncated = True
            if room > 0:
                self._log["steps"].extend(steps[:room])
                self._log["layers"].extend(layers[:room])
                self._log["codes"].extend(codes[:room])
        self.version += 1

    def set_state(self, state: str) -> None:
        self.state = state
        self.version += 1

    # --- reading ------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._steps.n

    @property
    def steps(self) -> np.ndarray:
        return self._steps.values

    def curve(self, name: str) -> np.ndarray:
        """[n, L] (or [n] for residual_mse) of 'used', 'perplexity', 'dead', 'events', 'residual_mse'."""
        return self._arrays[name].values

    @property
    def last_step(self) -> int:
        return int(self._steps.values[-1]) if self._steps.n else 0

    @property
    def steps_per_second(self) -> float:
        return len(self) / self.elapsed if self.elapsed > 0 else 0.0

    def distinct_replaced(self) -> np.ndarray:
        """Distinct codes replaced at least once, per layer."""
        return (self.replace_count > 0).sum(axis=1)

    def event_log(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(steps, layers, codes) of the recorded replacements (up to EVENT_LOG_CAP)."""
        return self._log["steps"].values, self._log["layers"].values, self._log["codes"].values

    def describe(self) -> str:
        return f"{self.name}: {describe_settings(self.settings)}" + (f", {self.start}" if self.start else "")

    def final(self) -> dict:
        """The numbers a comparison table shows (means over layers where it says so)."""
        out = {"steps": self.last_step, "state": self.state, "events": self.total_events,
               "distinct_replaced": int(self.distinct_replaced().sum())}
        if len(self):
            out["batch_perplexity"] = float(self.curve("perplexity")[-1].mean())
            out["dead"] = int(self.curve("dead")[-1].sum())
        if self.evaluation is not None:
            out["utilization"] = float(np.mean(self.evaluation.utilization))
            out["perplexity"] = float(np.mean(self.evaluation.perplexity))
            out["residual_mse"] = self.evaluation.residual_mse
        return out
