"""Worker jobs for a monitored run in the app. Qt-free.

`poll_job` opens the run (first call) or reads what was committed since, and hands the GUI thread the
run's timelines as arrays (`RunArrays`); `window_job` builds what every usual view draws for one window:
a `Session` (the codebooks of the window's snapshot, the EMA sizes at its end) and a complete `Snapshot`
(its counts, with the whole diagnosis), so the histogram, map, dead codes, overview and diagnosis panels
show that window as they show an audit. Reading goes through `rvq_viewer.pipeline.runs`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..analysis.series import EVENT_KINDS
from ..pipeline import AuditSpec, Run, RunUpdate, open_run
from .session import Session, Snapshot

SEVERITY_CODE = {"ok": 0, "info": 1, "warning": 2, "collapse": 3}


@dataclass
class RunArrays:
    """A run's timelines, ready to draw: [W] steps, [W, L] per-layer values (nan: unknown)."""

    step_from: np.ndarray
    steps: np.ndarray
    utilization: np.ndarray
    perplexity: np.ndarray
    ema_dead: np.ndarray
    severity: np.ndarray
    frames: np.ndarray
    event_steps: np.ndarray
    event_layers: np.ndarray
    event_kinds: np.ndarray
    histories: list
    text: str
    drops: int

    @property
    def n_windows(self) -> int:
        return int(self.steps.size)


@dataclass
class RunPolled:
    run: Run
    arrays: RunArrays
    update: RunUpdate


def arrays_of(run: Run) -> RunArrays:
    w = run.windows
    n_q = run.n_q

    def grid(get) -> np.ndarray:
        return np.array([[np.nan if get(x)[i] is None else float(get(x)[i]) for i in range(n_q)] for x in w],
                        dtype=np.float64).reshape(len(w), n_q)
    events = run.events
    return RunArrays(
        step_from=np.array([x.step_from for x in w], dtype=np.int64),
        steps=np.array([x.step_to for x in w], dtype=np.int64),
        utilization=grid(lambda x: x.utilization), perplexity=grid(lambda x: x.perplexity),
        ema_dead=grid(lambda x: x.ema_dead), frames=grid(lambda x: x.frames),
        severity=np.array([[SEVERITY_CODE[s] for s in x.severity] for x in w], dtype=np.int8).reshape(len(w), n_q),
        event_steps=np.array([e.step for e in events], dtype=np.int64),
        event_layers=np.array([e.layer for e in events], dtype=np.int64),
        event_kinds=np.array([EVENT_KINDS.index(e.kind) if e.kind in EVENT_KINDS else 0 for e in events],
                             dtype=np.int8),
        histories=run.histories(), text=run.describe(), drops=sum(n for _, _, n, _ in run.drops))


def poll_job(cancel: threading.Event, run: Run | None, path: str | Path | None = None) -> RunPolled:
    """Open the run at `path` (when `run` is None) or read what its ranks committed since the last poll."""
    if run is None:
        run = open_run(path)
        update = RunUpdate(list(range(len(run.windows))), list(run.events))
    else:
        with run.lock:
            update = run.poll()
    with run.lock:
        return RunPolled(run, arrays_of(run), update)


@dataclass
class WindowShown:
    index: int
    session: Session
    snapshot: Snapshot
    same_codebooks: bool       # the session's codebooks are those already shown (only counts/EMA changed)
    snapshot_step: int | None


def window_job(cancel: threading.Event, run: Run, index: int, current: Session | None,
               current_step: int | None) -> WindowShown:
    """The Session and Snapshot of window `index` (see the module docstring). When the window's codebook
    snapshot is the one `current` shows, the new session shares its arrays (`same_codebooks`)."""
    with run.lock:
        result, verdicts, quantizer, snap_step = run.verdicts_at(index)
        w = run.windows[index]
    same = current is not None and snap_step == current_step and current.n_q == quantizer.n_q
    if same:
        codebooks, norms = current.codebooks, current.norms
    else:
        codebooks = [c.detach().cpu().float().numpy() for c in quantizer.codebooks]
        norms = [np.linalg.norm(c, axis=1).astype(np.float32) for c in codebooks]
    ema_sizes = ema_dead = None
    if quantizer.has_ema:
        ema_sizes = [c.detach().cpu().float().numpy() for c in quantizer.cluster_size]
        ema_dead = [quantizer.ema_dead_codes(i).cpu().numpy() for i in range(quantizer.n_q)]
    spec = AuditSpec(run.files[0], ())
    session = Session(spec=spec, quantizer=quantizer, source=None, total_frames=int(max(w.frames, default=0)),
                      codebooks=codebooks, norms=norms, ema_sizes=ema_sizes, ema_dead=ema_dead)
    snapshot = Snapshot(result=result, frames_done=result.frames, frames_total=result.frames, elapsed=0.0,
                        complete=True, device="run", verdicts=verdicts, final=True,
                        counted_on="this window of the run")
    return WindowShown(index, session, snapshot, same, snap_step)
