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

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .core import Quantizer
from .errors import LoadError
from .io import FeatureSource, detect_format, read_checkpoint

CHECKPOINT_EXTENSIONS = (".pt", ".pth", ".ckpt", ".th", ".bin", ".safetensors")
STEP_KEYS = ("step", "global_step", "iteration", "epoch")
SOVITS_INFO = re.compile(r"(\d+)epoch_(\d+)iteration")

# A replaced code must move more than this many median nearest-neighbour distances...
JUMP_FACTOR = 1.0
# ...and more than this many times the median drift of all codes of its layer between the two files.
DRIFT_FACTOR = 5.0


@dataclass
class SeriesEntry:
    path: Path
    step: int
    quantizer: Quantizer


@dataclass
class Series:
    entries: list[SeriesEntry]
    order: str   # how the steps were found, said to the user

    @property
    def steps(self) -> list[int]:
        return [e.step for e in self.entries]


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


# --- ordering -------------------------------------------------------------------------------------
def list_checkpoints(paths: list[str | Path]) -> list[Path]:
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in CHECKPOINT_EXTENSIONS)
            if not found:
                raise LoadError("no checkpoint files in this folder", path)
            files.extend(found)
        else:
            files.append(path)
    if len(files) < 2:
        raise LoadError("a series needs at least two checkpoints", paths[0] if paths else None)
    return files


def stored_step(meta: dict) -> tuple[int, str] | None:
    """The training step a checkpoint records about itself, and under which key."""
    info = meta.get("info")
    if isinstance(info, str) and (match := SOVITS_INFO.search(info)):
        return int(match[2]), "info"
    for key in STEP_KEYS:
        value = meta.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return int(value), key
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            return int(value.item()), key
    return None


def name_number(path: Path) -> int | None:
    numbers = re.findall(r"\d+", path.stem)
    return int(numbers[-1]) if numbers else None


def open_series(paths: list[str | Path], **load_options) -> Series:
    """Load every checkpoint and order them by stored step, else by the number in the file name."""
    loaded = []
    for path in list_checkpoints(paths):
        ckpt = read_checkpoint(path, **load_options)
        loaded.append((path, stored_step(ckpt.meta), detect_format(ckpt).build(ckpt)))
    if all(step is not None for _, step, _ in loaded):
        keys = sorted({step[1] for _, step, _ in loaded})
        order = f"training step stored in the files ({', '.join(keys)})"
        entries = [SeriesEntry(p, s[0], q) for p, s, q in loaded]
    elif all(name_number(p) is not None for p, _, _ in loaded):
        order = "number in the file names (no step stored in every file)"
        entries = [SeriesEntry(p, name_number(p), q) for p, _, q in loaded]
    else:
        order = "file names, alphabetically (no step stored and no number in every name)"
        entries = [SeriesEntry(p, i, q) for i, (p, _, q) in enumerate(sorted(loaded, key=lambda t: t[0].name))]
    entries.sort(key=lambda e: (e.step, e.path.name))
    _check_compatible(entries)
    return Series(entries, order)


def _check_compatible(entries: list[SeriesEntry]) -> None:
    first = entries[0].quantizer
    for entry in entries[1:]:
        q = entry.quantizer
        if q.codebook_sizes != first.codebook_sizes or q.codebooks[0].shape[1] != first.codebooks[0].shape[1]:
            raise LoadError(f"not the same quantizer as {entries[0].path.name}: n_q/K/D differ", entry.path)


# --- events ---------------------------------------------------------------------------------------
def median_nn_distance(codebook: torch.Tensor) -> float:
    """Median distance from each code to its nearest other code."""
    dists = torch.cdist(codebook, codebook)
    dists.fill_diagonal_(float("inf"))
    return float(dists.min(dim=1).values.median())


def layer_events(step: int, layer: int, before: Quantizer, after: Quantizer) -> list[Event]:
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
    scale = median_nn_distance(old)
    drift = float(moves.median())
    limit = max(JUMP_FACTOR * scale, DRIFT_FACTOR * drift)
    for code in (moves > limit).nonzero().flatten().tolist():
        sizes = ((float(before.cluster_size[layer][code]), float(after.cluster_size[layer][code]))
                 if before.has_ema and after.has_ema else (None, None))
        events.append(Event(step, layer, code, "replaced", *sizes, float(moves[code]) / scale if scale else None))
    return events


def usage_on_features(quantizer: Quantizer, features: list[str | Path], device="cpu") -> list[np.ndarray]:
    from .audit import run_audit
    source = FeatureSource(features, quantizer.dim, frame_stride=quantizer.frame_stride)
    return [np.asarray(layer.counts) for layer in run_audit(quantizer, source, device).layers]


def find_events(series: Series, features: list[str | Path] | None = None, device="cpu",
                progress: Callable[[int, int], None] | None = None) -> EventsReport:
    """Events between consecutive checkpoints, and per-step summaries (usage when features are given)."""
    from .audit import usage_metrics
    report = EventsReport(series.order, series.steps, paths=[str(e.path) for e in series.entries])
    previous = None
    for index, entry in enumerate(series.entries):
        q = entry.quantizer
        counts = usage_on_features(q, features, device) if features else None
        for layer in range(q.n_q):
            dead = q.ema_dead_codes(layer)
            summary = Summary(entry.step, layer, None if dead is None else int(dead.numel()))
            if counts is not None:
                usage = usage_metrics(counts[layer])
                summary.used, summary.perplexity = usage["used"], usage["perplexity"]
            report.summaries.append(summary)
            if previous is not None:
                report.events.extend(layer_events(entry.step, layer, previous, q))
        previous = q
        if progress:
            progress(index + 1, len(series.entries))
    return report

