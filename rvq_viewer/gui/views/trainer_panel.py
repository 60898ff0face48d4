"""Live what-if trainer: train the project's own RVQ on the open features and watch what happens.

Answers "would k-means init, or expiry at a lower threshold, have saved my codebook?": every
`TrainSettings` field is editable, including the two subtleties made explicit (the expiry order, and
an absolute or a relative-to-uniform-share threshold, whose meaning at this K and batch is spelled
out under it). Training runs in a `JobSlot` worker (`training.train_stream`), which yields compact
`StepBatch`es; this thread only appends them to the run's `RunHistory`, and a 10 Hz timer redraws
what changed (ScopeFoundry's display timer). Pause / Resume / Stop go through a `TrainControl`
(events the worker checks between steps); Save… takes the trainer's lock, so it is safe while the
run goes on, and writes the EnCodec / GPT-SoVITS layout with the step, which opens like any checkpoint.

Every run is kept with its settings and curves. The plots show run A (solid) and, to compare, run B
(dashed): a new run becomes A and the previous A becomes B, so "change one setting, Start" compares
the two at once. The table lists every run with what it reached on (a sample of) the training frames.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, Qt, QTimer
from PySide6.QtGui import QAction, QDoubleValidator
from PySide6.QtWidgets import (QAbstractItemView, QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog,
                               QFormLayout, QGroupBox, QHBoxLayout, QHeaderView, QLabel, QLineEdit, QMenu, QProgressBar,
                               QPushButton, QScrollArea, QSpinBox, QSplitter, QTableWidget, QTableWidgetItem,
                               QVBoxLayout, QWidget)

from ...core.train import TrainSettings
from ...errors import RvqViewerError
from ...training import (MAX_TRAIN_FRAMES, RunHistory, StepBatch, TrainControl, TrainStatus, describe_settings,
                         frames_key, loaded_codebooks, loaded_codebooks_reason, settings_diff, threshold_meaning,
                         train_stream)
from ..workers import JobSlot
from .common import (DEAD_COLOR, LAYER_COLORS, add_bottom_dock, export_scene_png, find_menu, header_label,
                     layer_color)

REDRAW_MS = 100
KEEP_TRAINERS = 3          # runs whose trained codebooks stay in memory for Save… (all keep their curves)
ORDERS = [(True, "EnCodec: expire, then EMA update"), (False, "GPT-SoVITS: EMA update, then expire")]
ORDER_WHY = {True: "A respawned code is overwritten by the stale EMA average in the same step, so expiry "
                   "barely helps (EnCodec's order).",
             False: "A respawned code keeps its new position until the next step's update, so it can catch "
                    "frames (GPT-SoVITS's order)."}
THRESHOLD_MODES = [(False, "absolute: EMA size < t"), (True, "relative (Moshi): < t × uniform share")]
PLOTS = [("perplexity", "batch perplexity"), ("used", "codes used in the batch"),
         ("dead", "EMA-dead codes"), ("events", "replacements per step")]
RUN_COLUMNS = ["Run", "Settings", "Start", "Steps", "State", "Util. (train frames)", "Perplexity", "EMA-dead",
               "Replacements", "Codes replaced", "Saved"]


def save_job(cancel, control: TrainControl, path: str) -> tuple[str, int]:
    """Save the run's trainer (takes its lock, so safe while it trains). Runs in a worker."""
    step = control.save(path)
    return str(path), step


