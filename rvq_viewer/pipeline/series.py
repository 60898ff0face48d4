"""A checkpoint series through the pipeline: order the files, find the dead-code events between them and,
with features, audit every checkpoint on them (the same audit chain as everywhere else)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..analysis.series import EventsReport, Series, iter_findings, list_checkpoints, open_series
from ..errors import CancelledError, RvqViewerError
from ..quant import Quantizer
from .audit import AuditOutcome, iter_audit_run, open_features
from .spec import AuditSpec


@dataclass
class SeriesProgress:
    done: int
    total: int
    text: str


@dataclass
class SeriesOutcome:
    series: Series
    report: EventsReport
    note: str = ""          # e.g. why there is no usage per step


def usage_counts(spec: AuditSpec, quantizer: Quantizer, should_stop: Callable[[], bool] | None = None
                 ) -> list[np.ndarray]:
    """Per-layer code counts of `quantizer` on the spec's features (no pair statistics, no verdicts)."""
    spec = spec.replace(pairs=False, verdicts=False)
    for item in iter_audit_run(spec, quantizer, should_stop=should_stop):
        if isinstance(item, AuditOutcome):
            if not item.complete:
                raise CancelledError("cancelled")
            return [layer.counts for layer in item.result.layers]
    raise AssertionError("iter_audit_run ended without an outcome")


def iter_series(paths: list[str | Path], features: list[str | Path] | None = None,
                template: AuditSpec | None = None, should_stop: Callable[[], bool] | None = None,
                features_optional: bool = False, **load_options) -> Iterator[SeriesProgress | SeriesOutcome]:
    """Open the series, then go checkpoint by checkpoint (yielding progress) and end with a SeriesOutcome.

    With `features`, each checkpoint is audited on them with the reading options of `template` (device,
    layout, key...). Features that do not fit the series are an error, or with `features_optional` a note
    and no usage per step."""
    def check() -> None:
        if should_stop is not None and should_stop():
            raise CancelledError("cancelled")

    if not load_options and template is not None:
        load_options = template.load.kwargs()     # every checkpoint read as the template's (FSQ levels...)
    files = list_checkpoints(list(paths))
    yield SeriesProgress(0, len(files) + 1, f"loading {len(files)} checkpoints…")
    series = open_series(files, **load_options)
    check()
    total = len(series.entries) + 1
    yield SeriesProgress(1, total, f"{len(series.entries)} checkpoints ordered by {series.order}")
    usage, note = None, ""
    if features:
        base = (template or AuditSpec(series.entries[0].path)).replace(features=tuple(Path(f) for f in features))
        try:
            open_features(base, series.entries[0].quantizer)
        except RvqViewerError as exc:
            if not features_optional:
                raise
            note = f"no usage per step: the features do not fit the series ({exc})"
        else:
            def usage(quantizer: Quantizer) -> list[np.ndarray]:
                return usage_counts(base, quantizer, should_stop)
    report = EventsReport(series.order, series.steps, paths=[str(e.path) for e in series.entries])
    for found in iter_findings(series, usage):
        check()
        report.summaries.extend(found.summaries)
        report.events.extend(found.events)
        yield SeriesProgress(found.index + 2, total, f"events up to step {found.step}: {len(report.events):,}")
    yield SeriesOutcome(series, report, note)


def series_events(paths: list[str | Path], features: list[str | Path] | None = None,
                  template: AuditSpec | None = None, progress: Callable[[int, int], None] | None = None,
                  **load_options) -> tuple[Series, EventsReport]:
    """`iter_series` to the end; `progress(done, total)` after each step."""
    for item in iter_series(paths, features, template, **load_options):
        if isinstance(item, SeriesOutcome):
            return item.series, item.report
        if progress is not None:
            progress(item.done, item.total)
    raise AssertionError("iter_series ended without an outcome")
