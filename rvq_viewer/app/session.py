"""Plain data the app's views draw: what is open (`Session`), one audit state (`Snapshot`), health marks.

No Qt here: these are built in worker threads and handed to the GUI thread whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..analysis.audit import AuditResult, LayerReport
from ..analysis.diagnosis import Verdict, severity_rank
from ..io import FeatureSource
from ..pipeline import AuditSpec
from ..quant import Quantizer


@dataclass
class Session:
    """A loaded checkpoint and the features it is audited on, as one `AuditSpec`."""

    spec: AuditSpec
    quantizer: Quantizer
    source: FeatureSource | None         # None: a checkpoint opened without features (no audit)
    total_frames: int
    codebooks: list[np.ndarray]          # [K, Dc] float32 per layer, on the CPU
    norms: list[np.ndarray]              # ||e_k|| per layer
    ema_sizes: list[np.ndarray] | None   # EMA cluster sizes per layer, if the checkpoint has them
    ema_dead: list[np.ndarray] | None    # EMA-dead code indices per layer

    @property
    def checkpoint(self) -> Path:
        return self.spec.checkpoint

    @property
    def features(self) -> list[Path]:
        return list(self.spec.features)

    @property
    def name(self) -> str:
        return self.checkpoint.name

    @property
    def n_q(self) -> int:
        return self.quantizer.n_q

    def inputs(self) -> list[Path]:
        """Every file this session reads (an export must never be written over one of them)."""
        return [*self.spec.read_paths(), *(self.source.files if self.source is not None else [])]

    def describe(self) -> str:
        q = self.quantizer
        dims = f"n_q {q.n_q} × K {q.codebook_size} × D {q.dim}"
        if int(q.codebooks[0].shape[1]) != q.dim:
            dims += f" (codebook dim {int(q.codebooks[0].shape[1])})"
        if self.source is None:
            return f"{q.format}: {dims}; no features open"
        files = f"{len(self.source.files)} feature file" + ("s" if len(self.source.files) != 1 else "")
        return f"{q.format}: {dims}; {self.total_frames:,} frames in {files}"


# What an audit's counts are of (a run's window says "this window of the run" instead).
ON_FEATURES = "these features"


def counted_on(snapshot: "Snapshot | None") -> str:
    """What the snapshot's counts are of, for a view's wording; the features when there is none yet."""
    return snapshot.counted_on if snapshot is not None else ON_FEATURES


@dataclass
class Snapshot:
    """The audit so far: the numbers, and the verdicts that hold on them.

    While the audit streams, `verdicts` are the usage rules alone (`streaming_verdicts`: the same rules
    and thresholds as the final diagnosis); once it is complete, the whole diagnosis."""

    result: AuditResult
    frames_done: int
    frames_total: int | None
    elapsed: float
    complete: bool
    device: str = "cpu"
    cancelled: bool = False
    verdicts: list[Verdict] | None = None
    diagnosis_error: str = ""
    final: bool = False              # `verdicts` are the finished audit's whole diagnosis
    outcome: object = field(default=None, repr=False)   # the pipeline's AuditOutcome, once complete
    counted_on: str = ON_FEATURES     # what the counts are of, as views say it ("dead: unused on ...")

    @property
    def counts(self) -> list[np.ndarray]:
        return [layer.counts for layer in self.result.layers]

    def layer_verdicts(self, index: int) -> list[Verdict]:
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


SEVERITY_HEALTH = {"ok": ("ok", "✔ healthy"), "info": ("ok", "✔ healthy"), "warning": ("warn", "▲ warning"),
                   "collapse": ("bad", "✖ collapsed")}


def verdict_health(verdicts: list[Verdict]) -> Health | None:
    """The mark from the verdicts about one layer (the worst one decides)."""
    if not verdicts:
        return None
    worst = max(verdicts, key=lambda v: severity_rank(v.severity))
    level, label = SEVERITY_HEALTH.get(worst.severity, ("unknown", worst.severity))
    reasons = [f"[{v.severity}] {v.title}" for v in sorted(verdicts, key=lambda v: -severity_rank(v.severity))]
    return Health(level, label, "\n".join(reasons))


def snapshot_health(snapshot: Snapshot, index: int) -> Health:
    """A layer's mark: from the diagnosis once the audit is complete, from the same usage rules while it
    streams (marked provisional), 'no frames' before the first chunk."""
    if snapshot.result.frames == 0:
        return Health("unknown", "–", "no frames audited yet")
    found = verdict_health(snapshot.layer_verdicts(index))
    if found is None:
        return Health("unknown", "–", "no verdicts")
    if snapshot.final:
        return found
    return Health(found.level, found.label + " (so far)",
                  found.reason + f"\nprovisional: usage rules on the {snapshot.frames_done:,} frames audited so far")


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
