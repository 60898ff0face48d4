"""Two audits side by side: two checkpoints on features, or one checkpoint on two feature sets.

Both sides run through the one audit chain (`iter_audit_run`), with the same statistics and rules, then
`analysis.compare.compare` matches their codes and fits one joint projection.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from ..analysis.audit import AuditProgress
from ..analysis.compare import Comparison, compare
from ..errors import CancelledError
from .audit import AuditOutcome, iter_audit_run, load
from .spec import AuditSpec

PROGRESS_INTERVAL = 0.1   # s between progress reports


def same_path(a: str | Path, b: str | Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).resolve() == Path(b).resolve()


def same_paths(a, b) -> bool:
    a, b = list(a), list(b)
    return len(a) == len(b) and all(same_path(x, y) for x, y in zip(a, b))


@dataclass
class CompareProgress:
    stage: str          # "load", "audit A", "audit B", "compare"
    fraction: float     # 0..1 of the whole job
    text: str


@dataclass
class CompareOutcome:
    a: AuditOutcome
    b: AuditOutcome
    comparison: Comparison
    seconds: float = 0.0


def iter_compare(spec_a: AuditSpec, spec_b: AuditSpec, labels: tuple[str, str] = ("A", "B"),
                 reuse_a: AuditOutcome | None = None, should_stop: Callable[[], bool] | None = None,
                 executor=None) -> Iterator[CompareProgress | CompareOutcome]:
    """Audit A (unless `reuse_a` is a complete outcome of an equal spec) and B, then compare them.

    Yields `CompareProgress` at most every PROGRESS_INTERVAL s and ends with a `CompareOutcome`. When B's
    checkpoint is A's, B is audited with the very same quantizer (so the comparison says "features").
    `should_stop` raises CancelledError between chunks and code-matching blocks. `executor` runs both
    audits in shards there (see `iter_audit_run`)."""
    t0 = time.perf_counter()

    def check() -> None:
        if should_stop is not None and should_stop():
            raise CancelledError("cancelled")

    yield CompareProgress("load", 0.0, "loading…")
    reuse = reuse_a is not None and reuse_a.complete and reuse_a.spec == spec_a
    quantizer_a = reuse_a.quantizer if reuse else load(spec_a)
    check()
    quantizer_b = quantizer_a if same_path(spec_a.checkpoint, spec_b.checkpoint) and spec_a.load == spec_b.load \
        else load(spec_b)
    check()
    outcomes: dict[str, AuditOutcome] = {"A": reuse_a} if reuse else {}
    last = 0.0
    runs = [(name, spec, q) for name, spec, q in (("A", spec_a, quantizer_a), ("B", spec_b, quantizer_b))
            if name not in outcomes]
    for position, (name, spec, quantizer) in enumerate(runs):
        for item in iter_audit_run(spec, quantizer, executor=executor):
            check()
            if isinstance(item, AuditOutcome):
                outcomes[name] = item
                continue
            now = time.perf_counter()
            if now - last >= PROGRESS_INTERVAL:
                last = now
                yield _progress(f"audit {name}", item, position, len(runs))
    yield CompareProgress("compare", 0.9, "matching codes and fitting the joint projection…")
    a, b = outcomes["A"], outcomes["B"]
    comparison = compare(a.result, b.result, a.quantizer, b.quantizer, labels[0], labels[1], should_stop=should_stop)
    check()
    yield CompareOutcome(a, b, comparison, time.perf_counter() - t0)


def _progress(stage: str, item: AuditProgress, position: int, runs: int) -> CompareProgress:
    share = item.fraction if item.fraction is not None else 0.0
    fraction = 0.02 + 0.86 * (position + share) / max(1, runs)
    return CompareProgress(stage, fraction, f"{stage}: {item.frames_done:,} / {item.frames_total or 0:,} frames")


def run_compare(spec_a: AuditSpec, spec_b: AuditSpec, labels: tuple[str, str] = ("A", "B"),
                progress: Callable[[CompareProgress], None] | None = None) -> CompareOutcome:
    for item in iter_compare(spec_a, spec_b, labels):
        if isinstance(item, CompareOutcome):
            return item
        if progress is not None:
            progress(item)
    raise AssertionError("iter_compare ended without an outcome")
