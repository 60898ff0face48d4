"""Work behind the Compare window and the HTML export, off the GUI thread. Qt-free.

`compare_job` audits two sides (A and B: two checkpoints, or one checkpoint on two feature sets),
diagnoses both and runs `compare.compare`; it yields `CompareProgress` now and then and returns a
`CompareOutcome`. `html_report_job` writes what `rvq-viewer report` writes: it gathers the pair
statistics (the second pass the CLI makes unless `--no-pairs`), diagnoses with them and writes the
self-contained HTML atomically.

Every job takes a `threading.Event` first (set = stop), as `gui.jobs` does.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from ..audit import AuditResult, build_result, iter_audit, resolve_device
from ..compare import Comparison, compare
from ..core import Quantizer
from ..errors import CancelledError, LoadError
from ..io import FeatureSource, load_quantizer

PROGRESS_INTERVAL = 0.1   # s between progress reports from the worker


def _check(cancel: threading.Event) -> None:
    if cancel.is_set():
        raise CancelledError("cancelled")


def same_path(a: Path | str, b: Path | str) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return str(a) == str(b)


def same_paths(a: list, b: list) -> bool:
    return len(a) == len(b) and all(same_path(x, y) for x, y in zip(a, b))


@dataclass
class CompareSpec:
    """What to compare. `features_b` empty means B is audited on A's features."""

    checkpoint_a: Path
    features_a: list[Path]
    checkpoint_b: Path
    features_b: list[Path] = field(default_factory=list)
    device: str = "auto"
    chunk_frames: int = 16384

    def __post_init__(self):
        self.checkpoint_a = Path(self.checkpoint_a)
        self.checkpoint_b = Path(self.checkpoint_b)
        self.features_a = [Path(p) for p in self.features_a]
        self.features_b = [Path(p) for p in self.features_b]

    @property
    def effective_features_b(self) -> list[Path]:
        return self.features_b or self.features_a

    @property
    def same_checkpoint(self) -> bool:
        return same_path(self.checkpoint_a, self.checkpoint_b)

    @property
    def same_features(self) -> bool:
        return same_paths(self.features_a, self.effective_features_b)

    def labels(self) -> tuple[str, str]:
        """Short names for the two sides: what differs between them, disambiguated by folder."""
        ca, cb = _names([self.checkpoint_a], [self.checkpoint_b])
        fa, fb = _names(self.features_a, self.effective_features_b)
        if self.same_checkpoint:
            return f"{ca} on {fa}", f"{cb} on {fb}"
        if self.same_features:
            return ca, cb
        return f"{ca} on {fa}", f"{cb} on {fb}"


def _describe(paths: list[Path], parents: bool) -> str:
    if not paths:
        return "(no features)"
    first = paths[0]
    name = f"{first.parent.name}/{first.name}" if parents and first.parent.name else first.name
    return name + (f" +{len(paths) - 1}" if len(paths) > 1 else "")


def _names(a: list[Path], b: list[Path]) -> tuple[str, str]:
    na, nb = _describe(a, False), _describe(b, False)
    if na == nb and not same_paths(a, b):
        na, nb = _describe(a, True), _describe(b, True)
    return na, nb


@dataclass
class Side:
    """One audited side of a comparison (or the main window's audit, for the HTML export)."""

    checkpoint: Path
    features: list[Path]
    quantizer: Quantizer
    source: FeatureSource | None
    result: AuditResult | None = None
    verdicts: list | None = None
    diagnosis_error: str = ""
    label: str = ""

    def matches(self, checkpoint, features) -> bool:
        return same_path(self.checkpoint, checkpoint) and same_paths(self.features, list(features))


@dataclass
class CompareProgress:
    stage: str          # "load", "audit A", "audit B", "diagnose", "compare"
    fraction: float     # 0..1 of the whole job
    text: str


@dataclass
class CompareOutcome:
    spec: CompareSpec
    a: Side
    b: Side
    comparison: Comparison
    seconds: float = 0.0


def diagnose_side(side: Side, pairs=None) -> tuple[list | None, str]:
    """The side's verdicts (as `rvq-viewer audit` gives them); a failing rule costs the verdicts only."""
    try:
        from ..diagnosis import diagnose
        return diagnose(side.result, side.quantizer, pairs), ""
    except Exception as exc:  # noqa: BLE001 - shown as a note; the numbers stay
        return None, f"diagnosis failed: {type(exc).__name__}: {exc}"


def open_source(quantizer: Quantizer, features: list[Path], chunk_frames: int) -> FeatureSource:
    if not features:
        raise LoadError("no feature files to audit on: choose features")
    return FeatureSource(list(features), quantizer.dim, chunk_frames=chunk_frames,
                         frame_stride=quantizer.frame_stride)


