"""The app's audit: the pipeline's run, turned into `Snapshot`s for the views, off the GUI thread."""

from __future__ import annotations

import threading
import time
from typing import Iterator

from ..analysis.diagnosis import streaming_verdicts
from ..pipeline import AuditOutcome, iter_audit_run, partial_result
from ..errors import RvqViewerError
from ..pipeline.cluster import dask_client
from .session import Session, Snapshot

SNAPSHOT_INTERVAL = 0.08  # s between partial snapshots built in the audit thread (the GUI draws at 10 Hz)


def audit_stream(cancel: threading.Event, session: Session, device: str | None = None,
                 interval: float = SNAPSHOT_INTERVAL, cluster: str = "") -> Iterator[Snapshot]:
    """Yield a `Snapshot` at most every `interval` s while the audit runs, and a last one at the end
    (complete, with the diagnosis; or cancelled). `cluster` (a Dask address: local:N or tcp://host:port)
    audits in shards there, the snapshots coming as shards finish; "" audits in this process.

    Snapshots are built here, off the GUI thread, from the live accumulator (nothing else touches it
    while this generator is suspended), so the GUI thread only draws."""
    spec = session.spec if device is None else session.spec.replace(device=device)
    if not cluster:
        yield from _stream(cancel, session, spec, interval, None, spec.device)
        return
    try:
        with dask_client(cluster) as client:      # closed (with a local cluster) when the job ends
            yield from _stream(cancel, session, spec, interval, client, f"dask {cluster}")
    except RvqViewerError as exc:                 # the command line's option name means nothing here
        raise type(exc)(str(exc).replace("--dask ", "Dask cluster ", 1)) from None


def _stream(cancel: threading.Event, session: Session, spec, interval: float, executor,
            where: str) -> Iterator[Snapshot]:
    sources = [str(p) for p in session.source.files]
    last = 0.0
    for item in iter_audit_run(spec, session.quantizer, session.source, should_stop=cancel.is_set,
                               executor=executor):
        if isinstance(item, AuditOutcome):
            yield final_snapshot(item, where if executor is not None else None)
            return
        now = time.perf_counter()
        if now - last >= interval:
            result = partial_result(item, session.quantizer, sources)
            snap = Snapshot(result=result, frames_done=item.frames_done, frames_total=item.frames_total,
                            elapsed=item.elapsed, complete=False, device=where,
                            verdicts=streaming_verdicts(result))
            last = time.perf_counter()
            # A snapshot of a huge quantizer (K = 65,536 x 8 layers) costs tens of ms of GIL-holding work:
            # never spend more than ~1/4 of the time on them.
            interval = max(interval, 4 * (last - now))
            yield snap


def final_snapshot(outcome: AuditOutcome, where: str | None = None) -> Snapshot:
    result = outcome.result
    final = outcome.complete and outcome.verdicts is not None
    verdicts = outcome.verdicts if final else streaming_verdicts(result)
    return Snapshot(result=result, frames_done=outcome.frames_read, frames_total=outcome.frames_total,
                    elapsed=outcome.elapsed, complete=outcome.complete, device=where or outcome.device,
                    cancelled=not outcome.complete, verdicts=verdicts, diagnosis_error=outcome.diagnosis_error,
                    final=final, outcome=outcome)
