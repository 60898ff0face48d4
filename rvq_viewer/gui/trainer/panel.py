"""Live what-if trainer: train the project's own RVQ on the open features and watch what happens.

Answers "would k-means init, or expiry at a lower threshold, have saved my codebook?": every
`TrainSettings` field is editable (`TrainerForm`). Training runs in a `JobSlot` worker
(`app.trainer_jobs.train_job`: frames through the pipeline, then `training.train_steps`), which yields
compact `StepBatch`es; this thread only appends them to the run's `RunHistory`, and a 10 Hz timer redraws
what changed (`TrainerPlots`; ScopeFoundry's display timer). Pause / Resume / Stop go through a
`TrainControl` (events the worker checks between steps); Save… takes the trainer's lock, so it is safe
while the run goes on, and writes the EnCodec / GPT-SoVITS layout with the step, which opens like any
checkpoint.

Every run is kept with its settings and curves. The plots show run A (solid) and, to compare, run B
(dashed): a new run becomes A and the previous A becomes B, so "change one setting, Start" compares the
two at once. The table lists every run with what it reached on (a sample of) the training frames.
"""

from __future__ import annotations

import html
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (QComboBox, QFileDialog, QHBoxLayout, QLabel, QProgressBar, QPushButton, QScrollArea,
                               QSplitter, QVBoxLayout, QWidget)

from ...app.trainer_jobs import train_job
from ...pipeline.frames import frames_key
from ...training import RunHistory, StepBatch, TrainControl, TrainStatus, loaded_codebooks
from .. import settings
from ..controller import error_text
from ..state import AppState
from ..widgets.common import DEAD_COLOR, MIN_PLOT_HEIGHT, header_label, reset_button, reset_plots
from ..workers import JobSlot
from .form import TrainerForm
from .plots import TrainerPlots
from .runs import RunsTable, compare_text, legend_text

REDRAW_MS = 100
KEEP_TRAINERS = 3          # runs whose trained codebooks stay in memory for Save… (all keep their curves)
STATE_WORDS = {"reading": "reading the feature frames…", "initialising": "k-means init on the first batch…",
               "running": "training", "paused": "paused", "stopped": "stopped", "finished": "finished",
               "failed": "failed", "starting": "starting…"}


def save_job(cancel, control: TrainControl, path: str) -> tuple[str, int]:
    """Save the run's trainer (takes its lock, so safe while it trains). Runs in a worker."""
    step = control.save(path)
    return str(path), step


