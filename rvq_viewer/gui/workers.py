"""One worker in flight per view: `JobSlot` starts superqt workers and cancels the previous one first.

Following napari's histogram widget: a new request aborts the old worker (quit() for generators, a
`threading.Event` for blocking jobs) and disconnects it, so late results of a stale job never reach
the view. Every started worker is remembered until it finishes, so `wait_all` can drain them at exit.
"""

from __future__ import annotations

import inspect
import threading
from typing import Callable

import shiboken6
from PySide6.QtCore import QObject, QThreadPool, Signal
from superqt.utils import GeneratorWorker, WorkerBase, create_worker


_live: set[WorkerBase] = set()   # started and not yet finished, across all slots
# Jobs run at the GUI's own priority. They used to be niced, and every thread a job started inherited it:
# the CPU search workers and the feature reader ran at nice 10, so on a machine shared with other
# processes the window's audit took 2-3x the command line's (benchmarks/ui.py prints both). A niced thread
# holding the GIL also keeps the GUI thread waiting for it. The GUI stays fluid through short GIL holds
# (staggered drawing, snapshots built off the GUI thread), not through priorities.


def _close_when_done(worker: GeneratorWorker) -> None:
    """Close the job's generator in the worker thread when the worker stops iterating it (an abort leaves
    it suspended at a yield): what it holds (a read-ahead thread, open files) goes then, not at some
    later garbage collection."""
    work = worker.work

    def work_then_close():
        try:
            return work()
        finally:
            gen = getattr(worker, "_gen", None)
            if gen is not None:
                gen.close()
    worker.work = work_then_close


class JobSlot(QObject):
    """Runs `fn(cancel_event, *args)` in the global thread pool, one job at a time.

    Callbacks run on the GUI thread: `yielded(value)` for generator jobs, `returned(value)`,
    `errored(exc)`. A callback of a job that was cancelled or replaced is never called.
    """

    busy_changed = Signal(bool)

    def __init__(self, name: str, parent: QObject | None = None):
        super().__init__(parent)
        self.name = name
        self._worker: WorkerBase | None = None
        self._cancel: threading.Event | None = None
        self._generation = 0
        # A slot deleted with its window (closed while a job runs) drops its job: the job's late
        # signals must not reach a deleted slot or window ("Signal source has been deleted").
        self.destroyed.connect(lambda *_: self._drop())

    @property
    def busy(self) -> bool:
        return self._worker is not None

    def start(self, fn: Callable, *args, yielded: Callable | None = None, returned: Callable | None = None,
              errored: Callable | None = None, **kwargs) -> WorkerBase:
        self.cancel()
        self._generation += 1
        generation = self._generation
        cancel = threading.Event()
        worker = create_worker(fn, cancel, *args, _start_thread=False, _ignore_errors=True, **kwargs)
        if isinstance(worker, GeneratorWorker):
            _close_when_done(worker)

        def guarded(callback):
            def call(*values):
                if generation == self._generation and callback is not None and _alive(self):
                    try:
                        callback(*values)
                    except RuntimeError as exc:   # the receiver (a panel, a window) went meanwhile
                        if not _deleted(exc):
                            raise
            return call

        handlers = {"returned": guarded(returned), "errored": guarded(errored),
                    "finished": lambda: self._finished(worker, generation)}
        if inspect.isgeneratorfunction(fn):
            handlers["yielded"] = guarded(yielded)
        for signal, handler in handlers.items():
            getattr(worker, signal).connect(handler)
        worker._rvq_handlers = handlers
        self._worker, self._cancel = worker, cancel
        _live.add(worker)
        worker.finished.connect(lambda: _live.discard(worker))
        # Start now rather than superqt's `worker.start()`, which defers by a timer tick when an event
        # loop runs: a deferred start could slip past `cancel_and_wait` at shutdown.
        WorkerBase._worker_set.add(worker)
        worker._finished.connect(WorkerBase._set_discard)
        QThreadPool.globalInstance().start(worker)
        self.busy_changed.emit(True)
        return worker

    def cancel(self) -> None:
        """Stop the running job (if any) and drop its results."""
        if self._drop() and _alive(self):
            self.busy_changed.emit(False)

    def _drop(self) -> bool:
        """Cancel the job and disconnect its callbacks, touching nothing of Qt's for this slot (it may
        be being deleted). True if there was a job."""
        worker, cancel = self._worker, self._cancel
        if worker is None:
            return False
        self._generation += 1
        self._worker = self._cancel = None
        cancel.set()
        worker.quit()
        for signal, handler in getattr(worker, "_rvq_handlers", {}).items():
            if signal == "finished":
                continue
            try:
                getattr(worker, signal).disconnect(handler)
            except (RuntimeError, TypeError):
                pass
        return True

    def _finished(self, worker: WorkerBase, generation: int) -> None:
        if worker is self._worker and generation == self._generation:
            self._worker = self._cancel = None
            if _alive(self):
                self.busy_changed.emit(False)


def _alive(obj: QObject) -> bool:
    """False once Qt has deleted the C++ side of `obj` (its Python wrapper outlives it)."""
    try:
        return shiboken6.isValid(obj)
    except (RuntimeError, TypeError):
        return False


def _deleted(exc: RuntimeError) -> bool:
    text = str(exc)
    return "has been deleted" in text or "already deleted" in text


def live_workers() -> int:
    return len(_live)


def cancel_and_wait(slots: list[JobSlot], msecs: int = 5000) -> bool:
    """Cancel every slot and wait for the thread pool to drain; False if something still runs."""
    for slot in slots:
        slot.cancel()
    return QThreadPool.globalInstance().waitForDone(msecs)