def compare_job(cancel: threading.Event, spec: CompareSpec, reuse_a: Side | None = None
                ) -> Iterator[CompareProgress]:
    """Audit A (unless `reuse_a` carries its complete result) and B, diagnose both, compare them.

    Yields `CompareProgress` at most every `PROGRESS_INTERVAL` s; returns a `CompareOutcome`.
    B's checkpoint, when it is A's, is the very same `Quantizer` (so `compare` calls it "features").
    """
    t0 = time.perf_counter()
    yield CompareProgress("load", 0.0, "loading…")
    if reuse_a is not None and reuse_a.matches(spec.checkpoint_a, spec.features_a):
        a = reuse_a
        if a.source is None:
            a.source = open_source(a.quantizer, a.features, spec.chunk_frames)
    else:
        qa = load_quantizer(spec.checkpoint_a)
        _check(cancel)
        a = Side(spec.checkpoint_a, list(spec.features_a), qa, open_source(qa, spec.features_a, spec.chunk_frames))
    _check(cancel)
    qb = a.quantizer if spec.same_checkpoint else load_quantizer(spec.checkpoint_b)
    _check(cancel)
    features_b = spec.effective_features_b
    source_b = a.source if spec.same_features and qb.dim == a.quantizer.dim else \
        open_source(qb, features_b, spec.chunk_frames)
    b = Side(spec.checkpoint_b, list(features_b), qb, source_b)
    a.label, b.label = spec.labels()

    need_a = a.result is None or not a.result.complete
    total_a = a.source.total_frames() if need_a else 0
    total_b = b.source.total_frames()
    _check(cancel)
    grand = max(1, total_a + total_b)
    last = [0.0]
    pending: list[CompareProgress] = []

    def reporter(stage: str, offset: int):
        def report(done: int, total: int | None) -> None:
            now = time.perf_counter()
            if now - last[0] >= PROGRESS_INTERVAL:
                last[0] = now
                frac = 0.02 + 0.83 * (offset + done) / grand
                pending.append(CompareProgress(stage, frac, f"{stage}: {done:,} / {total or 0:,} frames"))
        return report

    # Progress is collected by `report` (throttled) and yielded between chunks.
    for stage, side, offset in (("audit A", a, 0), ("audit B", b, total_a)):
        if side is a and not need_a:
            continue
        yield from _audit_yielding(cancel, side, spec.device, reporter(stage, offset), pending)
        side.verdicts, side.diagnosis_error = None, ""
    _check(cancel)
    yield CompareProgress("diagnose", 0.86, "diagnosing…")
    if a.verdicts is None and not a.diagnosis_error:
        a.verdicts, a.diagnosis_error = diagnose_side(a)
    b.verdicts, b.diagnosis_error = diagnose_side(b)
    _check(cancel)
    yield CompareProgress("compare", 0.9, "matching codes and fitting the joint projection…")
    comparison = compare(a.result, b.result, a.quantizer, b.quantizer, a.label, b.label, should_stop=cancel.is_set)
    _check(cancel)
    return CompareOutcome(spec, a, b, comparison, time.perf_counter() - t0)


def _audit_yielding(cancel, side: Side, device: str, report, pending: list) -> Iterator[CompareProgress]:
    dev = resolve_device(device)
    progress = None
    with contextlib.closing(iter_audit(side.quantizer, side.source, dev)) as steps:
        for progress in steps:
            _check(cancel)
            report(progress.frames_done, progress.frames_total)
            while pending:
                yield pending.pop(0)
    if progress is None:
        raise LoadError("no frames in the feature files", side.features[0] if side.features else None)
    side.result = build_result(progress.accumulator, side.quantizer, complete=True,
                               sources=[str(p) for p in side.source.files])


# --- HTML report --------------------------------------------------------------------------------------

def html_path(path: str | Path) -> Path:
    """The report's file name, with .html added when it has neither .html nor .htm."""
    path = Path(path)
    return path if path.suffix.lower() in (".html", ".htm") else path.with_name(path.name + ".html")


def html_report_job(cancel: threading.Event, path: str | Path, a: Side, comparison: Comparison | None = None,
                    b: Side | None = None, device: str = "auto", pairs: bool = True,
                    title: str | None = None) -> Path:
    """Write the report `rvq-viewer report` writes for side A (and the comparison with B, if given).

    With `pairs` (the CLI's default) one more pass over each side's features gathers the pair
    statistics, and the verdicts are diagnosed again with them (adding stage redundancy and the input
    rank reference); without it, or without features, the side's own verdicts are used.
    """
    from ..diagnosis import gather_pairs
    from ..report import write_html

    if a.result is None:
        raise LoadError("no audit to report on yet")

    def verdicts_of(side: Side):
        side_pairs = None
        if pairs and side.source is None and side.features:
            side.source = open_source(side.quantizer, side.features, 16384)
        if pairs and side.source is not None and side.result is not None:
            side_pairs = gather_pairs(side.quantizer, side.source, device, should_stop=cancel.is_set)
            _check(cancel)
        if side_pairs is None and side.verdicts is not None:
            return side.verdicts, None
        verdicts, error = diagnose_side(side, side_pairs)
        if verdicts is None:
            raise LoadError(error)
        return verdicts, side_pairs

    verdicts_a, pairs_a = verdicts_of(a)
    verdicts_b = None
    if comparison is not None and b is not None:
        verdicts_b, _ = verdicts_of(b)
    _check(cancel)
    return write_html(html_path(path), a.result, a.quantizer, verdicts_a, comparison, pairs_a, title, verdicts_b)
