"""The trainer's settings form: every `TrainSettings` field, with what the threshold and the expiry order
mean at this K and batch spelled out under them."""

from __future__ import annotations

import html
from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtGui import QDoubleValidator
from PySide6.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QGroupBox, QLabel, QLineEdit, QSpinBox

from ...training import MAX_TRAIN_FRAMES, TrainSettings, loaded_codebooks_reason, threshold_meaning
from ..widgets.common import mark_muted

ORDERS = [(True, "EnCodec: expire, then EMA update"), (False, "GPT-SoVITS: EMA update, then expire")]
ORDER_WHY = {True: "A respawned code is overwritten by the stale EMA average in the same step, so expiry "
                   "barely helps (EnCodec's order).",
             False: "A respawned code keeps its new position until the next step's update, so it can catch "
                    "frames (GPT-SoVITS's order)."}
THRESHOLD_MODES = [(False, "absolute: EMA size < t"), (True, "relative (Moshi): < t × uniform share")]


def _note() -> QLabel:
    label = QLabel()
    label.setWordWrap(True)
    mark_muted(label)
    return label


class TrainerForm(QGroupBox):
    """`settings()` reads the form, `set_settings` fills it; `changed` fires on every edit."""

    changed = Signal()

    def __init__(self, parent=None):
        super().__init__("Settings (TrainSettings)", parent)
        self.session = None
        d = TrainSettings()
        form = QFormLayout(self)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.source_label = QLabel()
        self.source_label.setObjectName("trainer-source")
        self.source_label.setWordWrap(True)
        mark_muted(self.source_label)
        form.addRow(self.source_label)
        self.from_loaded_box = QCheckBox("Start from the open checkpoint")
        self.from_loaded_box.setObjectName("trainer-from-loaded")
        self.from_loaded_box.setToolTip("start from the open checkpoint's codebooks instead of a fresh init "
                                        "(K follows it, n_q at most its; each code starts with the uniform "
                                        "EMA share)")
        self.from_loaded_box.toggled.connect(self._changed)
        form.addRow(self.from_loaded_box)
        self.n_q_spin = self._spin(1, 64, d.n_q, "trainer-n_q", "layers (codebooks)")
        self.k_spin = self._spin(2, 1 << 20, d.codebook_size, "trainer-K", "codes per codebook")
        form.addRow("n_q", self.n_q_spin)
        form.addRow("K (codebook size)", self.k_spin)
        self.kmeans_box = QCheckBox("k-means init (on the first batch)")
        self.kmeans_box.setObjectName("trainer-kmeans")
        self.kmeans_box.setChecked(d.kmeans_init)
        self.kmeans_box.setToolTip("off: random (kaiming-uniform) codebooks, as with kmeans_init=False")
        self.kmeans_box.toggled.connect(self._changed)
        form.addRow(self.kmeans_box)
        self.kmeans_iters_spin = self._spin(1, 10_000, d.kmeans_iters, "trainer-kmeans-iters")
        form.addRow("k-means iterations", self.kmeans_iters_spin)
        self.decay_spin = QDoubleSpinBox()
        self.decay_spin.setObjectName("trainer-decay")
        self.decay_spin.setDecimals(5)
        self.decay_spin.setRange(0.0, 0.99999)
        self.decay_spin.setSingleStep(0.001)
        self.decay_spin.setValue(d.decay)
        self.decay_spin.valueChanged.connect(self._changed)
        form.addRow("EMA decay", self.decay_spin)
        self.epsilon_edit = QLineEdit(f"{d.epsilon:g}")
        self.epsilon_edit.setObjectName("trainer-epsilon")
        validator = QDoubleValidator(0.0, 1.0, 12)
        validator.setNotation(QDoubleValidator.Notation.ScientificNotation)
        self.epsilon_edit.setValidator(validator)
        self.epsilon_edit.setToolTip("Laplace smoothing of the EMA cluster sizes")
        self.epsilon_edit.textChanged.connect(self._changed)
        form.addRow("epsilon", self.epsilon_edit)
        self.threshold_spin = QDoubleSpinBox()
        self.threshold_spin.setObjectName("trainer-threshold")
        self.threshold_spin.setDecimals(4)
        self.threshold_spin.setRange(0.0, 1e7)
        self.threshold_spin.setValue(d.threshold_ema_dead_code)
        self.threshold_spin.setToolTip("threshold_ema_dead_code; 0 turns expiry off")
        self.threshold_spin.valueChanged.connect(self._changed)
        form.addRow("dead-code threshold t", self.threshold_spin)
        self.threshold_mode = self._combo("trainer-threshold-mode", THRESHOLD_MODES)
        self.threshold_mode.setToolTip("a fixed t = 2 means very different things at K = 1024 and K = 65536; "
                                       "relative: dead when EMA size < t × Σ(EMA sizes) / K, as Moshi does")
        form.addRow("threshold is", self.threshold_mode)
        self.threshold_note = _note()
        self.threshold_note.setObjectName("trainer-threshold-note")
        form.addRow(self.threshold_note)
        self.order_box = self._combo("trainer-order", ORDERS)
        form.addRow("expiry order", self.order_box)
        self.order_note = _note()
        self.order_note.setObjectName("trainer-order-note")
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
        for box in (self.threshold_mode, self.order_box):
            box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            box.setMinimumContentsLength(14)
        self._busy = False

    def _spin(self, lo, hi, value, name, tip="", step=1) -> QSpinBox:
        w = QSpinBox()
        w.setRange(lo, hi)
        w.setValue(value)
        w.setSingleStep(step)
        w.setObjectName(name)
        w.setToolTip(tip)
        w.setGroupSeparatorShown(True)
        w.valueChanged.connect(self._changed)
        return w

    def _combo(self, name: str, items) -> QComboBox:
        box = QComboBox()
        box.setObjectName(name)
        for value, text in items:
            box.addItem(text, value)
        box.currentIndexChanged.connect(self._changed)
        return box

    # --- the session --------------------------------------------------------------------------------------
    @property
    def quantizer(self):
        return getattr(self.session, "quantizer", None)

    def set_session(self, session, follow_shape: bool) -> None:
        """A new session; with `follow_shape` (no run yet) the form takes its shape and dead-code rule."""
        self.session = session
        q = self.quantizer
        if q is not None and follow_shape:
            self.n_q_spin.setValue(q.n_q)
            self.k_spin.setValue(q.codebook_size)
            rule = q.dead_code_rule
            if rule.kind in ("absolute", "relative"):
                self.threshold_spin.setValue(float(rule.value))
                self.threshold_mode.setCurrentIndex(1 if rule.kind == "relative" else 0)
        s = session
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
        self._changed()

    # --- settings -----------------------------------------------------------------------------------------
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
        for w in self.widgets():
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
        for w in self.widgets():
            w.blockSignals(False)
        self._changed()

    def widgets(self):
        return [self.n_q_spin, self.k_spin, self.kmeans_box, self.kmeans_iters_spin, self.decay_spin,
                self.epsilon_edit, self.threshold_spin, self.threshold_mode, self.order_box, self.batch_spin,
                self.steps_spin, self.seed_spin]

    def from_loaded(self) -> bool:
        """Start from the open checkpoint's codebooks: asked for, and possible."""
        return self.from_loaded_box.isChecked() and not loaded_codebooks_reason(self.quantizer)

    def _changed(self, *_) -> None:
        q = self.quantizer
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
        self.set_busy(self._busy)
        s = self.settings()
        self.threshold_note.setText(threshold_meaning(s))
        self.order_note.setText(ORDER_WHY[s.expire_before_ema])
        self.changed.emit()

    def set_busy(self, busy: bool) -> None:
        """The form is frozen while a run trains; starting from loaded codebooks fixes K and the init."""
        self._busy = busy
        for w in self.widgets() + [self.max_frames_spin]:
            w.setEnabled(not busy)
        self.from_loaded_box.setEnabled(not busy and not loaded_codebooks_reason(self.quantizer))
        if not busy and self.from_loaded():
            self.k_spin.setEnabled(False)
            self.kmeans_box.setEnabled(False)
            self.kmeans_iters_spin.setEnabled(False)
        elif not busy:
            self.kmeans_iters_spin.setEnabled(self.kmeans_box.isChecked())
