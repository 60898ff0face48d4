"""Work behind the Compare window and the HTML export, off the GUI thread. Qt-free.

`compare_job` runs the pipeline's comparison (two checkpoints, or one checkpoint on two feature sets)
and hands the window a `CompareOutcome`; `html_report_job` writes what `rvq-viewer report` writes, from
audits that already gathered every statistic (the pipeline gathers the layer pairs in the audit pass).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from ..analysis.compare import Comparison
from ..errors import CancelledError, LoadError
from ..pipeline import AuditOutcome, AuditSpec, CompareProgress, iter_compare, same_path, same_paths
from ..pipeline import CompareOutcome as PipelineOutcome
from ..report import iter_write_report


@dataclass
class CompareSpec:
    """What to compare. `features_b` empty means B is audited on A's features."""

    checkpoint_a: Path
    features_a: list[Path]
    checkpoint_b: Path
    features_b: list[Path] = field(default_factory=list)
    device: str = "auto"

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

    def audit_specs(self, template: AuditSpec | None = None) -> tuple[AuditSpec, AuditSpec]:
        """The two audits, with the reading options of `template` (the main window's)."""
        base = (template or AuditSpec(self.checkpoint_a)).replace(device=self.device)
        return (base.replace(checkpoint=self.checkpoint_a, features=tuple(self.features_a)),
                base.replace(checkpoint=self.checkpoint_b, features=tuple(self.effective_features_b)))

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
    """One audited side of a comparison: the pipeline's outcome, and its label."""

    outcome: AuditOutcome
    label: str = ""

    @property
    def checkpoint(self) -> Path:
        return self.outcome.spec.checkpoint

    @property
    def features(self) -> list[Path]:
        return list(self.outcome.spec.features)

    @property
    def quantizer(self):
        return self.outcome.quantizer

    @property
    def result(self):
        return self.outcome.result

    @property
    def verdicts(self):
        return self.outcome.verdicts

    @property
    def diagnosis_error(self) -> str:
        return self.outcome.diagnosis_error

    def matches(self, checkpoint, features) -> bool:
        return same_path(self.checkpoint, checkpoint) and same_paths(self.features, list(features))


@dataclass
class CompareOutcome:
    spec: CompareSpec
    a: Side
    b: Side
    comparison: Comparison
    seconds: float = 0.0

    @property
    def pipeline(self) -> PipelineOutcome:
        return PipelineOutcome(self.a.outcome, self.b.outcome, self.comparison, self.seconds)


def compare_job(cancel: threading.Event, spec: CompareSpec, reuse_a: AuditOutcome | None = None,
                template: AuditSpec | None = None) -> Iterator[CompareProgress]:
    """Audit A (unless `reuse_a` is the complete audit of the same spec) and B, compare them.

    Yields the pipeline's `CompareProgress`; returns a `CompareOutcome`."""
    spec_a, spec_b = spec.audit_specs(template)
    labels = spec.labels()
    for item in iter_compare(spec_a, spec_b, labels, reuse_a, should_stop=cancel.is_set):
        if isinstance(item, PipelineOutcome):
            return CompareOutcome(spec, Side(item.a, labels[0]), Side(item.b, labels[1]), item.comparison,
                                  item.seconds)
        yield item
    raise CancelledError("cancelled")


# --- HTML report --------------------------------------------------------------------------------------

def html_path(path: str | Path) -> Path:
    """The report's file name, with .html added when it has neither .html nor .htm."""
    path = Path(path)
    return path if path.suffix.lower() in (".html", ".htm") else path.with_name(path.name + ".html")


def html_report_job(cancel: threading.Event, path: str | Path, a: AuditOutcome | None,
                    compared: CompareOutcome | None = None, title: str | None = None) -> Path:
    """Write the report `rvq-viewer report` writes for audit A (and its comparison with B, if given)."""
    if a is None or not a.complete:
        raise LoadError("no complete audit to report on yet")
    if a.verdicts is None:
        raise LoadError(a.diagnosis_error or "the audit has no verdicts")
    steps = iter_write_report(html_path(path), a, compared.pipeline if compared is not None else None, title)
    while True:
        if cancel.is_set():
            raise CancelledError("cancelled")
        try:
            step = next(steps)
        except StopIteration as done:
            return done.value
        yield step
