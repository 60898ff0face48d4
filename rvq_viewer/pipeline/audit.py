"""The one audit chain: checkpoint -> quantizer -> feature source -> streamed audit -> result -> verdicts.

    for item in iter_audit_run(spec):          # AuditProgress after each chunk, an AuditOutcome last
        ...
    outcome = run_audit_spec(spec)             # the same, to the end
    outcome = run_audit_spec(spec, executor=client)   # the corpus in shards on a Dask client or an Executor

Every client (the CLI's `audit` and `report`, each of the app's jobs, the tests) runs its audit here, so
they read the same frames in the same chunks, gather the same statistics and apply the same rules.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from ..analysis.audit import AuditProgress, AuditResult, build_result, iter_audit, with_threshold
from ..analysis.diagnosis import Verdict, diagnose
from ..errors import LoadError, RvqViewerError
from ..io import FeatureSource, check_outputs, list_feature_files, load_quantizer
from ..quant import Quantizer
from ..runtime import resolve_device
from .shards import ShardReport
from .sharded import iter_sharded
from .spec import AuditSpec, LoadOptions


def load_checkpoint(path: str | Path, options: LoadOptions | None = None) -> Quantizer:
    """The quantizer in `path`, read as `options` say (a one-line LoadError when it cannot be)."""
    return load_quantizer(path, **(options or LoadOptions()).kwargs())


def load(spec: AuditSpec) -> Quantizer:
    """The spec's quantizer, with its EMA dead-code threshold where the spec sets one."""
    return with_threshold(load_checkpoint(spec.checkpoint, spec.load), spec.ema_threshold)


def open_features(spec: AuditSpec, quantizer: Quantizer) -> FeatureSource:
    """The spec's feature files as the quantizer reads them: the only place a FeatureSource is built."""
    if not spec.features:
        raise LoadError("no feature files to audit on: choose features")
    pack = quantizer.frame_stride == 1 if spec.pack is None else spec.pack
    return FeatureSource(list(spec.features), quantizer.dim, layout=spec.layout, chunk_frames=spec.chunk_frames,
                         frame_stride=quantizer.frame_stride, key=spec.key, pack=pack)


def device_of(spec: AuditSpec):
    try:
        return resolve_device(spec.device)
    except (ValueError, RuntimeError) as exc:
        raise RvqViewerError(f"device {spec.device}: {exc}") from None


def check_spec_outputs(outputs: list[tuple[str, str | Path | None]], specs: list[AuditSpec],
                       extra_inputs: list[str | Path] = ()) -> None:
    """Refuse, before any work, an output that is one of the specs' inputs (a checkpoint, a feature
    file or a file found in a feature folder) or that two outputs share."""
    inputs: list[Path] = [Path(p) for p in extra_inputs]
    for spec in specs:
        inputs.extend(spec.read_paths())
        if spec.features:
            inputs.extend(list_feature_files(list(spec.features), skipped=[]))
    check_outputs(outputs, inputs)


@dataclass
class AuditOutcome:
    """A finished (or stopped) audit: the numbers, the verdicts and what was read."""

    spec: AuditSpec
    quantizer: Quantizer
    source: FeatureSource
    result: AuditResult
    verdicts: list[Verdict] | None        # None: not asked for, or the audit was stopped early
    device: str
    elapsed: float
    complete: bool = True
    diagnosis_error: str = ""
    warnings: list[str] = field(default_factory=list)
    frames_read: int = 0                  # input frames read (before a quantizer's frame stride)
    frames_total: int | None = None       # input frames in the files
    shards: ShardReport | None = None     # a sharded audit: its shards, where they ran, what workers skipped

    @property
    def cancelled(self) -> bool:
        return not self.complete


