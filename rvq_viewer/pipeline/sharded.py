"""The audit of a corpus cut into shards, run on an executor and merged in shard order.

    end = yield from iter_sharded(spec, quantizer, source, executor)   # AuditProgress as shards finish

The shards are planned from the files' headers (`shards.plan_shards`), submitted a window at a time
(at most `WINDOW_PER_WORKER` per worker ahead of the merge) and merged strictly in shard order: the
result does not depend on which shard finished first, and each shard is merged once, however often a
worker had to re-run it. A result is fetched when it is next to merge, so on Dask the ones waiting for
an earlier shard stay on their workers and the client holds one accumulator. Each yield
carries the accumulator merged so far, as the local audit's progress does. Stopping (`should_stop`) or
closing the generator cancels every future still pending.

`pipeline.audit.iter_audit_run(spec, executor=...)` runs this and builds the outcome, as it does for
the local audit.
"""

from __future__ import annotations

import math
import queue
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Generator

from ..analysis.audit import AuditAccumulator, AuditProgress, new_accumulator
from ..io import FeatureSource
from ..quant import Quantizer
from .executors import ShardJob, ShardResult, backend_for
from .shards import Shard, ShardReport, plan_shards, sequences
from .spec import AuditSpec

# Shards per worker: enough waves that the last, partly idle one is short and a dead worker loses little,
# few enough that the fixed cost of a shard does not show (benchmarks/scale.py --dask: ~0.6 s at D=768,
# mostly sending back each layer's D x D input moments, against ~9 s of work per core in MIN_SHARD_CHUNKS
# chunks and ~5 min in MAX_SHARD_FRAMES; docs/scaling.md).
SHARDS_PER_WORKER = 8
MIN_SHARD_CHUNKS = 4
MAX_SHARD_FRAMES = 1 << 21
# Shards submitted ahead of the next one to merge, per worker.
WINDOW_PER_WORKER = 2
POLL_SECONDS = 0.05


@dataclass
class ShardedEnd:
    """What the sharded run gathered; `iter_audit_run` turns it into an `AuditOutcome`."""

    accumulator: AuditAccumulator
    complete: bool
    frames_read: int
    frames_total: int
    devices: list[str]
    report: ShardReport
    warnings: list[str] = field(default_factory=list)


def shard_frames_for(total: int, workers: int, chunk_frames: int) -> int:
    """Frames per shard: about SHARDS_PER_WORKER shards per worker, between MIN_SHARD_CHUNKS chunks and
    MAX_SHARD_FRAMES (rounded up to whole chunks by the plan)."""
    wanted = math.ceil(total / max(1, SHARDS_PER_WORKER * workers))
    return max(MIN_SHARD_CHUNKS * chunk_frames, min(MAX_SHARD_FRAMES, wanted))


def named_paths(spec: AuditSpec) -> set[Path]:
    """The feature files the user named directly (an error there fails the audit, as locally)."""
    return {p for p in spec.features if p.suffix.lower() != ".txt" and not p.is_dir()}


def iter_sharded(spec: AuditSpec, quantizer: Quantizer, source: FeatureSource, executor,
                 should_stop: Callable[[], bool] | None = None, shard_frames: int | None = None
                 ) -> Generator[AuditProgress, None, ShardedEnd]:
    backend = backend_for(executor)
    workers = backend.workers()
    found = list(sequences(source))
    total = sum(length for *_, length in found)
    size = shard_frames if shard_frames is not None else shard_frames_for(total, workers, source.chunk_frames)
    shards = plan_shards(source, size, named_paths(spec), found)
    report = ShardReport(len(shards), total, backend.describe())
    acc = new_accumulator(quantizer, spec.pairs)
    end = ShardedEnd(acc, False, 0, total, [], report)
    if not shards:
        end.complete = True
        return end
    yield from _run(backend, shards, ShardJob(spec.device, spec.batch, spec.pairs), quantizer, spec, end,
                    max(2, WINDOW_PER_WORKER * workers), should_stop)
    end.warnings = report.warnings()
    return end


def _run(backend, shards: list[Shard], job: ShardJob, quantizer: Quantizer, spec: AuditSpec, end: ShardedEnd,
         window: int, should_stop) -> Generator[AuditProgress, None, None]:
    """Submit, watch and merge. A finished shard's result is fetched only when it is next to merge, so
    on Dask the results waiting for an earlier shard stay on the workers that made them and the client
    holds one accumulator; a failed shard is reported as soon as it fails."""
    finished: "queue.SimpleQueue[int]" = queue.SimpleQueue()
    pending: dict[int, object] = {}            # submitted, not merged yet
    done: set[int] = set()                     # of those, finished
    submitted = merged = frames_finished = 0
    start = time.perf_counter()
    ref = backend.put(quantizer, spec)
    try:
        while merged < len(shards):
            while submitted < len(shards) and submitted - merged < window:
                future = backend.submit(ref, shards[submitted], job)
                pending[submitted] = future
                future.add_done_callback(lambda _f, i=submitted: finished.put(i))
                submitted += 1
            if should_stop is not None and should_stop():
                return
            try:
                index = finished.get(timeout=POLL_SECONDS)
            except queue.Empty:
                continue
            if index in done or index not in pending:    # reported twice
                continue
            done.add(index)
            if backend.failed(pending[index]):
                backend.result(pending[index], shards[index])   # raises its one-line error
            frames_finished += shards[index].frames
            while merged in done:
                _merge(end, backend.result(pending.pop(merged), shards[merged]))
                done.discard(merged)
                merged += 1
            end.report.merged = merged
            yield AuditProgress(frames_finished, end.frames_total, time.perf_counter() - start, end.accumulator)
        end.complete = True
    finally:
        for future in pending.values():
            future.cancel()
        backend.release(ref)


def _merge(end: ShardedEnd, result: ShardResult) -> None:
    end.accumulator.merge(result.accumulator)
    end.frames_read += result.frames
    if result.device not in end.devices:
        end.devices.append(result.device)
    end.report.workers[result.index] = result.worker
    end.report.skipped.extend((result.index, path, reason) for path, reason in result.skipped)
