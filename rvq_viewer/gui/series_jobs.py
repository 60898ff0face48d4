"""Worker jobs for the checkpoint-series timeline. Qt-free, like `gui/jobs.py`.

`series_job` opens a folder (or files) of checkpoints of one quantizer with `series.open_series`
(ordered by the step stored in the files, else by the number in the names, and says which), then
finds the dead-code events between consecutive checkpoints and, when feature files are given, the
usage and perplexity of every checkpoint on them. It mirrors `series.find_events` step by step so it
can report progress and stop between checkpoints. Only compact arrays reach the GUI thread.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..errors import CancelledError, RvqViewerError
from ..series import Series, Summary, layer_events, list_checkpoints, open_series, usage_on_features
from ..training import EventTable, PcaProjection, summary_arrays


@dataclass
class SeriesProgress:
    done: int
    total: int
    text: str


@dataclass
class SeriesResult:
    """A loaded series and what happened along it, ready to draw."""

    series: Series
    events: EventTable
    ema_dead: np.ndarray                 # [S, L] EMA-dead codes per checkpoint (nan: no EMA statistics)
    used: np.ndarray                     # [S, L] codes used on the features (nan: no features)
    perplexity: np.ndarray               # [S, L] perplexity on the features (nan: no features)
    dead_masks: list[np.ndarray] | None  # per layer [S, K] bool EMA-dead, None without EMA statistics
    features: list[Path] = field(default_factory=list)
    note: str = ""                       # e.g. why there is no perplexity
    _projections: dict = field(default_factory=dict, repr=False)

    @property
    def steps(self) -> list[int]:
        return self.series.steps

    @property
    def order(self) -> str:
        return self.series.order

    @property
    def paths(self) -> list[Path]:
        return [e.path for e in self.series.entries]

    @property
    def n_q(self) -> int:
        return self.series.entries[0].quantizer.n_q

    @property
    def codebook_sizes(self) -> list[int]:
        return self.series.entries[0].quantizer.codebook_sizes

    def trajectory(self, layer: int, code: int) -> np.ndarray:
        """[S, D] the code's centroid at every checkpoint."""
        return np.stack([e.quantizer.codebooks[layer][code].detach().cpu().float().numpy()
                         for e in self.series.entries])

    def union_projection(self, layer: int) -> PcaProjection:
        """PCA fitted on the layer's codebooks of all checkpoints together (sampled to 20k rows)."""
        if layer not in self._projections:
            entries = self.series.entries
            per = max(1, 20_000 // len(entries))
            rng = np.random.default_rng(layer)
            parts = []
            for e in entries:                     # at most ~20k rows in all, never every codebook whole
                cb = e.quantizer.codebooks[layer]
                rows = torch.from_numpy(np.sort(rng.choice(len(cb), per, replace=False))) if len(cb) > per else None
                parts.append((cb if rows is None else cb[rows]).detach().cpu().float().numpy())
            self._projections[layer] = PcaProjection.fit(np.concatenate(parts))
        return self._projections[layer]

    def codebook(self, index: int, layer: int) -> np.ndarray:
        return self.series.entries[index].quantizer.codebooks[layer].detach().cpu().float().numpy()

    def entry_matching(self, quantizer) -> int | None:
        """Index of the checkpoint whose codebooks equal `quantizer`'s (the open session), if any."""
        if quantizer is None or quantizer.codebook_sizes != self.codebook_sizes:
            return None
        first = quantizer.codebooks[0].detach().cpu().float()
        for i, entry in enumerate(self.series.entries):
            other = entry.quantizer.codebooks[0].detach().cpu().float()
            if other.shape != first.shape or not bool((other[:64] == first[:64]).all()):
                continue                          # cheap check on a few rows first
            if all(bool((a.detach().cpu().float() == b.detach().cpu().float()).all())
                   for a, b in zip(entry.quantizer.codebooks, quantizer.codebooks)):
                return i
        return None


def _check(cancel: threading.Event) -> None:
    if cancel.is_set():
        raise CancelledError("cancelled")


def series_job(cancel: threading.Event, paths: list[str | Path], features: list[str | Path] | None = None,
               device="cpu") -> Iterator[SeriesProgress | SeriesResult]:
    """Yield `SeriesProgress` while loading and comparing, then one `SeriesResult`."""
    files = list_checkpoints(paths)
    total = len(files) * (2 if features else 1) + 1
    yield SeriesProgress(0, total, f"loading {len(files)} checkpoints…")
    series = open_series(paths)
    _check(cancel)
    entries = series.entries
    n_q = entries[0].quantizer.n_q
    done = 1
    yield SeriesProgress(done, total, f"{len(entries)} checkpoints ordered by {series.order}")
    note = ""
    counts_per_entry: list | None = None
    if features:
        counts_per_entry = []
        for entry in entries:
            _check(cancel)
            try:
                counts_per_entry.append(usage_on_features(entry.quantizer, list(features), device))
            except RvqViewerError as exc:
                note = f"no usage per step: the open features do not fit the series ({exc})"
                counts_per_entry = None
                break
            done += 1
            yield SeriesProgress(done, total, f"usage of step {entry.step} on the features…")
    from ..audit import usage_metrics
    summaries, events = [], []
    dead_masks = None
    if all(e.quantizer.has_ema for e in entries):
        dead_masks = [np.zeros((len(entries), k), dtype=bool) for k in entries[0].quantizer.codebook_sizes]
    previous = None
    for index, entry in enumerate(entries):
        _check(cancel)
        q = entry.quantizer
        for layer in range(n_q):
            dead = q.ema_dead_codes(layer)
            summary = Summary(entry.step, layer, None if dead is None else int(dead.numel()))
            if dead is not None and dead_masks is not None:
                dead_masks[layer][index, dead.cpu().numpy()] = True
            if counts_per_entry is not None:
                usage = usage_metrics(counts_per_entry[index][layer])
                summary.used, summary.perplexity = usage["used"], usage["perplexity"]
            summaries.append(summary)
            if previous is not None:
                events.extend(layer_events(entry.step, layer, previous, q))
        previous = q
        done += 1
        yield SeriesProgress(done, total, f"events up to step {entry.step}: {len(events):,}")
    table = EventTable.from_events(events)
    del events
    arrays = summary_arrays(summaries, series.steps, n_q)
    if not features:
        note = "no features open: open features first for usage and perplexity per step"
    yield SeriesResult(series=series, events=table, ema_dead=arrays["ema_dead"], used=arrays["used"],
                       perplexity=arrays["perplexity"], dead_masks=dead_masks,
                       features=[Path(f) for f in features or []], note=note)