class TrainerPanel(QWidget):
    title = "Trainer"

    def __init__(self, selection=None, window=None, parent=None):
        super().__init__(parent)
        self.setObjectName("trainer")
        self.selection = selection
        self.window_ = window
        self.session = None
        self.runs: list[RunHistory] = []
        self.run: RunHistory | None = None           # the run in the worker (or the last one)
        self.control: TrainControl | None = None
        self._controls: dict[str, TrainControl] = {}  # run name -> its control (for saving later)
        self._frames = None                           # TrainingFrames of the last run, reused if they fit
        self._drawn: dict = {}
        self._shaped_by = None
        self.slot = JobSlot("trainer", self)
        self.save_slot = JobSlot("trainer-save", self)
        self.slot.busy_changed.connect(lambda _: self._update_buttons())
        self.save_slot.busy_changed.connect(lambda _: self._update_buttons())

        self._build_form()
        self._build_controls()
        self._build_plots()
        self._build_runs()

        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addWidget(self.form_box)
        left_layout.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidget(left)
        scroll.setWidgetResizable(True)
        scroll.setMinimumWidth(300)
        for box in (self.threshold_mode, self.order_box):
            box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            box.setMinimumContentsLength(14)
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
        legend_row.addWidget(self.hover)
        right_layout.addLayout(legend_row)
        plots_and_runs = QSplitter(Qt.Orientation.Vertical)
        plots_and_runs.addWidget(self.canvas)
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
        self._settings_changed()
        self._update_source()
        self._update_buttons()

    # --- building ----------------------------------------------------------------------------------------
    def _spin(self, lo, hi, value, name, tip="", step=1) -> QSpinBox:
        w = QSpinBox()
        w.setRange(lo, hi)
        w.setValue(value)
        w.setSingleStep(step)
        w.setObjectName(name)
        w.setToolTip(tip)
        w.setGroupSeparatorShown(True)
        w.valueChanged.connect(self._settings_changed)
        return w

    def _build_form(self) -> None:
        d = TrainSettings()
        self.form_box = QGroupBox("Settings (TrainSettings)")
        form = QFormLayout(self.form_box)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.source_label = QLabel()
        self.source_label.setObjectName("trainer-source")
        self.source_label.setWordWrap(True)
        self.source_label.setStyleSheet("color:#444")
        form.addRow(self.source_label)
        self.from_loaded_box = QCheckBox("Start from the open checkpoint")
        self.from_loaded_box.setObjectName("trainer-from-loaded")
        self.from_loaded_box.setToolTip("start from the open checkpoint's codebooks instead of a fresh init "
                                        "(K follows it, n_q at most its; each code starts with the uniform "
                                        "EMA share)")
        self.from_loaded_box.toggled.connect(self._settings_changed)
        form.addRow(self.from_loaded_box)
        self.n_q_spin = self._spin(1, 64, d.n_q, "trainer-n_q", "layers (codebooks)")
        self.k_spin = self._spin(2, 1 << 20, d.codebook_size, "trainer-K", "codes per codebook")
        form.addRow("n_q", self.n_q_spin)
        form.addRow("K (codebook size)", self.k_spin)
        self.kmeans_box = QCheckBox("k-means init (on the first batch)")
        self.kmeans_box.setObjectName("trainer-kmeans")
        self.kmeans_box.setChecked(d.kmeans_init)
        self.kmeans_box.setToolTip("off: random (kaiming-uniform) codebooks, as with kmeans_init=False")
        self.kmeans_box.toggled.connect(self._settings_changed)
        form.addRow(self.kmeans_box)
        self.kmeans_iters_spin = self._spin(1, 10_000, d.kmeans_iters, "trainer-kmeans-iters")
        form.addRow("k-means iterations", self.kmeans_iters_spin)
        self.decay_spin = QDoubleSpinBox()
        self.decay_spin.setObjectName("trainer-decay")
        self.decay_spin.setDecimals(5)
        self.decay_spin.setRange(0.0, 0.99999)
        self.decay_spin.setSingleStep(0.001)
        self.decay_spin.setValue(d.decay)
        self.decay_spin.valueChanged.connect(self._settings_changed)
        form.addRow("EMA decay", self.decay_spin)
        self.epsilon_edit = QLineEdit(f"{d.epsilon:g}")
        self.epsilon_edit.setObjectName("trainer-epsilon")
        validator = QDoubleValidator(0.0, 1.0, 12)
        validator.setNotation(QDoubleValidator.Notation.ScientificNotation)
        self.epsilon_edit.setValidator(validator)
        self.epsilon_edit.setToolTip("Laplace smoothing of the EMA cluster sizes")
        self.epsilon_edit.textChanged.connect(self._settings_changed)
        form.addRow("epsilon", self.epsilon_edit)

        self.threshold_spin = QDoubleSpinBox()
        self.threshold_spin.setObjectName("trainer-threshold")
        self.threshold_spin.setDecimals(4)
        self.threshold_spin.setRange(0.0, 1e7)
        self.threshold_spin.setValue(d.threshold_ema_dead_code)
        self.threshold_spin.setToolTip("threshold_ema_dead_code; 0 turns expiry off")
        self.threshold_spin.valueChanged.connect(self._settings_changed)
        form.addRow("dead-code threshold t", self.threshold_spin)
        self.threshold_mode = QComboBox()
        self.threshold_mode.setObjectName("trainer-threshold-mode")
        for value, text in THRESHOLD_MODES:
            self.threshold_mode.addItem(text, value)
        self.threshold_mode.setToolTip("a fixed t = 2 means very different things at K = 1024 and K = 65536; "
                                       "relative: dead when EMA size < t × Σ(EMA sizes) / K, as Moshi does")
        self.threshold_mode.currentIndexChanged.connect(self._settings_changed)
        form.addRow("threshold is", self.threshold_mode)
        self.threshold_note = QLabel()
        self.threshold_note.setObjectName("trainer-threshold-note")
        self.threshold_note.setWordWrap(True)
        self.threshold_note.setStyleSheet("color:#555")
        form.addRow(self.threshold_note)
        self.order_box = QComboBox()
        self.order_box.setObjectName("trainer-order")
        for value, text in ORDERS:
            self.order_box.addItem(text, value)
        self.order_box.currentIndexChanged.connect(self._settings_changed)
        form.addRow("expiry order", self.order_box)
        self.order_note = QLabel()
        self.order_note.setObjectName("trainer-order-note")
        self.order_note.setWordWrap(True)
        self.order_note.setStyleSheet("color:#555")
        form.addRow(self.order_note)
        self.batch_spin = self._spin(1, 1 << 22, d.batch_size, "trainer-batch", "frames drawn per step", 256)
        form.addRow("batch size (frames)", self.batch_spin)
        self.steps_spin = self._spin(1, 10_000_000, d.steps, "trainer-steps", "training steps", 100)
        form.addRow("steps", self.steps_spin)
        self.seed_spin = self._spin(0, 2 ** 31 - 1, d.seed, "trainer-seed", "one seed for batches, k-means, respawns")
        form.addRow("seed", self.seed_spin)
        self.max_frames_spin = self._spin(1000, 50_000_000, MAX_TRAIN_FRAMES, "trainer-max-frames",
                                          "the features are subsampled at random to at most this many frames",
                                          10_000)
        form.addRow("training frames (max)", self.max_frames_spin)

    def _build_controls(self) -> None:
        self.start_button = QPushButton("▶ Start")
        self.pause_button = QPushButton("❚❚ Pause")
        self.resume_button = QPushButton("▶ Resume")
        self.stop_button = QPushButton("■ Stop")
        self.save_button = QPushButton("Save…")
        self.open_button = QPushButton("Open in viewer")
        self.start_button.setObjectName("trainer-start")
        self.pause_button.setObjectName("trainer-pause")
        self.resume_button.setObjectName("trainer-resume")
        self.stop_button.setObjectName("trainer-stop")
        self.save_button.setObjectName("trainer-save")
        self.open_button.setObjectName("trainer-open")
        self.start_button.setToolTip("train a new run with these settings on the open features")
        self.save_button.setToolTip("save run A as a checkpoint (EnCodec / GPT-SoVITS keys, with its step and "
                                    "settings); works while it trains")
        self.open_button.setToolTip("open run A's saved checkpoint in the viewer, with the open features")
        self.start_button.clicked.connect(self.start)
        self.pause_button.clicked.connect(self.pause)
        self.resume_button.clicked.connect(self.resume)
        self.stop_button.clicked.connect(self.stop)
        self.save_button.clicked.connect(self.ask_save)
        self.open_button.clicked.connect(self.open_saved)
        self.progress = QProgressBar()
        self.progress.setObjectName("trainer-progress")
        self.progress.setFixedWidth(200)
        self.progress.setFormat("step %v / %m")
        self.button_row = QHBoxLayout()
        for w in (self.start_button, self.pause_button, self.resume_button, self.stop_button, self.save_button,
                  self.open_button):
            self.button_row.addWidget(w)
        self.button_row.addStretch(1)
        self.button_row.addWidget(self.progress)
        self.status = header_label()
        self.status.setObjectName("trainer-status")

        self.run_a_box = QComboBox()
        self.run_a_box.setObjectName("trainer-run-a")
        self.run_b_box = QComboBox()
        self.run_b_box.setObjectName("trainer-run-b")
        self.run_a_box.setMinimumWidth(120)
        self.run_b_box.setMinimumWidth(120)
        self.run_a_box.currentIndexChanged.connect(lambda _: self._shown_changed())
        self.run_b_box.currentIndexChanged.connect(lambda _: self._shown_changed())
        self.raster_layer = QComboBox()
        self.raster_layer.setObjectName("trainer-raster-layer")
        self.raster_layer.currentIndexChanged.connect(lambda _: self._shown_changed())
        self.compare_label = header_label()
        self.compare_label.setObjectName("trainer-compare")
        self.compare_row = QHBoxLayout()
        self.compare_row.addWidget(QLabel("Compare: A (solid)"))
        self.compare_row.addWidget(self.run_a_box)
        self.compare_row.addWidget(QLabel("B (dashed)"))
        self.compare_row.addWidget(self.run_b_box)
        self.compare_row.addWidget(self.compare_label, 1)
        self.compare_row.addWidget(QLabel("replacements of"))
        self.compare_row.addWidget(self.raster_layer)
        self.legend_label = QLabel()
        self.legend_label.setObjectName("trainer-legend")
        self.hover = QLabel(" ")
        self.hover.setObjectName("trainer-hover")
        self.hover.setStyleSheet("color:#444")

    def _build_plots(self) -> None:
        self.canvas = pg.GraphicsLayoutWidget()
        self.canvas.setObjectName("trainer-canvas")
        self.canvas.ci.layout.setSpacing(4)
        self.plots: dict[str, pg.PlotItem] = {}
        for i, (name, label) in enumerate(PLOTS):
            p = self.canvas.addPlot(row=i // 2, col=i % 2)
            p.setMenuEnabled(False)
            p.hideButtons()
            p.showGrid(x=True, y=True, alpha=0.2)
            p.setTitle(label, size="9pt")
            p.getAxis("left").setWidth(46)
            if i >= 2:
                p.setLabel("bottom", "step")
            if i > 0:
                p.setXLink(self.plots["perplexity"])
            self.plots[name] = p
        self.raster_plot = self.canvas.addPlot(row=0, col=2, rowspan=2)
        self.raster_plot.setMenuEnabled(False)
        self.raster_plot.hideButtons()
        self.raster_plot.setLabel("bottom", "step")
        self.raster_plot.setLabel("left", "code")
        self.raster_plot.setTitle("dead-code replacements (run A)", size="9pt")
        self.raster_image = pg.ImageItem(axisOrder="row-major")
        self.raster_plot.addItem(self.raster_image)
        self.raster_cmap = pg.colormap.get("inferno")
        self.raster_bar = pg.ColorBarItem(values=(0, 1), colorMap=self.raster_cmap, interactive=False, width=10,
                                          colorMapMenu=False, pen="#888888", label="log10(1 + replacements)")
        self.raster_bar.setImageItem(self.raster_image)
        self.canvas.addItem(self.raster_bar, row=0, col=3, rowspan=2)
        self.canvas.ci.layout.setColumnStretchFactor(0, 3)
        self.canvas.ci.layout.setColumnStretchFactor(1, 3)
        self.canvas.ci.layout.setColumnStretchFactor(2, 3)
        self.curves: dict[tuple[str, str, int], pg.PlotDataItem] = {}
        self._hover_proxy = pg.SignalProxy(self.canvas.scene().sigMouseMoved, rateLimit=30, slot=self._hovered)

    def _build_runs(self) -> None:
        self.runs_table = QTableWidget(0, len(RUN_COLUMNS))
        self.runs_table.setObjectName("trainer-runs")
        self.runs_table.setHorizontalHeaderLabels(RUN_COLUMNS)
        self.runs_table.verticalHeader().setVisible(False)
        self.runs_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.runs_table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.runs_table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.runs_table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.runs_table.horizontalHeader().setStretchLastSection(True)
        self.runs_table.setToolTip("double-click a run to put its settings back in the form")
        self.runs_table.cellDoubleClicked.connect(lambda row, _: self.use_settings_of(row))

    # --- the window's view protocol ----------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return True

    def set_session(self, session) -> None:
        self.session = session
        q = getattr(session, "quantizer", None)
        if q is not None and not self.runs and q is not self._shaped_by:
            # until the first run, the form follows the open checkpoint's shape and dead-code rule
            self._shaped_by = q
            self.n_q_spin.setValue(q.n_q)
            self.k_spin.setValue(q.codebook_size)
            rule = getattr(q, "dead_code_rule", None)
            if rule is not None and rule.kind in ("absolute", "relative"):
                self.threshold_spin.setValue(float(rule.value))
                self.threshold_mode.setCurrentIndex(1 if rule.kind == "relative" else 0)
        self._update_source()
        self._settings_changed()

    def set_snapshot(self, snapshot) -> None:
        pass

    def cleanup(self) -> None:
        self.timer.stop()
        if self.control is not None:
            self.control.stop.set()
        self.slot.cancel()
        self.save_slot.cancel()
        self._hover_proxy.disconnect()

    # --- settings ------------------------------------------------------------------------------------------
    def settings(self) -> TrainSettings:
        try:
            epsilon = float(self.epsilon_edit.text())
        except ValueError:
            epsilon = TrainSettings().epsilon
        return TrainSettings(n_q=self.n_q_spin.value(), codebook_size=self.k_spin.value(),
                             kmeans_init=self.kmeans_box.isChecked(), kmeans_iters=self.kmeans_iters_spin.value(),
                             decay=self.decay_spin.value(), epsilon=epsilon,
                             threshold_ema_dead_code=self.threshold_spin.value(),
                             threshold_relative=bool(self.threshold_mode.currentData()),
                             expire_before_ema=bool(self.order_box.currentData()),
                             batch_size=self.batch_spin.value(), steps=self.steps_spin.value(),
                             seed=self.seed_spin.value())

    def set_settings(self, s: TrainSettings) -> None:
        for w in self._form_widgets():
            w.blockSignals(True)
        self.n_q_spin.setValue(s.n_q)
        self.k_spin.setValue(s.codebook_size)
        self.kmeans_box.setChecked(s.kmeans_init)
        self.kmeans_iters_spin.setValue(s.kmeans_iters)
        self.decay_spin.setValue(s.decay)
        self.epsilon_edit.setText(f"{s.epsilon:g}")
        self.threshold_spin.setValue(s.threshold_ema_dead_code)
        self.threshold_mode.setCurrentIndex(1 if s.threshold_relative else 0)
        self.order_box.setCurrentIndex(0 if s.expire_before_ema else 1)
        self.batch_spin.setValue(s.batch_size)
        self.steps_spin.setValue(s.steps)
        self.seed_spin.setValue(s.seed)
        for w in self._form_widgets():
            w.blockSignals(False)
        self._settings_changed()

    def _form_widgets(self):
        return [self.n_q_spin, self.k_spin, self.kmeans_box, self.kmeans_iters_spin, self.decay_spin,
                self.epsilon_edit, self.threshold_spin, self.threshold_mode, self.order_box, self.batch_spin,
                self.steps_spin, self.seed_spin]

    def _settings_changed(self, *_) -> None:
        q = getattr(self.session, "quantizer", None)
        reason = loaded_codebooks_reason(q)
        self.from_loaded_box.setToolTip(self.from_loaded_box.toolTip().split("\n")[0] +
                                        (f"\nnot possible: {reason}" if reason else ""))
        if self.from_loaded_box.isChecked() and not reason:
            self.k_spin.blockSignals(True)
            self.k_spin.setValue(q.codebook_size)
            self.k_spin.blockSignals(False)
            self.n_q_spin.setMaximum(q.n_q)
        else:
            self.n_q_spin.setMaximum(64)
        self._apply_enabled()
        s = self.settings()
        self.threshold_note.setText(threshold_meaning(s))
        self.order_note.setText(ORDER_WHY[s.expire_before_ema])

    def _from_loaded(self) -> bool:
        return self.from_loaded_box.isChecked() and not loaded_codebooks_reason(getattr(self.session, "quantizer",
                                                                                        None))

    def _apply_enabled(self) -> None:
        """The form is frozen while a run trains; starting from loaded codebooks fixes K and the init."""
        busy = self.slot.busy
        for w in self._form_widgets() + [self.max_frames_spin]:
            w.setEnabled(not busy)
        self.from_loaded_box.setEnabled(not busy and not loaded_codebooks_reason(getattr(self.session, "quantizer",
                                                                                         None)))
        if not busy and self._from_loaded():
            self.k_spin.setEnabled(False)
            self.kmeans_box.setEnabled(False)
            self.kmeans_iters_spin.setEnabled(False)
        elif not busy:
            self.kmeans_iters_spin.setEnabled(self.kmeans_box.isChecked())

    def use_settings_of(self, row: int) -> None:
        if 0 <= row < len(self.runs):
            self.set_settings(self.runs[row].settings)

    def _update_source(self) -> None:
        s = self.session
        if s is None:
            text = "<i>Open a checkpoint and features to train on (File ▸ Open features).</i>"
        elif s.source is None:
            text = "<i>No features open: File ▸ Open features… to train on them.</i>"
        else:
            names = ", ".join(Path(p).name for p in s.features[:2]) + (" …" if len(s.features) > 2 else "")
            text = f"Trains on <b>{html.escape(names)}</b> ({s.total_frames:,} frames, dim {s.quantizer.dim})"
            if s.quantizer.transform is not None:
                text += ", through the checkpoint's input transform"
        self.source_label.setText(text)
        self._update_buttons()

    # --- running -------------------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.slot.busy

    def start(self) -> RunHistory | None:
        """Start a new run with the form's settings on the session's features."""
        s = self.session
        if s is None or s.source is None or self.slot.busy:
            return None
        settings = self.settings()
        q = s.quantizer
        init = None
        start = "k-means init" if settings.kmeans_init else "random init"
        if self._from_loaded():
            init = loaded_codebooks(q)[: settings.n_q]
            start = f"from {s.name}"
        transform = q.transform is not None
        key = frames_key(s.features, q.dim, self.max_frames_spin.value(), transform)
        frames = self._frames if self._frames is not None and self._frames.key == key else None
        run = RunHistory(f"run {len(self.runs) + 1}", settings, start=start)
        previous = self.current_a()
        self.runs.append(run)
        self.run = run
        self.control = TrainControl()
        self._controls[run.name] = self.control
        for old in self.runs[:-KEEP_TRAINERS]:          # a big trainer holds K x D x n_q x 2 floats
            self._controls.pop(old.name, None)
        self._refresh_run_boxes(a=run, b=previous)
        self.progress.setRange(0, settings.steps)
        self.progress.setValue(0)
        self.slot.start(train_stream, self.control, settings, frames=frames, feature_paths=list(s.features),
                        dim=q.dim, quantizer=q if transform else None, max_frames=self.max_frames_spin.value(),
                        init_codebooks=init, yielded=lambda v, r=run: self._yielded(r, v),
                        errored=lambda e, r=run: self._failed(r, e))
        self._update_buttons()
        self._show_status()
        return run

    def pause(self) -> None:
        if self.control is not None and self.slot.busy:
            self.control.pause.set()
            self._update_buttons()

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
            self._fill_runs_table()

    def _failed(self, run: RunHistory, exc: Exception) -> None:
        run.error = str(exc) if isinstance(exc, RvqViewerError) else f"{type(exc).__name__}: {exc}"
        run.set_state("failed")
        self._show_status()
        self._fill_runs_table()
        self._update_buttons()

    # --- saving / opening ----------------------------------------------------------------------------------
    def _start_dir(self) -> str:
        try:
            from .. import settings
            return settings.get("last_dir") or ""
        except Exception:  # noqa: BLE001
            return ""

    def ask_save(self) -> None:
        run = self.current_a()
        if run is None or run.name not in self._controls or self._controls[run.name].trainer is None:
            return
        name = f"{run.name.replace(' ', '_')}_step{run.last_step:06d}.pt"
        start = str(Path(self._start_dir() or Path.cwd()) / name)
        path, _ = QFileDialog.getSaveFileName(self, "Save the trained quantizer", start,
                                              "PyTorch checkpoint (*.pt);;All files (*)")
        if path:
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
        run.version += 1
        self._fill_runs_table()
        self._show_status()
        self.status.setText(self.status.text() + f"<br>Saved {html.escape(run.name)} at step {step:,} to "
                            f"{html.escape(path)}: opens in rvq-viewer like any checkpoint.")
        self._update_buttons()

    def _save_failed(self, run: RunHistory, exc: Exception) -> None:
        self.status.setText(f"<span style='color:{DEAD_COLOR}'>Cannot save {html.escape(run.name)}: "
                            f"{html.escape(str(exc))}</span>")
        self._update_buttons()

    def open_saved(self) -> None:
        run = self.current_a()
        if run is None or run.saved_path is None or self.window_ is None:
            return
        self.window_.open(run.saved_path)      # keeps the open features when they fit

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
        self.open_button.setEnabled(a is not None and a.saved_path is not None and self.window_ is not None)
        self._apply_enabled()

    def _show_status(self) -> None:
        run = self.run
        if run is None:
            self.status.setText("<i>Set the settings and press Start: the curves update live; "
                                "change one setting and Start again to compare the two runs.</i>")
            return
        words = {"reading": "reading the feature frames…", "initialising": "k-means init on the first batch…",
                 "running": "training", "paused": "paused", "stopped": "stopped", "finished": "finished",
                 "failed": "failed", "starting": "starting…"}
        text = f"<b>{html.escape(run.name)}</b> {words.get(run.state, run.state)}"
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
        self._drawn.clear()
        self._fill_runs_table()
        self._update_buttons()
        self.redraw(force=True)

    def _fill_runs_table(self) -> None:
        t = self.runs_table
        t.setRowCount(len(self.runs))
        for row, run in enumerate(self.runs):
            f = run.final()
            util = f"{f['utilization']:.1%}" if "utilization" in f else "–"
            perp = f"{f['perplexity']:,.0f}" if "perplexity" in f else "–"
            values = [run.name, describe_settings(run.settings), run.start, f"{f['steps']:,}", run.state, util, perp,
                      f"{f.get('dead', 0):,}", f"{f['events']:,}", f"{f['distinct_replaced']:,}",
                      str(run.saved_path.name) if run.saved_path else ""]
            for col, value in enumerate(values):
                item = t.item(row, col)
                if item is None:
                    item = QTableWidgetItem()
                    t.setItem(row, col, item)
                item.setText(value)
                if col == 1:
                    item.setToolTip(run.describe())
        self._show_compare()

    def _show_compare(self) -> None:
        a, b = self.current_a(), self.current_b()
        if a is None:
            self.compare_label.setText("")
            self.legend_label.setText("")
            return
        colors = " ".join(f"<span style='color:{LAYER_COLORS[i % len(LAYER_COLORS)]}'>■ L{i}</span>"
                          for i in range(max(a.settings.n_q, b.settings.n_q if b else 0)))
        legend = f"{colors} &nbsp; solid: <b>{html.escape(a.name)}</b> ({html.escape(describe_settings(a.settings))})"
        if b is not None and b is not a:
            legend += f" &nbsp; dashed: <b>{html.escape(b.name)}</b>"
            diff = settings_diff(b.settings, a.settings)
            text = f"B → A: {html.escape('; '.join(diff) or 'same settings')}"
            if a.start != b.start:
                text += f"; {html.escape(b.start)} → {html.escape(a.start)}"
            fa, fb = a.final(), b.final()
            if "utilization" in fa and "utilization" in fb:
                text += (f" · codes used: A {fa['utilization']:.0%} vs B {fb['utilization']:.0%}, "
                         f"perplexity A {fa['perplexity']:,.0f} vs B {fb['perplexity']:,.0f}")
            self.compare_label.setText(text)
        else:
            self.compare_label.setText("")
        self.legend_label.setText(legend)

    # --- drawing (10 Hz) -----------------------------------------------------------------------------------
    def _curve(self, slot: str, plot: str, layer: int) -> pg.PlotDataItem:
        key = (slot, plot, layer)
        item = self.curves.get(key)
        if item is None:
            color = layer_color(layer)
            if slot == "B":
                color.setAlpha(170)
                pen = pg.mkPen(color, width=1.3, style=Qt.PenStyle.DashLine)
            else:
                pen = pg.mkPen(color, width=1.6)
            item = pg.PlotDataItem(pen=pen, skipFiniteCheck=True)
            item.setDownsampling(auto=True, method="peak")
            item.setClipToView(True)
            item.setZValue(2 if slot == "A" else 1)
            self.plots[plot].addItem(item)
            self.curves[key] = item
        return item

    def redraw(self, force: bool = False) -> None:
        """Draw what changed since the last tick (timer) or everything (force)."""
        shown = {"A": self.current_a(), "B": self.current_b()}
        if shown["B"] is shown["A"]:
            shown["B"] = None
        changed = False
        for slot, run in shown.items():
            version = (id(run), run.version if run is not None else -1)
            if not force and self._drawn.get(slot) == version:
                continue
            self._drawn[slot] = version
            changed = True
            n_q = run.settings.n_q if run is not None else 0
            for (s, plot, layer), item in self.curves.items():
                if s == slot and (run is None or layer >= n_q):
                    item.setData([], [])
            if run is None or len(run) == 0:
                continue
            x = run.steps.astype(np.float64)
            for plot, _ in PLOTS:
                values = run.curve(plot)
                for layer in range(n_q):
                    self._curve(slot, plot, layer).setData(x, values[:, layer].astype(np.float64))
            if slot == "A":
                self._draw_raster(run)
        if changed:
            self._update_x_range()
            if self.run is not None and self.slot.busy:
                self.progress.setValue(self.run.last_step)
                self._show_status()
            self._fill_runs_table()

    def _update_x_range(self) -> None:
        runs = [r for r in (self.current_a(), self.current_b()) if r is not None]
        if not runs:
            return
        top = max(r.settings.steps for r in runs)
        self.plots["perplexity"].setXRange(0, top, padding=0.02)

    def _draw_raster(self, run: RunHistory) -> None:
        layer = self.raster_layer.currentData()
        if not isinstance(layer, int) or layer >= run.settings.n_q:
            layer = 0
        raster = run.raster[layer]           # [step bins, code bins]
        image = np.log10(1.0 + raster.T.astype(np.float32))
        top = float(image.max()) or 1.0
        self.raster_image.setImage(image, levels=(0.0, top), autoLevels=False)
        self.raster_image.setRect(QRectF(0, 0, raster.shape[0] * run.step_bin, raster.shape[1] * run.code_bin))
        self.raster_bar.setLevels(values=(0.0, top))
        self.raster_plot.setTitle(f"dead-code replacements, layer {layer} ({html.escape(run.name)})", size="9pt")
        self.raster_plot.setXRange(0, run.settings.steps, padding=0.02)
        self.raster_plot.setYRange(0, run.settings.codebook_size, padding=0.02)

    def _hovered(self, args) -> None:
        pos = args[0]
        a = self.current_a()
        if a is None:
            return
        vb = self.raster_plot.getViewBox()
        if vb.sceneBoundingRect().contains(pos):
            p = vb.mapSceneToView(pos)
            layer = self.raster_layer.currentData() or 0
            col, row = int(p.x() // a.step_bin), int(p.y() // a.code_bin)
            if 0 <= col < a.raster.shape[1] and 0 <= row < a.raster.shape[2]:
                codes = f"code {row * a.code_bin}" if a.code_bin == 1 else \
                    f"codes {row * a.code_bin}–{(row + 1) * a.code_bin - 1}"
                steps = f"step {col * a.step_bin}" if a.step_bin == 1 else \
                    f"steps {col * a.step_bin}–{(col + 1) * a.step_bin - 1}"
                self.hover.setText(f"layer {layer}, {codes}, {steps}: {int(a.raster[layer, col, row]):,} "
                                   "replacements")
                return
        self.hover.setText(" ")

    def export_png(self, path) -> None:
        export_scene_png(self.canvas.ci, path)


# ======================================================================================================
# install
# ======================================================================================================

def install(window) -> TrainerPanel:
    """Add the Trainer dock and a Train menu to a MainWindow; returns the panel.

    Uses `selection`, `session`, `open`, `views` (the panel joins it: set_session / cleanup come from
    the window), `menuBar()`, `addDockWidget`, `tabifyDockWidget`, `docks`, `restoreDockWidget`.
    """
    if getattr(window, "trainer_panel", None) is not None:  # once per window
        return window.trainer_panel
    panel = TrainerPanel(window.selection, window)
    dock = add_bottom_dock(window, panel, "Trainer (what-if)", "trainer")
    window.trainer_panel, window.trainer_dock = panel, dock

    def show() -> None:
        dock.show()
        dock.raise_()
        if not dock.isFloating() and dock.height() < 440:
            window.resizeDocks([dock], [460], Qt.Orientation.Vertical)

    _, help_action = find_menu(window, "Help")
    train = QMenu("&Train", window)
    if help_action is not None:
        window.menuBar().insertMenu(help_action, train)
    else:
        window.menuBar().addMenu(train)
    entries = [("What-if &trainer", show, "Ctrl+T"), (None, None, None),
               ("&Start run", lambda: (show(), panel.start()), None),
               ("&Pause", panel.pause, None), ("&Resume", panel.resume, None), ("S&top", panel.stop, None),
               (None, None, None), ("&Save run…", panel.ask_save, None)]
    actions = {}
    for text, slot, shortcut in entries:
        if text is None:
            train.addSeparator()
            continue
        act = QAction(text, window)
        if shortcut:
            act.setShortcut(shortcut)
        act.triggered.connect(lambda checked=False, f=slot: f())
        train.addAction(act)
        window.addAction(act)
        actions[text.replace("&", "")] = act
    window.train_menu = train
    window.trainer_actions = actions

    def sync_actions() -> None:
        actions["Start run"].setEnabled(panel.start_button.isEnabled())
        actions["Pause"].setEnabled(panel.pause_button.isEnabled())
        actions["Resume"].setEnabled(panel.resume_button.isEnabled())
        actions["Stop"].setEnabled(panel.stop_button.isEnabled())
        actions["Save run…"].setEnabled(panel.save_button.isEnabled())

    train.aboutToShow.connect(sync_actions)
    view_menu, _ = find_menu(window, "View")
    if view_menu is not None:
        view_menu.addAction(dock.toggleViewAction())
    return panel
