"""Opening and auditing, for the window: the worker jobs, the display timer, and what the state is told.

Data flows one way: files -> `open_jobs.open_job` (worker) -> `Session` -> `audit_jobs.audit_stream`
(worker) -> `Snapshot`s -> `AppState`. Workers only hand over finished objects; a 10 Hz timer gives the
newest snapshot to the state (ScopeFoundry's display timer), so a fast audit cannot flood the event loop.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from PySide6.QtCore import QObject, QTimer, Signal

from ..app.audit_jobs import audit_stream
from ..app.open_jobs import Opened, open_job
from ..app.session import Snapshot
from ..errors import RvqViewerError
from ..locations import demo_paths
from ..pipeline import AuditSpec, LoadOptions
from . import settings
from .state import AppState
from .workers import JobSlot

REDRAW_MS = 100


def error_text(exc: BaseException) -> str:
    """One line for the user: our errors say 'path: reason'; anything else gets its type."""
    if isinstance(exc, RvqViewerError):
        return str(exc)
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


class AuditController(QObject):
    """Runs the open and audit jobs of one window and keeps the `AppState` up to date."""

    status = Signal(str, int)            # a status-bar line and how long to show it (ms, 0: until replaced)
    progress = Signal(object)            # the Snapshot whose progress to show
    busy_changed = Signal()
    opened = Signal(object)              # the Opened of a successful open

    def __init__(self, state: AppState, parent: QObject | None = None):
        super().__init__(parent)
        self.state = state
        self.load_slot = JobSlot("load", self)
        self.audit_slot = JobSlot("audit", self)
        self._pending: Snapshot | None = None
        self.last_good: tuple | None = None    # (session, snapshot) of the last complete audit
        state.audit_finished.connect(self._finished)
        self.timer = QTimer(self)
        self.timer.setInterval(REDRAW_MS)
        self.timer.timeout.connect(self._tick)
        self.timer.start()
        self.load_slot.busy_changed.connect(lambda busy: self.busy_changed.emit())
        self.audit_slot.busy_changed.connect(lambda busy: self.busy_changed.emit())

    @property
    def pending(self) -> bool:
        return self._pending is not None

    def template(self) -> AuditSpec | None:
        """How the open session reads and audits (device included), for the next open."""
        session = self.state.session
        if session is None:
            return None
        return session.spec.replace(device=self.state.device)

    # --- opening ------------------------------------------------------------------------------------------
    def open(self, checkpoint: str | Path | None = None, features: list | None = None,
             paths: list | None = None, load: LoadOptions | None = None) -> None:
        """Open a checkpoint and/or features (see `open_jobs.open_job`); loading runs in a worker. `load`
        says how to read a new checkpoint (FSQ levels...); another checkpoint opened without it is read
        with none, features opened for the open one keep its options."""
        self.audit_slot.cancel()
        self.status.emit("Loading…", 0)
        template = self.template()
        if template is None and checkpoint is not None:
            template = AuditSpec(Path(checkpoint), device=self.state.device)
        if template is not None and (checkpoint is not None or load is not None):
            template = template.replace(load=load or LoadOptions())
        self.load_slot.start(
            open_job, Path(checkpoint) if checkpoint else None,
            [Path(f) for f in features] if features is not None else None,
            [Path(p) for p in paths] if paths else None, self.state.session, template,
            returned=self._opened, errored=self._load_failed)

    def open_demo(self, which: str = "healthy") -> None:
        healthy, features = demo_paths()
        self.open(healthy.with_name(f"{which}.pt"), features)

    def _opened(self, opened: Opened) -> None:
        session = opened.session
        self._pending = None
        self.state.set_session(session)
        if session.source is not None:
            settings.add_recent(session.checkpoint, session.features)
            self.start_audit()
        else:
            self.status.emit("No features open: File ▸ Open features (Ctrl+Shift+O) to audit.", 0)
        if opened.note:
            self.state.show_message(opened.note, "info")
        self.opened.emit(opened)

    def _load_failed(self, exc: Exception) -> None:
        self.status.emit("Loading failed", 5000)
        self.state.show_message(error_text(exc))

    # --- auditing -----------------------------------------------------------------------------------------
    def start_audit(self) -> None:
        session = self.state.session
        if session is None or session.source is None:
            return
        self._pending = None
        self.state.set_failure("")
        where = f"the Dask cluster {self.state.cluster} (starting or connecting first)" if self.state.cluster \
            else self.state.device
        self.status.emit(f"Auditing {session.total_frames:,} frames on {where}…", 0)
        self.audit_slot.start(audit_stream, session, self.state.device, cluster=self.state.cluster,
                              yielded=self._yielded, errored=self._audit_failed)

    def cancel_audit(self) -> None:
        if not self.audit_slot.busy:
            return
        self.audit_slot.cancel()
        last = self._pending or self.state.snapshot
        self._pending = None
        if last is not None:
            self._show(dataclasses.replace(last, complete=False, cancelled=True))
            self.status.emit(f"Audit cancelled after {last.frames_done:,} frames: partial results shown. "
                             "F5 runs it again.", 0)
        else:
            self.status.emit("Audit cancelled before the first results.", 0)

    def _yielded(self, snapshot: Snapshot) -> None:
        self._pending = snapshot   # drawn by the next timer tick, never here

    def _finished(self, snapshot: Snapshot) -> None:
        if snapshot.complete and self.state.session is not None:
            self.last_good = (self.state.session, snapshot)

    def _audit_failed(self, exc: Exception) -> None:
        """Every view goes back to the last good audit (or to empty): none shows half of a failed one."""
        self._pending = None
        reason = error_text(exc)
        if self.last_good is not None:
            session, snapshot = self.last_good
            if session is not self.state.session:
                self.state.set_session(session)
            self.state.set_snapshot(snapshot)
            shown = f"; the last good audit ({session.name}) is shown"
        else:
            self.state.set_session(None)
            shown = ""
        self.state.set_failure(reason)
        self.state.show_message(f"Audit failed: {reason}{shown}")
        self.status.emit("Audit failed", 5000)

    def _tick(self) -> None:
        snapshot, self._pending = self._pending, None
        if snapshot is not None:
            self._show(snapshot)

    def _show(self, snapshot: Snapshot) -> None:
        self.progress.emit(snapshot)
        self.state.set_snapshot(snapshot)
        if snapshot.complete:
            self.status.emit(f"Audit complete: {snapshot.frames_done:,} frames in {snapshot.elapsed:.2f} s on "
                             f"{snapshot.device}.", 8000)

    def shutdown(self) -> list[JobSlot]:
        """Stop the timer; the slots to cancel and wait for."""
        self.timer.stop()
        return [self.load_slot, self.audit_slot]
