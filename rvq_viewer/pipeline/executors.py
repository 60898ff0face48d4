"""Where a sharded audit's shards run: any `concurrent.futures.Executor`, or a Dask `distributed.Client`.

A backend sends the quantizer to the workers once (`put`), submits one task per shard (`submit`: the
shard, a few options and that reference), tells a failed task without fetching its result (`failed`) and
turns a finished task into a `ShardResult` or one line of error (`result`). The task, `audit_shard`, is
the engine's own audit of the shard's chunks.

- Dask: the quantizer is scattered to every worker once; a worker that dies mid-shard has its shard
  re-run elsewhere by the scheduler (up to `distributed.scheduler.allowed-failures` times).
- A plain Executor: the quantizer travels as a `QuantizerRef`. In this process (threads) it is the object
  itself; pickled (processes) it is the checkpoint's path, load options and a fingerprint of the
  codebooks, and each worker process loads it once and checks the fingerprint.
"""

from __future__ import annotations

import concurrent.futures
import concurrent.futures.process
import hashlib
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..analysis.audit import AuditAccumulator, audit_source, new_accumulator
from ..errors import LoadError, RvqViewerError
from ..io import load_quantizer
from ..quant import Quantizer
from ..runtime import resolve_device, usable_cpus
from .shards import Shard, open_shard
from .spec import AuditSpec, LoadOptions


@dataclass(frozen=True)
class ShardJob:
    """What every shard's task is asked, besides its shard."""

    device: str = "auto"
    batch: int | None = None
    pairs: bool = True


@dataclass
class ShardResult:
    index: int
    accumulator: AuditAccumulator
    frames: int                                   # input frames read
    device: str
    worker: str
    seconds: float
    skipped: list[tuple[str, str]] = field(default_factory=list)   # (path, reason) skipped by the worker