class TrainerPanel(QWidget):
    title = "Trainer"
    open_wanted = Signal(object)      # a saved run's checkpoint to open in the viewer

    def __init__(self, state: AppState, parent=None):
        super().__init__(parent)
        self.setObjectName("trainer")
        self.state = state
        self.session = None
        self.runs: list[RunHistory] = []
        self.run: RunHistory | None = None           # the run in the worker (or the last one)
        self.control: TrainControl | None = None
        self._controls: dict[str, TrainControl] = {}  # run name -> its control (for saving later)
        self._frames = None                           # TrainingFrames of the last run, reused if they fit
        self._shaped_by = None
        self.slot = JobSlot("trainer", self)
        self.save_slot = JobSlot("trainer-save", self)
        self.slot.busy_changed.connect(lambda _: self._update_buttons())
        self.save_slot.busy_changed.connect(lambda _: self._update_buttons())

        self.form = TrainerForm()
        self.form.changed.connect(self._update_buttons)
        self._build_controls()
        self.plots = TrainerPlots()
        self.runs_table = RunsTable()
        self.runs_table.cellDoubleClicked.connect(lambda row, _: self.use_settings_of(row))

        scroll = QScrollArea()
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addWidget(self.form)
        left_layout.addStretch(1)
        scroll.setWidget(left)
        scroll.setWidgetResizable(True)
        scroll.setMinimumWidth(300)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(2, 0, 2, 0)
        right_layout.setSpacing(3)
        right_layout.addLayout(self.button_row)
        right_layout.addWidget(self.status)
        right_layout.addLayout(self.compare_row)
        legend_row = QHBoxLayout()
        legend_row.addWidget(self.legend_label, 1)
        legend_row.addWidget(self.plots.hover)
        legend_row.addWidget(reset_button(self.reset_view, "trainer"))
        right_layout.addLayout(legend_row)
        plots_and_runs = QSplitter(Qt.Orientation.Vertical)
        plots_and_runs.setChildrenCollapsible(False)
        self.plots.canvas.setMinimumHeight(2 * (MIN_PLOT_HEIGHT - 30))   # two rows of plots, readable
        self.runs_table.setMinimumHeight(60)
        plots_and_runs.addWidget(self.plots.canvas)
        plots_and_runs.addWidget(self.runs_table)
        plots_and_runs.setStretchFactor(0, 4)
        plots_and_runs.setStretchFactor(1, 1)
        plots_and_runs.setSizes([400, 110])
        right_layout.addWidget(plots_and_runs, 1)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(scroll)
        split.addWidget(right)
        split.setStretchFactor(1, 1)
        split.setSizes([390, 1100])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(split)

        self.timer = QTimer(self)
        self.timer.setInterval(REDRAW_MS)
        self.timer.timeout.connect(self.redraw)
        self.timer.start()
        state.session_changed.connect(self.set_session)
        self.form.set_session(None, False)
        self._update_buttons()

    def _build_controls(self) -> None:
        buttons = [("start_button", "▶ Start", "trainer-start", self.start,
                    "train a new run with these settings on the open features"),
                   ("pause_button", "❚❚ Pause", "trainer-pause", self.pause, ""),
                   ("resume_button", "▶ Resume", "trainer-resume", self.resume, ""),
                   ("stop_button", "■ Stop", "trainer-stop", self.stop, ""),
                   ("save_button", "Save…", "trainer-save", self.ask_save,
                    "save run A as a checkpoint (EnCodec / GPT-SoVITS keys, with its step and settings); works "
                    "while it trains"),
                   ("open_button", "Open in viewer", "trainer-open", self.open_saved,
                    "open run A's saved checkpoint in the viewer, with the open features")]
        self.button_row = QHBoxLayout()
        for attr, text, name, slot, tip in buttons:
            button = QPushButton(text)
            button.setObjectName(name)
            button.setToolTip(tip)
            button.clicked.connect(slot)
            setattr(self, attr, button)
            self.button_row.addWidget(button)
        self.progress = QProgressBar()
        self.progress.setObjectName("trainer-progress")
        self.progress.setFixedWidth(200)
        self.progress.setFormat("step %v / %m")
        self.button_row.addStretch(1)
        self.button_row.addWidget(self.progress)
        self.status = header_label()
        self.status.setObjectName("trainer-status")
        self.run_a_box, self.run_b_box, self.raster_layer = QComboBox(), QComboBox(), QComboBox()
        for box, name in ((self.run_a_box, "trainer-run-a"), (self.run_b_box, "trainer-run-b"),
                          (self.raster_layer, "trainer-raster-layer")):
            box.setObjectName(name)
            box.currentIndexChanged.connect(lambda _: self._shown_changed())
        self.run_a_box.setMinimumWidth(120)
        self.run_b_box.setMinimumWidth(120)
        self.compare_label = header_label()
        self.compare_label.setObjectName("trainer-compare")
        self.compare_row = QHBoxLayout()
        for w in (QLabel("Compare: A (solid)"), self.run_a_box, QLabel("B (dashed)"), self.run_b_box):
            self.compare_row.addWidget(w)
        self.compare_row.addWidget(self.compare_label, 1)
        self.compare_row.addWidget(QLabel("replacements of"))
        self.compare_row.addWidget(self.raster_layer)
        self.legend_label = QLabel()
        self.legend_label.setObjectName("trainer-legend")

    # --- the panel protocol ---------------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return True

    def set_session(self, session) -> None:
        self.session = session
        q = getattr(session, "quantizer", None)
        # Until the first run, the form follows the open checkpoint's shape and dead-code rule.
        follow = q is not None and not self.runs and q is not self._shaped_by
        if follow:
            self._shaped_by = q
        self.form.set_session(session, follow)
        self._update_buttons()

    def reset_view(self) -> None:
        reset_plots(self.plots.canvas)

    def cleanup(self) -> None:
        self.timer.stop()
        if self.control is not None:
            self.control.stop.set()
        self.slot.cancel()
        self.save_slot.cancel()
        self.plots.cleanup()

    def settings(self):
        return self.form.settings()

    def set_settings(self, s) -> None:
        self.form.set_settings(s)

    def use_settings_of(self, row: int) -> None:
        if 0 <= row < len(self.runs):
            self.form.set_settings(self.runs[row].settings)

    # --- running -------------------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.slot.busy

    def start(self) -> RunHistory | None:
        """Start a new run with the form's settings on the session's features."""
        s = self.session
        if s is None or s.source is None or self.slot.busy:
            return None
        settings_ = self.form.settings()
        q = s.quantizer
        init = None
        start = "k-means init" if settings_.kmeans_init else "random init"
        if self.form.from_loaded():
            init = loaded_codebooks(q)[: settings_.n_q]
            start = f"from {s.name}"
        max_frames = self.form.max_frames_spin.value()
        key = frames_key(s.spec, max_frames, q.transform is not None)
        frames = self._frames if self._frames is not None and self._frames.key == key else None
        run = RunHistory(f"run {len(self.runs) + 1}", settings_, start=start)
        previous = self.current_a()
        self.runs.append(run)
        self.run = run
        self.control = TrainControl()
        self._controls[run.name] = self.control
        for old in self.runs[:-KEEP_TRAINERS]:          # a big trainer holds K x D x n_q x 2 floats
            self._controls.pop(old.name, None)
        self._refresh_run_boxes(a=run, b=previous)
        self.progress.setRange(0, settings_.steps)
        self.progress.setValue(0)
        self.slot.start(train_job, self.control, settings_, frames=frames, spec=s.spec, quantizer=q,
                        max_frames=max_frames, init_codebooks=init, yielded=lambda v, r=run: self._yielded(r, v),
                        errored=lambda e, r=run: self._failed(r, e))
        self._update_buttons()
        self._show_status()
        return run

    def pause(self) -> None:
        if self.control is not None and self.slot.busy:
            self.control.pause.set()
            self._update_buttons()
            self._show_status()

    def resume(self) -> None:
        if self.control is not None and self.slot.busy:
            self.control.pause.clear()
            self._update_buttons()

    def stop(self) -> None:
        if self.control is not None and self.slot.busy:
            self.control.stop.set()
            self.control.pause.clear()
            self._update_buttons()

    def _yielded(self, run: RunHistory, value) -> None:
        if isinstance(value, StepBatch):
            run.add(value)                 # drawn by the next timer tick
            return
        if isinstance(value, TrainStatus):
            if value.frames is not None:
                self._frames = value.frames
                run.frames_note = value.frames.note
            if value.evaluation is not None:
                run.evaluation = value.evaluation
            run.set_state(value.state)
            self._update_buttons()
            self._show_status()
            self._fill_runs()

    def _failed(self, run: RunHistory, exc: Exception) -> None:
        run.error = error_text(exc)
        run.set_state("failed")
        self._show_status()
        self._fill_runs()
        self._update_buttons()

    # --- saving / opening ----------------------------------------------------------------------------------
    def ask_save(self) -> None:
        run = self.current_a()
        if run is None or run.name not in self._controls or self._controls[run.name].trainer is None:
            return
        name = f"{run.name.replace(' ', '_')}_step{run.last_step:06d}.pt"
        start = str(Path(settings.get("last_dir") or Path.cwd()) / name)
        path, _ = QFileDialog.getSaveFileName(self, "Save the trained quantizer", start,
                                              "PyTorch checkpoint (*.pt);;All files (*)")
        if path:
            settings.set("last_dir", str(Path(path).parent))
            self.save_run(path, run)

    def save_run(self, path, run: RunHistory | None = None) -> None:
        """Save `run` (default: A) in a worker; `run.saved_path` is set when it is written."""
        run = run or self.current_a()
        control = self._controls.get(run.name) if run is not None else None
        if control is None or control.trainer is None:
            raise ValueError("this run has no trainer to save yet")
        self.status.setText(f"Saving {html.escape(run.name)} to {html.escape(str(path))}…")
        self.save_slot.start(save_job, control, str(path), returned=lambda res, r=run: self._saved(r, res),
                             errored=lambda e, r=run: self._save_failed(r, e))

    def _saved(self, run: RunHistory, result) -> None:
        path, step = result
        run.saved_path = Path(path)
        run.saved_step = step
        run.version += 1
        self._fill_runs()
        self._show_status()
        self.status.setText(self.status.text() + f"<br>Saved {html.escape(run.name)} at step {step:,} to "
                            f"{html.escape(path)}: opens in rvq-viewer like any checkpoint.")
        self._update_buttons()

    def _save_failed(self, run: RunHistory, exc: Exception) -> None:
        self.status.setText(f"<span style='color:{DEAD_COLOR}'>Cannot save {html.escape(run.name)}: "
                            f"{html.escape(error_text(exc))}</span>")
        self._update_buttons()

    def open_saved(self) -> None:
        run = self.current_a()
        if run is not None and run.saved_path is not None:
            self.open_wanted.emit(run.saved_path)      # the window keeps the open features when they fit

    def unsaved_runs(self) -> list[RunHistory]:
        """Runs that trained and whose trainer is still here to save, not saved at their last step."""
        return [run for run in self.runs if len(run) and run.name in self._controls
                and self._controls[run.name].trainer is not None and run.saved_step < run.last_step]

    # --- buttons and text ----------------------------------------------------------------------------------
    def _update_buttons(self) -> None:
        busy = self.slot.busy
        paused = busy and self.control is not None and self.control.pause.is_set()
        can_train = self.session is not None and getattr(self.session, "source", None) is not None
        self.start_button.setEnabled(can_train and not busy)
        self.pause_button.setEnabled(busy and not paused)
        self.resume_button.setEnabled(paused)
        self.stop_button.setEnabled(busy)
        a = self.current_a()
        control = self._controls.get(a.name) if a is not None else None
        self.save_button.setEnabled(control is not None and control.trainer is not None and not self.save_slot.busy)
        self.open_button.setEnabled(a is not None and a.saved_path is not None)
        self.form.set_busy(busy)

    def _show_status(self) -> None:
        run = self.run
        if run is None:
            self.status.setText("<i>Set the settings and press Start: the curves update live; "
                                "change one setting and Start again to compare the two runs.</i>")
            return
        text = f"<b>{html.escape(run.name)}</b> {STATE_WORDS.get(run.state, run.state)}"
        pausing = self.slot.busy and self.control is not None and self.control.pause.is_set()
        if pausing and run.state in ("starting", "reading", "initialising"):
            # The k-means init runs in one piece: the pause takes effect when it ends.
            text += " <b>· pausing when the k-means init ends</b> (it cannot stop midway)"
        if len(run):
            text += (f" · step {run.last_step:,} / {run.settings.steps:,} · {run.steps_per_second:.1f} steps/s · "
                     f"{run.total_events:,} replacements")
        if run.frames_note:
            text += f"<br>{html.escape(run.frames_note)}"
        if run.error:
            text += f"<br><span style='color:{DEAD_COLOR}'>{html.escape(run.error)}</span>"
        if run.evaluation is not None:
            e = run.evaluation
            per = " · ".join(f"L{i} {u:.0%}" for i, u in enumerate(e.utilization))
            text += (f"<br>On {e.frames:,} training frames: codes used {per}; "
                     f"perplexity {' · '.join(f'{p:,.0f}' for p in e.perplexity)}")
        self.status.setText(text)

    # --- runs and comparison -------------------------------------------------------------------------------
    def current_a(self) -> RunHistory | None:
        i = self.run_a_box.currentData()
        return self.runs[i] if isinstance(i, int) and 0 <= i < len(self.runs) else None

    def current_b(self) -> RunHistory | None:
        i = self.run_b_box.currentData()
        return self.runs[i] if isinstance(i, int) and 0 <= i < len(self.runs) else None

    def set_compare(self, a: RunHistory | None, b: RunHistory | None) -> None:
        self._refresh_run_boxes(a, b)

    def _refresh_run_boxes(self, a: RunHistory | None, b: RunHistory | None) -> None:
        for box, chosen, none_text in ((self.run_a_box, a, None), (self.run_b_box, b, "— none —")):
            box.blockSignals(True)
            box.clear()
            if none_text:
                box.addItem(none_text, -1)
            for i, run in enumerate(self.runs):
                box.addItem(run.name, i)
                box.setItemData(box.count() - 1, run.describe(), Qt.ItemDataRole.ToolTipRole)
            if chosen is not None and chosen in self.runs:
                box.setCurrentIndex(box.findData(self.runs.index(chosen)))
            box.blockSignals(False)
        self._shown_changed()

    def _shown_changed(self) -> None:
        a = self.current_a()
        n_q = a.settings.n_q if a is not None else 0
        if self.raster_layer.count() != n_q:
            keep = max(0, self.raster_layer.currentIndex())
            self.raster_layer.blockSignals(True)
            self.raster_layer.clear()
            for i in range(n_q):
                self.raster_layer.addItem(f"layer {i}", i)
            self.raster_layer.setCurrentIndex(min(keep, n_q - 1))
            self.raster_layer.blockSignals(False)
        layer = self.raster_layer.currentData()
        self.plots.raster_layer = layer if isinstance(layer, int) else 0
        self.plots.forget()
        self._fill_runs()
        self._update_buttons()
        self.redraw(force=True)

    def _fill_runs(self) -> None:
        self.runs_table.fill(self.runs)
        a, b = self.current_a(), self.current_b()
        self.compare_label.setText(compare_text(a, b) if a is not None else "")
        self.legend_label.setText(legend_text(a, b) if a is not None else "")

    def redraw(self, force: bool = False) -> None:
        """Draw what changed since the last tick (timer) or everything (force)."""
        if self.plots.redraw(self.current_a(), self.current_b(), force):
            if self.run is not None and self.slot.busy:
                self.progress.setValue(self.run.last_step)
                self._show_status()
            self._fill_runs()

    def export_png(self, path) -> None:
        self.plots.export_png(path)
