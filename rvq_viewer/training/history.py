"""One trainer run's history: its settings, per-step curves, event aggregates of constant size and final
evaluation; and the settings described in words, so two runs can be compared."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from .run import Evaluation, StepBatch
from .trainer import TrainSettings

RASTER_STEP_BINS = 600            # replacement raster: at most this many step columns...
RASTER_CODE_BINS = 512            # ...and code rows per layer
EVENT_LOG_CAP = 1_000_000         # raw trainer events kept per run (aggregates are always complete)


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
    saved_step: int = -1            # the step `saved_path` holds (-1: never saved)
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
