"""Plain data the views draw: what is open (`Session`), one audit state (`Snapshot`), health marks.

No Qt here: these are built in worker threads and handed to the GUI thread whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..audit import AuditResult, LayerReport
from ..core import Quantizer
from ..io import FeatureSource


@dataclass
class Session:
    """A loaded checkpoint and the features it is audited on."""

    checkpoint: Path
    features: list[Path]
    quantizer: Quantizer
    source: FeatureSource | None         # None: a checkpoint opened without features (no audit)
    total_frames: int
    codebooks: list[np.ndarray]          # [K, Dc] float32 per layer, on the CPU
    norms: list[np.ndarray]              # ||e_k|| per layer
    ema_sizes: list[np.ndarray] | None   # EMA cluster sizes per layer, if the checkpoint has them
    ema_dead: list[np.ndarray] | None    # EMA-dead code indices per layer

    @property
    def name(self) -> str:
        return self.checkpoint.name

    @property
    def n_q(self) -> int:
        return self.quantizer.n_q

    def describe(self) -> str:
        q = self.quantizer
        dims = f"n_q {q.n_q} × K {q.codebook_size} × D {q.dim}"
        if int(q.codebooks[0].shape[1]) != q.dim:
            dims += f" (codebook dim {int(q.codebooks[0].shape[1])})"
        if self.source is None:
            return f"{q.format}: {dims}; no features open"
        files = f"{len(self.source.files)} feature file" + ("s" if len(self.source.files) != 1 else "")
        return f"{q.format}: {dims}; {self.total_frames:,} frames in {files}"


@dataclass
class Snapshot:
    """The audit so far: the report plus the raw counts as arrays (views need no list conversion)."""

    result: AuditResult
    counts: list[np.ndarray]
    frames_done: int
    frames_total: int | None
    elapsed: float
    complete: bool
    device: str = "cpu"
    cancelled: bool = False
    verdicts: list | None = None      # the diagnosis (as `rvq-viewer audit` gives it), complete audits only
    diagnosis_error: str = ""

    def layer_verdicts(self, index: int) -> list:
        return [v for v in self.verdicts or [] if v.layer == index]

    @property
    def frames_per_second(self) -> float:
        return self.frames_done / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def fraction(self) -> float:
        if self.complete:
            return 1.0
        return self.frames_done / self.frames_total if self.frames_total else 0.0

    def layer(self, index: int) -> LayerReport | None:
        layers = self.result.layers
        return layers[index] if 0 <= index < len(layers) else None


# --- health ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Health:
    level: str          # "ok", "warn", "bad" or "unknown"
    label: str
    reason: str = ""


# Thresholds on the evaluation set. Utilization = used/K, entropy = H/log K (1 = uniform use).
HEALTHY_UTILIZATION = 0.80
HEALTHY_ENTROPY = 0.80
COLLAPSED_UTILIZATION = 0.30
COLLAPSED_ENTROPY = 0.50
MIN_FRAMES_PER_CODE = 4   # fewer frames than this per code cannot show full use


SEVERITY_HEALTH = {"ok": ("ok", "✔ healthy"), "info": ("ok", "✔ healthy"), "warning": ("warn", "▲ warning"),
                   "collapse": ("bad", "✖ collapsed")}


def verdict_health(verdicts: list) -> Health | None:
    """The mark from the diagnosis' verdicts about one layer (the worst one decides)."""
    if not verdicts:
        return None
    from ..diagnosis.verdict import severity_rank
    worst = max(verdicts, key=lambda v: severity_rank(v.severity))
    level, label = SEVERITY_HEALTH.get(worst.severity, ("unknown", worst.severity))
    reasons = [f"[{v.severity}] {v.title}" for v in sorted(verdicts, key=lambda v: -severity_rank(v.severity))]
    return Health(level, label, "\n".join(reasons))


def snapshot_health(snapshot: "Snapshot", index: int) -> Health:
    """The diagnosis' mark once the audit is complete, the quick rule below while it streams."""
    found = verdict_health(snapshot.layer_verdicts(index)) if snapshot.verdicts else None
    if found is not None:
        return found
    return layer_health(snapshot.result.layers[index], snapshot.result.frames)


def layer_health(report: LayerReport, frames: int) -> Health:
    """A quick mark per layer while the audit streams: healthy, under-used or collapsed."""
    k = report.codebook_size
    if frames == 0:
        return Health("unknown", "–", "no frames audited yet")
    util, ent = report.utilization, report.entropy
    why = f"{report.used}/{k} codes used ({util:.0%}), normalised entropy {ent:.2f}"
    if util < COLLAPSED_UTILIZATION or ent < COLLAPSED_ENTROPY:
        return Health("bad", "✖ collapsed", why)
    if frames < MIN_FRAMES_PER_CODE * k:
        return Health("unknown", "? few frames",
                      f"{frames:,} frames for {k:,} codes: too few to judge full use; " + why)
    if util < HEALTHY_UTILIZATION or ent < HEALTHY_ENTROPY:
        return Health("warn", "▲ under-used", why)
    return Health("ok", "✔ healthy", why)


@dataclass
class DeadCodeTable:
    """Dead codes of one layer with their neighbours: what the dead-code view lists."""

    layer: int
    codes: np.ndarray            # code indices (unused on the features and/or EMA-dead)
    unused: np.ndarray           # bool: count 0 on the features
    ema_dead: np.ndarray         # bool: EMA-dead by the checkpoint's rule (False without EMA)
    counts: np.ndarray           # count on the features
    ema_size: np.ndarray | None  # EMA cluster size, if known
    norm: np.ndarray
    neighbour: np.ndarray        # nearest live code (-1: no live code)
    distance: np.ndarray         # distance to it
    complete: bool = True
    live_count: int = 0
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.codes.size)
