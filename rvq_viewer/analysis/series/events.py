"""A training run seen through its saved checkpoints: ordering them and finding dead-code events.

For each consecutive pair of checkpoints and each layer, a code may have
- died: its EMA cluster size fell below the format's dead-code threshold,
- revived: it was EMA-dead and no longer is,
- been replaced: its centroid jumped far beyond the drift of the other codes (expiry respawns a code
  at a random frame). The jump is reported in units of the earlier codebook's median
  nearest-neighbour distance.
An event's step is that of the later checkpoint of the pair.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch

from ...quant import Quantizer
from ...quant.neighbours import median_nn_distance, nearest_neighbours
from ..audit import usage_metrics
from .ordering import Series

# A replaced code must move more than this many median nearest-neighbour distances...
JUMP_FACTOR = 1.0
# ...and more than this many times the median drift of all codes of its layer between the two files.
DRIFT_FACTOR = 5.0


@dataclass
class Event:
    step: int
    layer: int
    code: int
    kind: str                       # died, revived, replaced
    ema_size_before: float | None
    ema_size_after: float | None
    jump: float | None              # centroid move / median nearest-neighbour distance


@dataclass
class Summary:
    step: int
    layer: int
    ema_dead: int | None
    used: int | None = None
    perplexity: float | None = None


@dataclass
class EventsReport:
    order: str
    steps: list[int]
    events: list[Event] = field(default_factory=list)
    summaries: list[Summary] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"order": self.order, "steps": self.steps, "paths": self.paths,
                "events": [asdict(e) for e in self.events], "summaries": [asdict(s) for s in self.summaries]}


# Rows whose nearest neighbour measures a large codebook's spacing (`code_spacing`): enough for a median.
SPACING_SAMPLE = 4096


def code_spacing(codebook: torch.Tensor, sample: int = SPACING_SAMPLE) -> float:
    """The median nearest-neighbour distance of a codebook's rows (on `sample` seeded rows of a larger
    one: the median of a 4,096-row sample is within ~2% of the full one, at a fraction of K²)."""
    k = int(codebook.shape[0])
    if k <= sample:
        return median_nn_distance(codebook)
    rows = np.sort(np.random.default_rng(k).choice(k, sample, replace=False))
    _, dist = nearest_neighbours(codebook[torch.from_numpy(rows)], codebook, exclude=rows)
    finite = dist[np.isfinite(dist)]
    return float(np.median(finite)) if finite.size else float("nan")


def layer_events(step: int, layer: int, before: Quantizer, after: Quantizer,
                 scale: float | None = None, chosen: np.ndarray | None = None) -> list[Event]:
    """Events of one layer between two states of a quantizer. `scale` is the earlier codebook's median
    nearest-neighbour distance when the caller already knows it (a live run measures it now and then).

    `chosen` (a live run: how many frames chose each code between the two states) narrows replacements
    to codes that no frame chose: an EMA update or a gradient moves only the codes that win frames, so an
    unused code that jumped was moved by the trainer's expiry. Between saved checkpoints nothing says which
    codes were chosen, and the jump alone decides."""
    events: list[Event] = []
    if before.has_ema and after.has_ema:
        size_b, size_a = before.cluster_size[layer], after.cluster_size[layer]
        dead_b = before.dead_code_rule.dead_mask(size_b)
        dead_a = after.dead_code_rule.dead_mask(size_a)
        for kind, mask in (("died", dead_a & ~dead_b), ("revived", dead_b & ~dead_a)):
            for code in mask.nonzero().flatten().tolist():
                events.append(Event(step, layer, code, kind, float(size_b[code]), float(size_a[code]), None))
    old, new = before.codebooks[layer], after.codebooks[layer]
    moves = (new - old).norm(dim=1)
    scale = median_nn_distance(old) if scale is None else scale
    if not math.isfinite(scale):        # a single code has no neighbour to measure by
        scale = 0.0
    drift = float(moves.median())
    limit = max(JUMP_FACTOR * scale, DRIFT_FACTOR * drift)
    jumped = moves > limit
    if chosen is not None:
        jumped &= torch.from_numpy(np.asarray(chosen) == 0).to(jumped.device)
    for code in jumped.nonzero().flatten().tolist():
        sizes = ((float(before.cluster_size[layer][code]), float(after.cluster_size[layer][code]))
                 if before.has_ema and after.has_ema else (None, None))
        events.append(Event(step, layer, code, "replaced", *sizes, float(moves[code]) / scale if scale else None))
    return events


@dataclass
class CheckpointFindings:
    """What one checkpoint of a series adds: its per-layer summaries and the events since the previous one."""

    index: int
    step: int
    summaries: list[Summary]
    events: list[Event]


def iter_findings(series: Series, usage: Callable[[Quantizer], list[np.ndarray]] | None = None
                  ) -> Iterator[CheckpointFindings]:
    """Checkpoint by checkpoint: per-step summaries and the events between consecutive checkpoints;
    `usage(quantizer)` gives each layer's code counts on features (the pipeline audits them), adding used
    codes and perplexity."""
    previous = None
    for index, entry in enumerate(series.entries):
        q = entry.quantizer
        counts = usage(q) if usage is not None else None
        summaries, events = [], []
        for layer in range(q.n_q):
            dead = q.ema_dead_codes(layer)
            summary = Summary(entry.step, layer, None if dead is None else int(dead.numel()))
            if counts is not None:
                metrics = usage_metrics(counts[layer])
                summary.used, summary.perplexity = metrics["used"], metrics["perplexity"]
            summaries.append(summary)
            if previous is not None:
                events.extend(layer_events(entry.step, layer, previous, q))
        previous = q
        yield CheckpointFindings(index, entry.step, summaries, events)


def find_events(series: Series, usage: Callable[[Quantizer], list[np.ndarray]] | None = None,
                progress: Callable[[int, int], None] | None = None) -> EventsReport:
    """`iter_findings` gathered into one report; `progress(done, total)` after each checkpoint."""
    report = EventsReport(series.order, series.steps, paths=[str(e.path) for e in series.entries])
    for found in iter_findings(series, usage):
        report.summaries.extend(found.summaries)
        report.events.extend(found.events)
        if progress:
            progress(found.index + 1, len(series.entries))
    return report
