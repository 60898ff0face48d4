"""Worker jobs for the checkpoint-series timeline. Qt-free.

`series_job` runs the pipeline's series (`pipeline.iter_series`: the checkpoints ordered by the step
stored in the files, else by the number in the names; the dead-code events between consecutive ones;
with features, the usage of every checkpoint on them through the audit chain) and turns it into compact
arrays for the GUI thread.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..analysis.pca import PcaProjection
from ..analysis.series import EventTable, Series, summary_arrays
from ..pipeline import AuditSpec, SeriesOutcome, SeriesProgress, iter_series


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
    note: str = ""                       # e.g. why there is no perplexity, which files were skipped
    _projections: dict = field(default_factory=dict, repr=False)

    @property
    def steps(self) -> list[int]:
        return self.series.steps

    @property
    def order(self) -> str:
        return self.series.order

    @property
    def warnings(self) -> list[str]:
        """Files skipped for holding no quantizer, stored steps that were not numbers."""
        return self.series.warnings

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


def series_job(cancel: threading.Event, paths: list[str | Path], features: list[str | Path] | None = None,
               template: AuditSpec | None = None) -> Iterator[SeriesProgress | SeriesResult]:
    """Yield the pipeline's `SeriesProgress` while loading and comparing, then one `SeriesResult`.

    Features that do not fit the series give a note instead of usage per step."""
    outcome = None
    for item in iter_series(paths, features, template, should_stop=cancel.is_set, features_optional=True):
        if isinstance(item, SeriesOutcome):
            outcome = item
        else:
            yield item
    series, report = outcome.series, outcome.report
    entries = series.entries
    dead_masks = None
    if all(e.quantizer.has_ema for e in entries):
        dead_masks = [np.zeros((len(entries), k), dtype=bool) for k in entries[0].quantizer.codebook_sizes]
        for index, entry in enumerate(entries):
            for layer in range(entry.quantizer.n_q):
                dead_masks[layer][index, entry.quantizer.ema_dead_codes(layer).cpu().numpy()] = True
    arrays = summary_arrays(report.summaries, series.steps, entries[0].quantizer.n_q)
    note = outcome.note
    if not features:
        note = "no features open: open features first for usage and perplexity per step"
    note = " ".join(filter(None, [note] + [f"{w}." for w in series.warnings]))
    yield SeriesResult(series=series, events=EventTable.from_events(report.events), ema_dead=arrays["ema_dead"],
                       used=arrays["used"], perplexity=arrays["perplexity"], dead_masks=dead_masks,
                       features=[Path(f) for f in features or []] if not outcome.note else [], note=note)
