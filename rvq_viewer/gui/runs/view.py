"""The Run view: a training run recorded by `rvq_viewer.monitor`, followed live.

Top: the run, its ranks and dropped windows, and per layer the diagnosis over time (the step at which it
first met a collapse rule, and whether it recovered). Middle: utilization, perplexity and EMA-dead codes
per layer over steps, and the events as they arrive (`RunPlots`). Bottom: a step slider; the window it
points at is shown by every usual view (histogram, centroid map, dead codes, overview, diagnosis)
through the one `AppState`, as a session (that window's codebook snapshot and EMA sizes) and a complete
snapshot (its counts and diagnosis). "Follow newest" keeps the slider on the newest window.

Every read runs in a `JobSlot` (`app.run_jobs`): a poll every `POLL_MS` reads what the writer committed
since (SQLite WAL: readers never wait for the trainer), so new rows appear within about a second and the
event loop never blocks on the database.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (QCheckBox, QFileDialog, QHBoxLayout, QLabel, QPushButton, QSlider, QVBoxLayout,
                               QWidget)

from ...app.run_jobs import RunPolled, WindowShown, poll_job, window_job
from .. import settings
from ..controller import error_text
from ..state import AppState
from ..widgets.common import DEAD_COLOR, header_label, reset_button, reset_plots
from ..workers import JobSlot
from .plots import RunPlots

POLL_MS = 500
SHOW_DELAY_MS = 120        # the slider settles this long before its window is built


class RunView(QWidget):
    title = "Run"
    window_shown = Signal(int)          # index of the window the usual views now show

    def __init__(self, state: AppState, parent=None):
        super().__init__(parent)
        self.setObjectName("run")
        self.state = state
        self.run = None
        self.path: Path | None = None
        self.arrays = None
        self.shown: int | None = None          # window the usual views show
        self.session = None                    # the session this view gave the state (None: another's)
        self.snapshot_step: int | None = None
        self.poll_slot = JobSlot("run-poll", self)
        self.window_slot = JobSlot("run-window", self)

        self.open_button = QPushButton("Open run…")
        self.open_button.setToolTip("a run directory written by rvq_viewer.monitor (or one rank's .sqlite)")
        self.open_button.clicked.connect(self.ask_open)
        self.follow_box = QCheckBox("Follow newest")
        self.follow_box.setObjectName("run-follow")
        self.follow_box.setChecked(True)
        self.follow_box.setToolTip("keep the slider on the newest window while the run is written")
        self.follow_box.toggled.connect(lambda on: self.slider.setValue(self.slider.maximum()) if on else None)
        self.status = QLabel("")
        self.status.setObjectName("run-status")
        top = QHBoxLayout()
        top.setContentsMargins(4, 0, 4, 0)
        top.addWidget(self.open_button)
        top.addWidget(self.follow_box)
        top.addStretch(1)
        top.addWidget(self.status)
        self.reset_button = reset_button(self.reset_view, "run")
        top.addWidget(self.reset_button)
        self.header = header_label(2)
        self.header.setObjectName("run-header")
        self.plots = RunPlots()
        self.plots.setMinimumHeight(220)
        self.plots.scene().sigMouseClicked.connect(self._clicked)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setObjectName("run-slider")
        self.slider.setRange(0, 0)
        self.slider.setEnabled(False)
        self.slider.valueChanged.connect(self._slider_moved)
        self.step_label = QLabel("")
        self.step_label.setObjectName("run-step")
        self.step_label.setMinimumWidth(self.step_label.fontMetrics().horizontalAdvance(
            "window 99,999/99,999 · steps 9,999,999..9,999,999 · codebooks of step 9,999,999") + 8)
        self.step_row = QWidget()
        bottom = QHBoxLayout(self.step_row)
        bottom.setContentsMargins(4, 0, 4, 0)
        bottom.addWidget(QLabel("Step"))
        bottom.addWidget(self.slider, 1)
        bottom.addWidget(self.step_label)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.setSpacing(2)
        layout.addLayout(top)
        layout.addWidget(self.header)
        layout.addWidget(self.plots, 1)
        layout.addWidget(self.step_row)
        layout.addStretch(0)
        self._show_plots(False)          # no axes of nothing: the header says how to open a run

        self.timer = QTimer(self)
        self.timer.setInterval(POLL_MS)
        self.timer.timeout.connect(self.poll)
        self.settle = QTimer(self)
        self.settle.setSingleShot(True)
        self.settle.setInterval(SHOW_DELAY_MS)
        self.settle.timeout.connect(lambda: self.show_window(self.slider.value()))
        state.selection.layer_changed.connect(lambda layer: self._redraw())
        state.session_changed.connect(self._session_changed)
        self._show_header()

    # --- the panel protocol -----------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return not (self.poll_slot.busy or self.window_slot.busy)

    @property
    def slots(self) -> list[JobSlot]:
        return [self.poll_slot, self.window_slot]

    def reset_view(self) -> None:
        reset_plots(self)

    def _show_plots(self, shown: bool) -> None:
        for widget in (self.plots, self.step_row, self.reset_button):
            widget.setVisible(shown)

    def cleanup(self) -> None:
        self.timer.stop()
        self.settle.stop()
        for slot in self.slots:
            slot.cancel()

    # --- opening and following ---------------------------------------------------------------------------
    def ask_open(self) -> None:
        start = settings.get("last_dir") or ""
        path = QFileDialog.getExistingDirectory(self, "Open a run directory (written by rvq_viewer.monitor)", start)
        if path:
            settings.set("last_dir", path)
            self.open(path)

    def open(self, path: str | Path) -> None:
        """Open a run directory or database and follow it."""
        self.timer.stop()
        self.window_slot.cancel()
        self.run, self.arrays, self.shown, self.session = None, None, None, None
        self._show_plots(False)
        self.path = Path(path)
        self.header.setText(f"Opening {html.escape(str(self.path))}…")
        self.poll_slot.start(poll_job, None, self.path, returned=self._polled, errored=self._failed)

    def poll(self) -> None:
        """Read what was committed since the last poll (skipped while one is still reading)."""
        if self.run is not None and not self.poll_slot.busy:
            self.poll_slot.start(poll_job, self.run, returned=self._polled, errored=self._failed)

    def _failed(self, exc: Exception) -> None:
        text = error_text(exc)
        self.timer.stop()
        self.header.setText(f"<span style='color:{DEAD_COLOR}'>Cannot read the run: {html.escape(text)}</span>")
        self.state.show_message(f"run: {text}")

    def _polled(self, polled: RunPolled) -> None:
        first = self.run is None
        self.run, self.arrays = polled.run, polled.arrays
        self._show_plots(True)
        if not self.timer.isActive():
            self.timer.start()
        n = self.arrays.n_windows
        self.slider.blockSignals(True)
        self.slider.setRange(0, max(0, n - 1))
        self.slider.setEnabled(n > 0)
        self.slider.blockSignals(False)
        self._redraw()
        self._show_header()
        follow = first or (self.follow_box.isChecked() and bool(polled.update.windows))
        if n and follow and self.slider.value() != n - 1:
            self.slider.setValue(n - 1)                    # settles, then shows the newest window
        elif n and (follow or self.shown in polled.update.windows):
            self.settle.start()                            # the same window, with more ranks or rows
        self.status.setText(f"{n:,} windows · {self.arrays.event_steps.size:,} events"
                            + (" · following" if self.follow_box.isChecked() else ""))

    # --- the window shown -----------------------------------------------------------------------------------
    def _slider_moved(self, index: int) -> None:
        if self.arrays is None:
            return
        if index < self.slider.maximum() and self.follow_box.isChecked():
            self.follow_box.blockSignals(True)
            self.follow_box.setChecked(False)              # the user went back in time: stop following
            self.follow_box.blockSignals(False)
        self._label(index)
        self.plots.set_cursor(float(self.arrays.steps[index]) if index < self.arrays.n_windows else None)
        self.settle.start()

    def show_window(self, index: int) -> None:
        """Show window `index` in every usual view (built in a worker)."""
        if self.run is None or self.arrays is None or not 0 <= index < self.arrays.n_windows:
            return
        ours = self.session if self.state.session is self.session else None
        self.window_slot.start(window_job, self.run, index, ours, self.snapshot_step if ours else None,
                               returned=self._window_ready, errored=self._failed)

    def _window_ready(self, shown: WindowShown) -> None:
        current = self.session if self.state.session is self.session else None
        if current is not None and shown.same_codebooks:
            # Same codebooks: the map keeps its projection; only the EMA state of the window changes.
            current.quantizer, current.ema_sizes, current.ema_dead = (shown.session.quantizer, shown.session.ema_sizes,
                                                                       shown.session.ema_dead)
            current.total_frames = shown.session.total_frames
        else:
            layer = self.state.selection.layer
            self.session = shown.session
            self.state.set_session(shown.session)
            self.state.selection.set_layer(layer)
        self.snapshot_step = shown.snapshot_step
        self.shown = shown.index
        self.state.set_snapshot(shown.snapshot)
        self._label(shown.index)
        self.plots.set_cursor(float(self.arrays.steps[shown.index]))
        self.window_shown.emit(shown.index)

    def _session_changed(self, session) -> None:
        if session is not self.session:
            self.session = None        # another checkpoint was opened: the usual views are no longer ours

    # --- drawing ----------------------------------------------------------------------------------------
    def _redraw(self) -> None:
        if self.arrays is not None:
            self.plots.draw(self.arrays, self.state.selection.layer)

    def _label(self, index: int) -> None:
        a = self.arrays
        if a is None or not 0 <= index < a.n_windows:
            self.step_label.setText("")
            return
        snap = ("" if self.shown != index or self.snapshot_step is None
                else f" · codebooks of step {self.snapshot_step:,}")
        self.step_label.setText(f"window {index + 1:,}/{a.n_windows:,} · steps {int(a.step_from[index]):,}.."
                                f"{int(a.steps[index]):,}{snap}")

    def _show_header(self) -> None:
        a = self.arrays
        if a is None:
            if self.run is None and not self.poll_slot.busy:
                self.header.setText("<i>No run open: File ▸ Open run… (a directory written by "
                                    "rvq_viewer.monitor), or <code>rvq-viewer RUN_DIR</code></i>")
            return
        parts = [html.escape(a.text)]
        if a.drops:
            parts.append(f"<span style='color:{DEAD_COLOR}'>{a.drops:,} window(s) dropped (the writer fell behind)"
                         "</span>")
        layers = []
        for h in a.histories:
            if h.first_collapse_step is None:
                continue
            state = "collapsed now" if h.collapsed_now else f"recovered from step {h.recovered_step:,}"
            layers.append(f"L{h.layer}: collapse from step {h.first_collapse_step:,}, {state}")
        parts.append("<br>" + ("; ".join(layers) if layers else "no layer has met a collapse rule"))
        self.header.setText(" · ".join(parts[:-1]) + parts[-1])

    def _clicked(self, event) -> None:
        if event.button() != Qt.MouseButton.LeftButton or self.arrays is None or not self.arrays.n_windows:
            return
        step = self.plots.step_at(event.scenePos())
        if step is not None:
            self.slider.setValue(int(np.argmin(np.abs(self.arrays.steps - step))))