def iter_audit_run(spec: AuditSpec, quantizer: Quantizer | None = None, source: FeatureSource | None = None,
                   should_stop: Callable[[], bool] | None = None, executor=None,
                   shard_frames: int | None = None) -> Iterator[AuditProgress | AuditOutcome]:
    """Run the audit the spec describes. Yields an `AuditProgress` after each chunk (its accumulator
    grows; `partial_result` turns it into numbers) and ends with one `AuditOutcome`.

    `quantizer` and `source` reuse what a client has already loaded for this spec. `should_stop` is asked
    after each chunk; when it says so the audit ends with an incomplete outcome and no verdicts.
    `executor` (a `distributed.Client` or a `concurrent.futures.Executor`) audits the corpus in shards
    of about `shard_frames` frames there, with the same result (`pipeline.sharded`); progress then comes
    as shards finish. Bad input raises a one-line `RvqViewerError` naming the file."""
    quantizer = load(spec) if quantizer is None else with_threshold(quantizer, spec.ema_threshold)
    source = source if source is not None else open_features(spec, quantizer)
    start = time.perf_counter()
    if executor is not None:
        end = yield from iter_sharded(spec, quantizer, source, executor, should_stop, shard_frames)
        if end.frames_total == 0:
            raise LoadError("no frames in the feature files", spec.features[0] if spec.features else None)
        yield _outcome(spec, quantizer, source, end.accumulator, end.complete, ", ".join(end.devices) or spec.device,
                       start, end.frames_read, end.frames_total, end.warnings, end.report)
        return
    device = device_of(spec)
    progress = None
    stopped = False
    for progress in iter_audit(quantizer, source, device, batch=spec.batch, pairs=spec.pairs):
        yield progress
        if should_stop is not None and should_stop():
            stopped = True
            break
    if progress is None:
        raise LoadError("no frames in the feature files", spec.features[0] if spec.features else None)
    yield _outcome(spec, quantizer, source, progress.accumulator, not stopped, str(device), start,
                   progress.frames_done, progress.frames_total)


def _outcome(spec: AuditSpec, quantizer: Quantizer, source: FeatureSource, accumulator, complete: bool,
             device: str, start: float, frames_read: int, frames_total: int | None, warnings: list[str] = (),
             shards: ShardReport | None = None) -> AuditOutcome:
    """The numbers, and the verdicts of a complete audit: the same for the local and the sharded run."""
    result = build_result(accumulator, quantizer, complete=complete, sources=[str(p) for p in source.files])
    verdicts, error = None, ""
    if complete and spec.verdicts:
        verdicts, error = _diagnose(result, quantizer)
    return AuditOutcome(spec, quantizer, source, result, verdicts, device, time.perf_counter() - start, complete,
                        error, source.warnings() + list(warnings), frames_read, frames_total, shards)


def _diagnose(result: AuditResult, quantizer: Quantizer) -> tuple[list[Verdict] | None, str]:
    """The verdicts; a rule that fails on an odd checkpoint costs the verdicts, not the numbers."""
    try:
        return diagnose(result, quantizer), ""
    except Exception as exc:  # noqa: BLE001 - reported as one line beside the numbers
        return None, f"diagnosis failed: {type(exc).__name__}: {exc}"


def partial_result(progress: AuditProgress, quantizer: Quantizer, sources: list[str] | None = None) -> AuditResult:
    """The numbers so far of a running audit (for a live view)."""
    return build_result(progress.accumulator, quantizer, complete=False, sources=sources)


def run_audit_spec(spec: AuditSpec, progress: Callable[[AuditProgress], None] | None = None,
                   quantizer: Quantizer | None = None, source: FeatureSource | None = None,
                   executor=None, shard_frames: int | None = None) -> AuditOutcome:
    """`iter_audit_run` to the end; `progress` is called after each chunk (each shard with `executor`)."""
    for item in iter_audit_run(spec, quantizer, source, executor=executor, shard_frames=shard_frames):
        if isinstance(item, AuditOutcome):
            return item
        if progress is not None:
            progress(item)
    raise AssertionError("iter_audit_run ended without an outcome")