# --- the quantizer, once per worker --------------------------------------------------------------------
def fingerprint(quantizer: Quantizer) -> str:
    digest = hashlib.sha1(f"{quantizer.format}:{quantizer.codebook_sizes}:{quantizer.dim}".encode())
    for table in quantizer.codebooks:
        digest.update(table.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


_LOADED: dict[tuple, Quantizer] = {}
_LOADED_LOCK = threading.Lock()


class QuantizerRef:
    """The audit's quantizer for a plain Executor's tasks, loaded at most once per worker process."""

    def __init__(self, quantizer: Quantizer, checkpoint: str | Path, load: LoadOptions):
        self.quantizer = quantizer
        self.key = (str(checkpoint), load, fingerprint(quantizer))

    def __getstate__(self):
        return {"quantizer": None, "key": self.key}

    def get(self) -> Quantizer:
        if self.quantizer is None:
            with _LOADED_LOCK:
                if self.key not in _LOADED:
                    _LOADED[self.key] = _load_checked(*self.key)
            self.quantizer = _LOADED[self.key]
        return self.quantizer


def _load_checked(checkpoint: str, load: LoadOptions, expected: str) -> Quantizer:
    if not os.path.lexists(checkpoint):
        raise LoadError(f"not found on {worker_name()}: with a plain executor each worker process loads the "
                        "checkpoint, which must be at the same path there (a Dask client sends it instead)",
                        checkpoint)
    quantizer = load_quantizer(checkpoint, **load.kwargs())
    if fingerprint(quantizer) != expected:
        raise LoadError(f"differs on {worker_name()} from the quantizer the audit was started with "
                        "(changed on disk, or another file at that path)", checkpoint)
    return quantizer


# --- the task ------------------------------------------------------------------------------------------
def worker_name() -> str:
    """This process as a message names it: the Dask worker's address, or host and pid."""
    if "distributed" in sys.modules:
        try:
            from distributed import get_worker
            return f"Dask worker {get_worker().address}"
        except (ImportError, ValueError):
            pass
    return f"worker {socket.gethostname()}:{os.getpid()}"


def audit_shard(quantizer: "Quantizer | QuantizerRef", shard: Shard, job: ShardJob) -> ShardResult:
    """Audit one shard into an accumulator, on the worker it runs on."""
    start = time.perf_counter()
    quantizer = quantizer.get() if isinstance(quantizer, QuantizerRef) else quantizer
    where = worker_name()
    try:
        device = resolve_device(job.device)
    except (ValueError, RuntimeError) as exc:
        raise RvqViewerError(f"device {job.device} on {where}: {exc}") from None
    source, skipped = open_shard(shard, where)
    if source is None:
        acc, frames = new_accumulator(quantizer, job.pairs), 0
    else:
        try:
            acc, frames = audit_source(quantizer, source, device, batch=job.batch, pairs=job.pairs)
        except LoadError as exc:
            raise _counted_from_the_file(exc, source) from None
    return ShardResult(shard.index, acc, frames, str(device), where, time.perf_counter() - start,
                       [(str(path), reason) for path, reason in skipped])


_NAN = "holds NaN or infinite values"


def _counted_from_the_file(exc: LoadError, source) -> LoadError:
    """The reader counts frames from the shard's window; say the frame as the local audit does."""
    if exc.path is None or _NAN not in exc.reason:
        return exc
    found = source.first_bad_frame(exc.path)
    if found is None:
        return exc
    name, frame = found
    return LoadError(f"{name + ': ' if name else ''}frame {frame} {_NAN}", exc.path)


# --- backends ------------------------------------------------------------------------------------------
class FuturesBackend:
    """A `concurrent.futures.Executor` (threads, processes, or anything with submit)."""

    def __init__(self, executor: concurrent.futures.Executor):
        self.executor = executor

    def workers(self) -> int:
        return int(getattr(self.executor, "_max_workers", 0) or usable_cpus())

    def describe(self) -> str:
        return f"{type(self.executor).__name__} ({self.workers()} workers)"

    def put(self, quantizer: Quantizer, spec: AuditSpec):
        return QuantizerRef(quantizer, spec.checkpoint, spec.load)

    def submit(self, ref, shard: Shard, job: ShardJob):
        return self.executor.submit(audit_shard, ref, shard, job)

    def failed(self, future) -> bool:
        return future.done() and not future.cancelled() and future.exception() is not None

    def result(self, future, shard: Shard) -> ShardResult:
        try:
            return future.result()
        except concurrent.futures.process.BrokenProcessPool as exc:
            raise RvqViewerError(f"{shard.describe()}: a worker process died ({exc}); a process pool "
                                 "cannot re-run its shards (a Dask cluster can)") from None

    def release(self, ref) -> None:
        pass


class DaskBackend:
    """A Dask `distributed.Client`: the quantizer scattered once, shards re-run when a worker dies."""

    def __init__(self, client):
        self.client = client

    def workers(self) -> int:
        n = len(self.client.scheduler_info().get("workers", {}))
        if n == 0:
            try:
                self.client.wait_for_workers(1, timeout=60)
            except Exception:  # noqa: BLE001 - distributed raises its own TimeoutError types
                raise RvqViewerError("the Dask cluster has no workers (none joined within 60 s)") from None
            n = len(self.client.scheduler_info().get("workers", {}))
        return n

    def describe(self) -> str:
        return f"Dask {self.client.scheduler.address} ({self.workers()} workers)"

    def put(self, quantizer: Quantizer, spec: AuditSpec):
        return self.client.scatter(quantizer, broadcast=True, hash=False)

    def submit(self, ref, shard: Shard, job: ShardJob):
        return self.client.submit(audit_shard, ref, shard, job, pure=False, key=f"rvq-shard-{shard.index}-{id(ref)}")

    def failed(self, future) -> bool:
        return future.status == "error"            # known on the client without fetching anything

    def result(self, future, shard: Shard) -> ShardResult:
        from distributed.scheduler import KilledWorker
        try:
            return future.result()
        except KilledWorker:
            raise RvqViewerError(f"{shard.describe()}: the workers running it died too many times "
                                 "(distributed.scheduler.allowed-failures); out of memory?") from None
        except concurrent.futures.CancelledError:
            raise RvqViewerError(f"{shard.describe()}: cancelled by the Dask cluster (did it shut down?)") from None

    def release(self, ref) -> None:
        try:
            ref.release()
        except Exception:  # noqa: BLE001 - a closed client has nothing left to release
            pass


def backend_for(executor):
    """The backend for a Dask client or a `concurrent.futures.Executor`."""
    distributed = sys.modules.get("distributed")
    if distributed is not None and isinstance(executor, distributed.Client):
        return DaskBackend(executor)
    if isinstance(executor, concurrent.futures.Executor) or callable(getattr(executor, "submit", None)):
        return FuturesBackend(executor)
    raise TypeError(f"executor: expected a distributed.Client or a concurrent.futures.Executor, "
                    f"not {type(executor).__name__}")
