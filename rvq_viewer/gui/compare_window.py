"""Compare two audits side by side, the HTML report export, and `install(window)`, which adds these and
the Diagnosis panel to a `MainWindow` through its public attributes.

Compare window: A and B are two checkpoints (of one run, or two runs) on the same features, or one
checkpoint on two feature sets. Both audits, both diagnoses and `compare.compare` run in one worker
(`compare_jobs.compare_job`) with progress and cancel. The window shows, for the selected layer:
- the per-layer metrics of A and B and their difference (Δ = B − A, green where B is better);
- both usage histograms on one axis (two filled step curves; rank-frequency and log toggles);
- both centroid sets in one 2-D PCA fitted once on both (two colours; faint = unused on the features);
- each code of A with its nearest code of B (distance, in units of A's code spacing, uses in A and B).
Selecting a code (table row, point, histogram bar) rings it and its match in B everywhere.

The window has its own `Selection` (layer, and a code of A): it outlives the main window's session. While
A is the checkpoint open in the main window, a code selected in one window is selected in the other.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QAbstractTableModel, QEvent, QItemSelection, QItemSelectionModel, QObject, Qt, Signal
from PySide6.QtGui import QAction, QBrush, QColor
from PySide6.QtWidgets import (QAbstractItemView, QCheckBox, QComboBox, QDialog, QDialogButtonBox, QDockWidget,
                               QFileDialog, QGridLayout, QHBoxLayout, QHeaderView, QLabel, QLineEdit, QMainWindow,
                               QProgressBar, QPushButton, QSplitter, QTableView, QTableWidget, QTableWidgetItem,
                               QToolBar, QVBoxLayout, QWidget)

from ..compare import HIGHER_IS_BETTER, Comparison, rank_frequency
from ..errors import RvqViewerError
from . import compare_jobs, settings
from .banner import MessageBanner
from .compare_jobs import CompareOutcome, CompareSpec, Side
from .state import Selection
from .views.common import HEALTH_COLORS, header_label
from .views.diagnosis_panel import SEVERITY_ICONS, DiagnosisPanel
from .workers import JobSlot

A_COLOR = "#0072B2"      # Okabe-Ito blue
B_COLOR = "#D55E00"      # Okabe-Ito vermillion
CHECKPOINT_FILTER = "Quantizer checkpoints (*.pt *.pth *.ckpt *.safetensors *.npy *.npz *.bin);;All files (*)"
FEATURE_FILTER = "Feature files (*.npy *.pt *.pth *.npz *.safetensors);;All files (*)"
HTML_FILTER = "HTML (*.html *.htm)"
PICK_PIXELS = 12         # a click picks the nearest point within this many pixels


def error_text(exc: BaseException) -> str:
    """One line for the user (the main window's rule): our errors say 'path: reason'."""
    if isinstance(exc, RvqViewerError):
        return str(exc)
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _fmt(value, fmt: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return format(value, fmt)


# --- choosing what to compare ---------------------------------------------------------------------------

def parse_paths(text: str) -> list[Path]:
    return [Path(p.strip()) for p in text.split(";") if p.strip()]


def join_paths(paths) -> str:
    return "; ".join(str(p) for p in paths)


class CompareDialog(QDialog):
    """A = the open audit (checkpoint and features), B = another checkpoint and/or another feature set."""

    def __init__(self, parent=None, checkpoint_a=None, features_a=(), checkpoint_b=None, features_b=()):
        super().__init__(parent)
        self.setObjectName("compare-dialog")
        self.setWindowTitle("Compare with…")
        self.setMinimumWidth(640)
        self.ckpt_a = QLineEdit(str(checkpoint_a or ""))
        self.feat_a = QLineEdit(join_paths(features_a))
        self.ckpt_b = QLineEdit(str(checkpoint_b or checkpoint_a or ""))
        self.feat_b = QLineEdit(join_paths(features_b))
        self.feat_b.setPlaceholderText("same features as A")
        for edit, name in ((self.ckpt_a, "ckpt-a"), (self.feat_a, "feat-a"), (self.ckpt_b, "ckpt-b"),
                           (self.feat_b, "feat-b")):
            edit.setObjectName(f"compare-{name}")
            edit.textChanged.connect(self._validate)
        grid = QGridLayout()
        intro = QLabel("Compare two checkpoints (of one run or two runs) on the same features, or one checkpoint "
                       "on two feature sets. Several feature paths are separated by “;”.")
        intro.setWordWrap(True)
        grid.addWidget(intro, 0, 0, 1, 4)
        rows = [("A checkpoint", self.ckpt_a, [("…", lambda: self._pick_checkpoint(self.ckpt_a))]),
                ("A features", self.feat_a, [("Files…", lambda: self._pick_files(self.feat_a)),
                                             ("Folder…", lambda: self._pick_folder(self.feat_a))]),
                ("B checkpoint", self.ckpt_b, [("…", lambda: self._pick_checkpoint(self.ckpt_b))]),
                ("B features", self.feat_b, [("Files…", lambda: self._pick_files(self.feat_b)),
                                             ("Folder…", lambda: self._pick_folder(self.feat_b))])]
        for r, (label, edit, buttons) in enumerate(rows, start=1):
            colour = A_COLOR if label.startswith("A") else B_COLOR
            tag = QLabel(f"<b style='color:{colour}'>{label[0]}</b> {label[2:]}")
            grid.addWidget(tag, r, 0)
            grid.addWidget(edit, r, 1)
            box = QHBoxLayout()
            for text, slot in buttons:
                button = QPushButton(text)
                button.setAutoDefault(False)
                button.clicked.connect(slot)
                box.addWidget(button)
            grid.addLayout(box, r, 2)
        self.hint = QLabel()
        self.hint.setObjectName("compare-hint")
        self.hint.setWordWrap(True)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Compare")
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(grid)
        layout.addWidget(self.hint)
        layout.addWidget(self.buttons)
        self._validate()

    def _start_dir(self, edit: QLineEdit) -> str:
        paths = parse_paths(edit.text())
        if paths:
            return str(paths[0].parent if not paths[0].is_dir() else paths[0])
        return settings.get("last_dir") or ""

    def _pick_checkpoint(self, edit: QLineEdit) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Checkpoint", self._start_dir(edit), CHECKPOINT_FILTER)
        if path:
            edit.setText(path)

    def _pick_files(self, edit: QLineEdit) -> None:
        paths, _ = QFileDialog.getOpenFileNames(self, "Feature files", self._start_dir(edit), FEATURE_FILTER)
        if paths:
            edit.setText(join_paths(paths))

    def _pick_folder(self, edit: QLineEdit) -> None:
        path = QFileDialog.getExistingDirectory(self, "Folder of feature files", self._start_dir(edit))
        if path:
            edit.setText(path)

    def problem(self) -> str:
        """Why the choice cannot be compared ('' when it can)."""
        ckpt_a, ckpt_b = self.ckpt_a.text().strip(), self.ckpt_b.text().strip()
        feats_a, feats_b = parse_paths(self.feat_a.text()), parse_paths(self.feat_b.text())
        if not ckpt_a or not ckpt_b:
            return "Choose a checkpoint for A and for B."
        if not feats_a:
            return "Choose the features A is audited on."
        for path in [Path(ckpt_a), Path(ckpt_b), *feats_a, *feats_b]:
            if not path.exists():
                return f"{path}: no such file or folder."
        spec = self.spec()
        if spec.same_checkpoint and spec.same_features:
            return "B is A: choose another checkpoint for B, or other features for B."
        return ""

    def _validate(self) -> None:
        problem = self.problem()
        self.hint.setText(f"<span style='color:{HEALTH_COLORS['bad']}'>{html.escape(problem)}</span>" if problem
                          else "<span style='color:#555'>Both are audited in the background; A's audit is "
                               "reused when it is the open one.</span>")
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setEnabled(not problem)

    def spec(self, device: str = "auto", chunk_frames: int = 16384) -> CompareSpec:
        return CompareSpec(Path(self.ckpt_a.text().strip()), parse_paths(self.feat_a.text()),
                           Path(self.ckpt_b.text().strip()), parse_paths(self.feat_b.text()), device, chunk_frames)


# --- the code matching table ----------------------------------------------------------------------------

MATCH_COLUMNS = ["Code A", "Uses A", "Nearest B", "Distance", "× spacing", "Uses B", "Mutual", "Drift"]
MATCH_TIPS = ["code of A", "frames A assigns to this code", "the code of B nearest to it (Euclidean)",
              "distance to that code of B",
              "distance in units of A's median nearest-neighbour spacing: < 0.5 means B has a code for the "
              "same region",
              "frames B assigns to that code of B", "the code of B has this code of A as its nearest code too",
              "distance between the codes with the same index in A and B (one run's drift; only when both "
              "have K codes)"]


class MatchModel(QAbstractTableModel):
    """A's codes with their nearest code of B. Columns are numpy arrays; sorting is one argsort."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.columns: list[np.ndarray] = []
        self.rows = np.zeros(0, dtype=np.int64)       # code of A shown in each row
        self._where = np.zeros(0, dtype=np.int64)     # row of each code of A
        self._sort = (0, Qt.SortOrder.AscendingOrder)
        self.has_same_index = False

    def set_layer(self, comparison: Comparison | None, layer: int) -> None:
        self.beginResetModel()
        match = comparison.matches[layer] if comparison is not None and layer < len(comparison.matches) else None
        if match is None:
            self.columns = []
            self.rows = np.zeros(0, dtype=np.int64)
        else:
            k = match.index.size
            uses_a = np.asarray(comparison.usage_a[layer], dtype=np.int64)
            uses_b = np.asarray(comparison.usage_b[layer], dtype=np.int64)
            uses_a = uses_a if uses_a.size == k else np.zeros(k, dtype=np.int64)
            uses_b_match = uses_b[match.index] if uses_b.size == match.reverse_index.size else np.zeros(k, np.int64)
            mutual = match.reverse_index[match.index] == np.arange(k)
            same = match.same_index_distance if match.same_index_distance is not None else np.full(k, np.nan)
            self.has_same_index = match.same_index_distance is not None
            self.columns = [np.arange(k), uses_a, match.index.astype(np.int64), match.distance.astype(np.float64),
                            match.relative.astype(np.float64), uses_b_match, mutual, np.asarray(same, np.float64)]
            self.rows = np.arange(k)
            self._apply_sort()
        self.endResetModel()

    def sort(self, column: int, order=Qt.SortOrder.AscendingOrder) -> None:  # noqa: D401 - Qt override
        self._sort = (column, order)
        if not self.columns:
            return
        self.layoutAboutToBeChanged.emit()
        old = self.persistentIndexList()
        codes = [self.code_at(i.row()) for i in old]
        self._apply_sort()
        # The current and selected rows follow their codes to the new places.
        self.changePersistentIndexList(old, [self.index(self.row_of(code), i.column()) if code >= 0 else i
                                             for code, i in zip(codes, old)])
        self.layoutChanged.emit()

    def _apply_sort(self) -> None:
        column, order = self._sort
        keys = self.columns[column].astype(np.float64)
        keys = np.where(np.isnan(keys), -np.inf, keys)
        idx = np.lexsort((self.columns[0], keys))
        if order == Qt.SortOrder.DescendingOrder:
            idx = idx[::-1]
        self.rows = idx.astype(np.int64)
        self._where = np.empty_like(self.rows)
        self._where[self.rows] = np.arange(self.rows.size)

    def row_of(self, code: int) -> int:
        return int(self._where[code]) if 0 <= code < self._where.size and self.rows.size else -1

    def code_at(self, row: int) -> int:
        return int(self.rows[row]) if 0 <= row < self.rows.size else -1

    def rowCount(self, parent=None):  # noqa: N802
        return 0 if parent is not None and parent.isValid() else int(self.rows.size)

    def columnCount(self, parent=None):  # noqa: N802
        return 0 if parent is not None and parent.isValid() else len(MATCH_COLUMNS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):  # noqa: N802
        if orientation == Qt.Orientation.Horizontal:
            if role == Qt.ItemDataRole.DisplayRole:
                return MATCH_COLUMNS[section]
            if role == Qt.ItemDataRole.ToolTipRole:
                return MATCH_TIPS[section]
        return None

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid() or not self.columns:
            return None
        code, col = int(self.rows[index.row()]), index.column()
        value = self.columns[col][code]
        if role == Qt.ItemDataRole.DisplayRole:
            if col == 6:
                return "yes" if value else ""
            if col in (3, 4, 7):
                return _fmt(float(value), ".3g")
            return f"{int(value):,}"
        if role == Qt.ItemDataRole.TextAlignmentRole:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.ForegroundRole:
            if col == 1 and value == 0:
                return QBrush(QColor(HEALTH_COLORS["bad"]))
            if col == 4 and np.isfinite(value) and value < 0.5:
                return QBrush(QColor(HEALTH_COLORS["ok"]))
        return None


# --- the window -----------------------------------------------------------------------------------------

METRIC_ROWS = [  # key, header, value format, delta format, tooltip
    ("used", "Used / K", None, "+,d", "codes used at least once / codebook size"),
    ("utilization", "Util.", ".1%", None, "used / K (Δ in percentage points)"),
    ("perplexity", "Perpl.", ",.1f", "+,.1f", "exp(entropy of code use)"),
    ("entropy", "Entropy", ".3f", "+.3f", "normalised entropy H / log K"),
    ("dead", "Dead", ",d", "+,d", "codes never used on the features"),
    ("ema_dead", "EMA-dead", ",d", "+,d", "codes the checkpoint's EMA statistics call dead"),
    ("rel_error", "Rel. err", ".4f", "+.4f", "||residual||² / ||input||² after this layer"),
    ("snr_db", "SNR dB", ".2f", "+.2f", "10·log10(1 / rel. error) after this layer"),
]


def _column(header: QWidget, body: QWidget, footer: QWidget | None = None) -> QWidget:
    """A header above a body that takes the free height (and an optional footer below)."""
    box = QWidget()
    layout = QVBoxLayout(box)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.setSpacing(2)
    layout.addWidget(header)
    layout.addWidget(body, 1)
    if footer is not None:
        layout.addWidget(footer)
    return box


class CompareWindow(QMainWindow):
    """Two audits side by side. `start(spec)` runs the comparison; `export_html(path)` writes the report."""

    comparison_ready = Signal(object)     # CompareOutcome
    failed = Signal(str)
    report_written = Signal(object)       # Path

    def __init__(self, parent=None, device=None):
        super().__init__(parent)
        self.setObjectName("rvq-viewer-compare")
        self.setWindowTitle("rvq-viewer — compare")
        self._device = device or (lambda: "auto")
        self.selection = Selection(self)
        self.outcome: CompareOutcome | None = None
        self.spec: CompareSpec | None = None
        self._reuse: Side | None = None
        self._drawn_layer = -1
        self._syncing = False
        self._closing = False
        self.slot = JobSlot("compare", self)
        self.export_slot = JobSlot("compare-report", self)

        self._build_toolbar()
        self.banner = MessageBanner()
        self.header = header_label()
        self.header.setObjectName("compare-header")
        self._build_deltas()
        self._build_matches()
        self._build_histogram()
        self._build_projection()

        left = QSplitter(Qt.Orientation.Vertical)
        left.addWidget(self.deltas)
        left.addWidget(self.match_box)
        left.setStretchFactor(0, 2)
        left.setStretchFactor(1, 3)
        right = QSplitter(Qt.Orientation.Vertical)
        right.addWidget(self.hist_box)
        right.addWidget(self.proj_box)
        right.setStretchFactor(0, 2)
        right.setStretchFactor(1, 3)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(left)
        split.addWidget(right)
        split.setStretchFactor(0, 5)
        split.setStretchFactor(1, 6)
        self.splitter = split
        central = QWidget()
        layout = QVBoxLayout(central)
        layout.setContentsMargins(4, 0, 4, 4)
        layout.setSpacing(2)
        layout.addWidget(self.banner)
        layout.addWidget(self.header)
        layout.addWidget(split, 1)
        self.setCentralWidget(central)
        self._build_statusbar()

        self.selection.layer_changed.connect(self._layer_changed)
        self.selection.code_changed.connect(lambda layer, code: self._show_code())
        self.slot.busy_changed.connect(self._busy)
        self.export_slot.busy_changed.connect(lambda busy: self._update_actions())
        self.resize(1400, 900)
        split.setSizes([730, 670])
        left.setSizes([300, 560])
        right.setSizes([340, 520])
        self._show_header()
        self._update_actions()

    # --- layout -------------------------------------------------------------------------------------------
    def _build_toolbar(self) -> None:
        bar = QToolBar("Compare")
        bar.setObjectName("toolbar-compare")
        bar.setMovable(False)
        self.addToolBar(bar)
        self.change_button = QPushButton("Change…")
        self.change_button.setToolTip("choose other checkpoints or features to compare")
        self.change_button.clicked.connect(self.ask_change)
        bar.addWidget(self.change_button)
        bar.addSeparator()
        bar.addWidget(QLabel(" Layer "))
        self.layer_box = QComboBox()
        self.layer_box.setObjectName("compare-layer")
        self.layer_box.setMinimumWidth(120)
        self.layer_box.currentIndexChanged.connect(lambda i: self.selection.set_layer(i) if i >= 0 else None)
        bar.addWidget(self.layer_box)
        prev_button, next_button = QPushButton("◀"), QPushButton("▶")
        for button, step, tip in ((prev_button, -1, "Previous layer ([)"), (next_button, 1, "Next layer (])")):
            button.setFixedWidth(32)
            button.setToolTip(tip)
            button.clicked.connect(lambda checked=False, s=step: self.selection.step_layer(s))
            bar.addWidget(button)
        for key, step in (("[", -1), ("]", 1)):
            act = QAction(self)
            act.setShortcut(key)
            act.triggered.connect(lambda checked=False, s=step: self.selection.step_layer(s))
            self.addAction(act)
        bar.addSeparator()
        self.sorted_box = QCheckBox("Sorted (rank-frequency)")
        self.sorted_box.setObjectName("compare-sorted")
        self.sorted_box.setToolTip("codes ordered by use, as shares of each side's frames")
        self.log_box = QCheckBox("Log scale")
        self.log_box.setObjectName("compare-log")
        self.log_box.setChecked(True)
        self.sorted_box.toggled.connect(lambda _: self._draw_histogram())
        self.sorted_box.clicked.connect(lambda _: setattr(self, "_sorted_chosen", True))
        self._sorted_chosen = False   # until the user picks, sorted for two checkpoints, by code for one
        self.log_box.toggled.connect(lambda _: self._draw_histogram())
        bar.addWidget(self.sorted_box)
        bar.addWidget(self.log_box)
        bar.addSeparator()
        self.export_button = QPushButton("Export HTML report…")
        self.export_button.setObjectName("compare-export")
        self.export_button.setToolTip("the self-contained report `rvq-viewer report --compare` writes")
        self.export_button.clicked.connect(self.ask_export_html)
        bar.addWidget(self.export_button)

    def _build_statusbar(self) -> None:
        status = self.statusBar()
        self.stage_label = QLabel("")
        self.stage_label.setObjectName("compare-stage")
        self.progress = QProgressBar()
        self.progress.setObjectName("compare-progress")
        self.progress.setRange(0, 1000)
        self.progress.setFixedWidth(220)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setObjectName("compare-cancel")
        self.cancel_button.clicked.connect(self.cancel)
        status.addPermanentWidget(self.stage_label)
        status.addPermanentWidget(self.progress)
        status.addPermanentWidget(self.cancel_button)
        self.progress.hide()
        self.cancel_button.hide()

    def _build_deltas(self) -> None:
        headers = ["Layer", ""] + [m[1] for m in METRIC_ROWS] + ["Close"]
        table = QTableWidget(0, len(headers))
        table.setObjectName("compare-deltas")
        table.setHorizontalHeaderLabels(headers)
        for col, metric in enumerate(METRIC_ROWS, start=2):
            table.horizontalHeaderItem(col).setToolTip(metric[4])
        table.horizontalHeaderItem(len(headers) - 1).setToolTip(
            "close matches: share of A's codes with a code of B nearer than half of A's code spacing")
        table.verticalHeader().setVisible(False)
        table.verticalHeader().setDefaultSectionSize(20)
        table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        header = table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
        table.itemSelectionChanged.connect(self._delta_row_selected)
        self.deltas = table

    def _build_matches(self) -> None:
        self.match_label = header_label()
        self.match_label.setObjectName("compare-match-summary")
        self.match_model = MatchModel(self)
        view = QTableView()
        view.setObjectName("compare-matches")
        view.setModel(self.match_model)
        view.setSortingEnabled(True)
        view.sortByColumn(0, Qt.SortOrder.AscendingOrder)
        view.verticalHeader().setVisible(False)
        view.verticalHeader().setDefaultSectionSize(20)
        view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        view.setAlternatingRowColors(True)
        view.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        view.horizontalHeader().setStretchLastSection(True)
        view.horizontalHeader().setDefaultSectionSize(76)
        view.selectionModel().currentRowChanged.connect(self._match_row_changed)
        self.match_view = view
        self.match_box = _column(self.match_label, view)

    def _build_histogram(self) -> None:
        self.hist_label = header_label()
        self.hist_label.setObjectName("compare-hist-header")
        self.hist = pg.PlotWidget()
        self.hist.setObjectName("compare-histogram")
        item = self.hist.getPlotItem()
        item.setMenuEnabled(False)
        item.hideButtons()
        item.showGrid(x=False, y=True, alpha=0.25)
        item.getViewBox().setMouseEnabled(x=True, y=False)
        step = {"stepMode": "center", "fillLevel": 0.0, "skipFiniteCheck": True, "antialias": False}
        self.curve_a = pg.PlotCurveItem(x=[0.0, 1.0], y=[0.0], pen=pg.mkPen(A_COLOR, width=1.2),
                                        brush=pg.mkBrush(QColor(A_COLOR).red(), QColor(A_COLOR).green(),
                                                         QColor(A_COLOR).blue(), 90), **step)
        self.curve_b = pg.PlotCurveItem(x=[0.0, 1.0], y=[0.0], pen=pg.mkPen(B_COLOR, width=1.2),
                                        brush=pg.mkBrush(QColor(B_COLOR).red(), QColor(B_COLOR).green(),
                                                         QColor(B_COLOR).blue(), 80), **step)
        self.code_line_a = pg.InfiniteLine(angle=90, movable=False, pen=pg.mkPen("#003B5C", width=2.5))
        self.code_line_b = pg.InfiniteLine(angle=90, movable=False,
                                           pen=pg.mkPen("#7A2E00", width=2.5, style=Qt.PenStyle.DashLine))
        for thing in (self.curve_a, self.curve_b, self.code_line_a, self.code_line_b):
            item.addItem(thing)
        self.code_line_a.setZValue(10)
        self.code_line_b.setZValue(10)
        self.code_line_a.hide()
        self.code_line_b.hide()
        self.hist_legend = item.addLegend(offset=(-10, 8), labelTextSize="8pt", brush=pg.mkBrush(255, 255, 255, 210))
        self.hist_legend.addItem(self.curve_a, "A")
        self.hist_legend.addItem(self.curve_b, "B")
        self.hist.scene().sigMouseClicked.connect(self._hist_clicked)
        self._hist_mode = None
        self.hist_box = _column(self.hist_label, self.hist)

    def _build_projection(self) -> None:
        self.proj_label = header_label()
        self.proj_label.setObjectName("compare-proj-header")
        self.proj = pg.PlotWidget()
        self.proj.setObjectName("compare-projection")
        item = self.proj.getPlotItem()
        item.setMenuEnabled(False)
        item.hideButtons()
        item.setAspectLocked(True)
        item.showGrid(x=True, y=True, alpha=0.15)

        def brush(color, alpha):
            c = QColor(color)
            return pg.mkBrush(c.red(), c.green(), c.blue(), alpha)

        # One item per (side, used) group: one brush each keeps ScatterPlotItem on its fast path.
        self.points_a_unused = pg.ScatterPlotItem(size=5, pen=None, brush=brush(A_COLOR, 55), symbol="o")
        self.points_b_unused = pg.ScatterPlotItem(size=6, pen=None, brush=brush(B_COLOR, 55), symbol="t1")
        self.points_a = pg.ScatterPlotItem(size=7, pen=None, brush=brush(A_COLOR, 210), symbol="o")
        self.points_b = pg.ScatterPlotItem(size=8, pen=None, brush=brush(B_COLOR, 210), symbol="t1")
        self.link = pg.PlotCurveItem(pen=pg.mkPen("#333333", width=1.5, style=Qt.PenStyle.DashLine))
        self.ring_a = pg.ScatterPlotItem(size=19, pen=pg.mkPen(A_COLOR, width=3), brush=None, symbol="o")
        self.ring_b = pg.ScatterPlotItem(size=19, pen=pg.mkPen(B_COLOR, width=3), brush=None, symbol="o")
        for z, thing in enumerate((self.points_a_unused, self.points_b_unused, self.points_a, self.points_b,
                                   self.link, self.ring_a, self.ring_b)):
            thing.setZValue(z)
            item.addItem(thing)
        for thing in (self.link, self.ring_a, self.ring_b):
            thing.hide()
        legend = item.addLegend(offset=(-10, 8), labelTextSize="8pt", brush=pg.mkBrush(255, 255, 255, 210))
        legend.addItem(self.points_a, "A used")
        legend.addItem(self.points_a_unused, "A unused")
        legend.addItem(self.points_b, "B used")
        legend.addItem(self.points_b_unused, "B unused")
        self.proj_legend = legend
        self.proj.scene().sigMouseClicked.connect(self._proj_clicked)
        self.code_label = QLabel(" ")
        self.code_label.setObjectName("compare-code")
        self.code_label.setTextFormat(Qt.TextFormat.RichText)
        self.code_label.setWordWrap(True)
        self.proj_box = _column(self.proj_label, self.proj, self.code_label)

    # --- running --------------------------------------------------------------------------------------------
    @property
    def comparison(self) -> Comparison | None:
        return self.outcome.comparison if self.outcome is not None else None

    @property
    def busy(self) -> bool:
        return self.slot.busy

    @property
    def ready(self) -> bool:
        """A comparison is drawn for the selected layer and nothing is running."""
        return self.outcome is not None and not self.slot.busy and self._drawn_layer == self.selection.layer

    def start(self, spec: CompareSpec, reuse_a: Side | None = None) -> None:
        """Audit and compare in the background; the views fill when it is done."""
        self._closing = False
        self.spec, self._reuse = spec, reuse_a
        self.banner.dismiss()
        self.progress.setValue(0)
        self.stage_label.setText("starting…")
        la, lb = spec.labels()
        self.setWindowTitle(f"rvq-viewer — compare {la} with {lb}")
        self.slot.start(compare_jobs.compare_job, spec, reuse_a, yielded=self._progress,
                        returned=self._done, errored=self._failed)

    def cancel(self) -> None:
        if self.slot.busy:
            self.slot.cancel()
            self.stage_label.setText("cancelled")
            self.statusBar().showMessage("Comparison cancelled." + (" The previous one is still shown."
                                                                    if self.outcome else ""), 8000)

    def _busy(self, busy: bool) -> None:
        self.progress.setVisible(busy)
        self.cancel_button.setVisible(busy)
        self._update_actions()
        self._show_header()

    def _progress(self, step: compare_jobs.CompareProgress) -> None:
        self.progress.setValue(int(step.fraction * 1000))
        self.stage_label.setText(step.text)

    def _done(self, outcome: CompareOutcome) -> None:
        self.outcome = outcome
        self.stage_label.setText(f"done in {outcome.seconds:.1f} s")
        self.statusBar().showMessage(f"Compared {outcome.a.label} with {outcome.b.label} "
                                     f"in {outcome.seconds:.1f} s.", 8000)
        n = len(outcome.comparison.layers)
        layer = min(self.selection.layer, max(n - 1, 0))
        self.layer_box.blockSignals(True)
        self.layer_box.clear()
        for i in range(n):
            self.layer_box.addItem(f"Layer {i}", i)
        self.layer_box.blockSignals(False)
        if not self._sorted_chosen:
            # Codes of two checkpoints need not correspond index by index: compare their rank-frequency.
            self.sorted_box.blockSignals(True)
            self.sorted_box.setChecked(outcome.comparison.kind == "quantizers")
            self.sorted_box.blockSignals(False)
        self._fill_deltas()
        self._drawn_layer = -1
        self.selection.reset(n)          # draws layer 0
        if layer:
            self.selection.set_layer(layer)
        self._update_actions()
        self._show_header()
        self.comparison_ready.emit(outcome)

    def _failed(self, exc: Exception) -> None:
        text = error_text(exc)
        self.stage_label.setText("failed")
        self.banner.show_message(html.escape(text), "error")
        self.statusBar().showMessage("Comparison failed", 8000)
        self.failed.emit(text)

    # --- header ---------------------------------------------------------------------------------------------
    def _show_header(self) -> None:
        if self.outcome is None:
            if self.slot.busy and self.spec is not None:
                la, lb = self.spec.labels()
                self.header.setText(f"Comparing <b style='color:{A_COLOR}'>A</b> {html.escape(la)} with "
                                    f"<b style='color:{B_COLOR}'>B</b> {html.escape(lb)}…")
            else:
                self.header.setText("<i>Nothing compared yet: Change… chooses a second checkpoint or feature set."
                                    "</i>")
            return
        c, o = self.outcome.comparison, self.outcome
        kind = {"features": "one checkpoint on two feature sets", "quantizers": "two checkpoints",
                "audits": "two audits"}[c.kind]
        if c.kind == "quantizers" and o.spec.same_features:
            kind += " on the same features"

        def verdict(side: Side) -> str:
            summary = next((v for v in side.verdicts or [] if v.id == "summary"), None)
            if summary is None:
                return html.escape(side.diagnosis_error or "no diagnosis")
            color = {"collapse": HEALTH_COLORS["bad"], "warning": HEALTH_COLORS["warn"]}.get(summary.severity,
                                                                                             HEALTH_COLORS["ok"])
            return (f"<span style='color:{color}'>{SEVERITY_ICONS[summary.severity]} "
                    f"{html.escape(summary.title)}</span>")

        lines = [f"<b>{html.escape(kind.capitalize())}</b>",
                 f"<b style='color:{A_COLOR}'>A</b> {html.escape(c.label_a)} · {c.frames_a:,} frames · "
                 f"{verdict(o.a)}",
                 f"<b style='color:{B_COLOR}'>B</b> {html.escape(c.label_b)} · {c.frames_b:,} frames · "
                 f"{verdict(o.b)}"]
        for note in c.notes:
            lines.append(f"<span style='color:#8a5a00'>note: {html.escape(note)}</span>")
        if self.slot.busy:
            lines.append("<span style='color:#555'>(a new comparison is running)</span>")
        self.header.setText("<br>".join(lines))

    # --- deltas table ---------------------------------------------------------------------------------------
    def _fill_deltas(self) -> None:
        c = self.comparison
        table = self.deltas
        table.blockSignals(True)
        table.clearSpans()
        table.setRowCount(3 * len(c.layers))
        last = table.columnCount() - 1
        for d, match in zip(c.layers, c.matches):
            r = 3 * d.layer
            k_a, k_b = c.usage_a[d.layer].size, c.usage_b[d.layer].size
            table.setSpan(r, 0, 3, 1)
            table.setSpan(r, last, 3, 1)
            self._cell(r, 0, str(d.layer), align=Qt.AlignmentFlag.AlignCenter)
            close = "–" if match is None else f"{match.summary()['close_fraction']:.0%}"
            self._cell(r, last, close, align=Qt.AlignmentFlag.AlignCenter)
            for offset, (side, color) in enumerate((("A", A_COLOR), ("B", B_COLOR), ("Δ", "#333333"))):
                self._cell(r + offset, 1, side, color=color, bold=True, align=Qt.AlignmentFlag.AlignCenter)
            for col, (key, _, fmt, dfmt, _) in enumerate(METRIC_ROWS, start=2):
                a, b, delta = d.a.get(key), d.b.get(key), d.delta.get(key)
                if key == "used":
                    texts = (f"{a:,} / {k_a:,}", f"{b:,} / {k_b:,}", _fmt(delta, dfmt))
                elif key == "utilization":
                    texts = (_fmt(a, fmt), _fmt(b, fmt), "–" if delta is None else f"{100 * delta:+.1f} pp")
                elif key == "snr_db":
                    texts = ("∞" if a is None else _fmt(a, fmt), "∞" if b is None else _fmt(b, fmt),
                             _fmt(delta, dfmt))
                else:
                    texts = (_fmt(a, fmt), _fmt(b, fmt), _fmt(delta, dfmt))
                self._cell(r, col, texts[0])
                self._cell(r + 1, col, texts[1])
                self._cell(r + 2, col, texts[2], color=self._delta_color(key, delta), bold=True)
        table.blockSignals(False)

    @staticmethod
    def _delta_color(key: str, delta) -> str:
        if delta is None or (isinstance(delta, float) and not math.isfinite(delta)) or abs(delta) < 1e-12:
            return "#777777"
        better = (delta > 0) == HIGHER_IS_BETTER.get(key, True)
        return HEALTH_COLORS["ok"] if better else HEALTH_COLORS["bad"]

    def _cell(self, row: int, col: int, text: str, color: str | None = None, bold: bool = False,
              align=Qt.AlignmentFlag.AlignRight) -> None:
        item = QTableWidgetItem(text)
        item.setTextAlignment(align | Qt.AlignmentFlag.AlignVCenter)
        if color:
            item.setForeground(QBrush(QColor(color)))
        if bold:
            font = item.font()
            font.setBold(True)
            item.setFont(font)
        if row % 3 == 2 and col > 0:
            item.setBackground(QBrush(QColor("#F4F5F7")))
        self.deltas.setItem(row, col, item)

    def _delta_row_selected(self) -> None:
        rows = self.deltas.selectionModel().selectedRows()
        if rows and not self._syncing:
            self.selection.set_layer(rows[0].row() // 3)

    def _select_delta_rows(self, layer: int) -> None:
        table = self.deltas
        if 3 * layer + 2 >= table.rowCount():
            return
        table.blockSignals(True)
        model = table.selectionModel()
        model.clearSelection()
        first, last = table.model().index(3 * layer, 0), table.model().index(3 * layer + 2,
                                                                             table.columnCount() - 1)
        model.select(QItemSelection(first, last), QItemSelectionModel.SelectionFlag.Select)
        table.blockSignals(False)
        table.viewport().update()

    # --- per layer ------------------------------------------------------------------------------------------
    def _layer_changed(self, layer: int) -> None:
        if self.comparison is None or layer >= len(self.comparison.layers):
            return
        if self.layer_box.currentIndex() != layer:
            self.layer_box.blockSignals(True)
            self.layer_box.setCurrentIndex(layer)
            self.layer_box.blockSignals(False)
        self._select_delta_rows(layer)
        self.match_model.set_layer(self.comparison, layer)
        self.match_view.setColumnHidden(7, not self.match_model.has_same_index)
        self._show_match_summary(layer)
        self._draw_histogram(autorange=True)
        self._draw_projection()
        self._drawn_layer = layer
        self._show_code()

    def _show_match_summary(self, layer: int) -> None:
        match = self.comparison.matches[layer]
        if match is None:
            self.match_label.setText("<i>No code matching for this layer (see the notes above).</i>")
            return
        s = match.summary()
        parts = [f"<b>Layer {layer}: A's codes matched to their nearest code of B</b>",
                 f"{s['close_fraction']:.0%} have a close match (nearer than ½ of A's spacing {s['scale']:.3g}); "
                 f"median distance {s['median_distance']:.3g} ({s['median_relative']:.2f}× spacing); "
                 f"{s['mutual_nearest']:,} mutual nearest pairs; "
                 f"{s['b_codes_unmatched']:,} of B's {s['codes_b']:,} codes are no A code's nearest."]
        if "same_index_median_distance" in s:
            parts.append(f"Same index in A and B: median distance {s['same_index_median_distance']:.3g}, "
                         f"{s['same_index_unchanged']:,} codes unchanged.")
        self.match_label.setText("<br>".join(parts))

    # --- histogram ------------------------------------------------------------------------------------------
    def _hist_series(self, counts: np.ndarray, frames_equal: bool, ranked: bool, log: bool, floor: float):
        """(edges, y) of one side's step curve in the current mode."""
        counts = np.asarray(counts, dtype=np.float64)
        if ranked:
            y = rank_frequency(counts)
            if log:
                y = y[y > 0]
                ranks = np.arange(1, y.size + 1, dtype=np.float64)
                edges = np.log10(np.concatenate([[0.8], ranks + 0.5]))
                return edges, np.log10(y)
            return np.arange(y.size + 1, dtype=np.float64), y
        total = counts.sum()
        y = counts if frames_equal or total <= 0 else counts / total
        edges = np.arange(y.size + 1, dtype=np.float64)
        if log:
            return edges, np.where(y > 0, np.log10(np.where(y > 0, y, 1.0)), floor)
        return edges, y

    def _draw_histogram(self, autorange: bool = True) -> None:
        c = self.comparison
        layer = self.selection.layer
        item = self.hist.getPlotItem()
        if c is None or layer >= len(c.layers):
            return
        ca, cb = np.asarray(c.usage_a[layer]), np.asarray(c.usage_b[layer])
        ranked, log = self.sorted_box.isChecked(), self.log_box.isChecked()
        frames_equal = c.frames_a == c.frames_b
        share = ranked or not frames_equal
        # A zero sits half a unit below the smallest possible value (1 use, or 1 frame's share).
        smallest = 1.0 if not share else 1.0 / max(c.frames_a, c.frames_b, 1)
        floor = math.log10(0.5 * smallest)
        xa, ya = self._hist_series(ca, frames_equal, ranked, log, floor)
        xb, yb = self._hist_series(cb, frames_equal, ranked, log, floor)
        base = floor if log else 0.0
        for curve, x, y in ((self.curve_a, xa, ya), (self.curve_b, xb, yb)):
            curve.setFillLevel(base)
            if y.size:
                curve.setData(x=x, y=y, stepMode="center", fillLevel=base)
                curve.show()
            else:
                curve.hide()
        unit = "share of frames" if share else "uses"
        item.setLabel("left", f"{unit} (log)" if log else unit)
        item.setLabel("bottom", "rank (by uses)" if ranked else "code")
        left = item.getAxis("left")
        if log:
            top = max([float(y.max()) for y in (ya, yb) if y.size] + [floor + 1])
            ticks = [(float(e), f"{10.0 ** e:g}") for e in range(math.floor(floor) + 1, math.ceil(top) + 1)]
            left.setTicks([ticks, []])
        else:
            left.setTicks(None)
        bottom = item.getAxis("bottom")
        if ranked and log:
            xmax = max(xa[-1] if xa.size else 0.0, xb[-1] if xb.size else 0.0)
            bottom.setTicks([[(float(e), f"{10 ** e:,}") for e in range(0, math.ceil(xmax) + 1)], []])
        else:
            bottom.setTicks(None)
        if autorange or (ranked, log) != self._hist_mode:
            ys = [y for y in (ya, yb) if y.size]
            y_top = max(float(y.max()) for y in ys) if ys else 1.0
            x_lo = min(x[0] for x in (xa, xb) if x.size)
            x_hi = max(x[-1] for x in (xa, xb) if x.size)
            vb = item.getViewBox()
            vb.setLimits(xMin=x_lo - 0.02 * (x_hi - x_lo), xMax=x_hi + 0.02 * (x_hi - x_lo))
            vb.setRange(xRange=(x_lo, x_hi), yRange=(base, y_top + 0.05 * (y_top - base)), padding=0.0)
        self._hist_mode = (ranked, log)
        kind = "rank-frequency (sorted by uses)" if ranked else "uses per code"
        note = "" if frames_equal or ranked else f" as shares: A has {c.frames_a:,} frames, B {c.frames_b:,}"
        used_a, used_b = int((ca > 0).sum()), int((cb > 0).sum())
        self.hist_label.setText(f"<b>Layer {layer}: {kind}</b>{html.escape(note)} · "
                                f"<span style='color:{A_COLOR}'>A uses {used_a:,}/{ca.size:,}</span> · "
                                f"<span style='color:{B_COLOR}'>B uses {used_b:,}/{cb.size:,}</span>")
        self._show_code_lines()

    def _hist_x(self, side: str, code: int) -> float | None:
        """x of a code's bar (its centre) in the current histogram mode; None where it is not drawn."""
        c = self.comparison
        layer = self.selection.layer
        counts = np.asarray((c.usage_a if side == "a" else c.usage_b)[layer])
        if not 0 <= code < counts.size:
            return None
        if not self.sorted_box.isChecked():
            return code + 0.5
        order = np.argsort(-counts, kind="stable")
        rank = int(np.flatnonzero(order == code)[0])
        if self.log_box.isChecked():
            return math.log10(rank + 1) if counts[code] > 0 else None
        return rank + 0.5

    def _show_code_lines(self) -> None:
        code = self.selection.code
        if self.comparison is None or code < 0:
            self.code_line_a.hide()
            self.code_line_b.hide()
            return
        match = self.comparison.matches[self.selection.layer]
        for line, side, which in ((self.code_line_a, "a", code),
                                  (self.code_line_b, "b", int(match.index[code]) if match is not None
                                   and code < match.index.size else -1)):
            x = self._hist_x(side, which) if which >= 0 else None
            if x is None:
                line.hide()
            else:
                line.setPos(x)
                line.show()

    def _hist_clicked(self, event) -> None:
        if self.comparison is None or self.sorted_box.isChecked():
            return
        vb = self.hist.getPlotItem().getViewBox()
        if not vb.sceneBoundingRect().contains(event.scenePos()):
            return
        x = vb.mapSceneToView(event.scenePos()).x()
        k = np.asarray(self.comparison.usage_a[self.selection.layer]).size
        if 0 <= x < k:
            self.selection.set_code(self.selection.layer, int(x))

    # --- projection -----------------------------------------------------------------------------------------
    def _draw_projection(self) -> None:
        c = self.comparison
        layer = self.selection.layer
        p = c.projections[layer] if c is not None and layer < len(c.projections) else None
        groups = (self.points_a, self.points_a_unused, self.points_b, self.points_b_unused)
        if p is None:
            for g in groups:
                g.clear()
            self.proj_label.setText("<i>No joint projection for this layer (see the notes above).</i>")
            return
        ca, cb = np.asarray(c.usage_a[layer]), np.asarray(c.usage_b[layer])
        used_a = ca > 0 if ca.size == len(p.a) else np.ones(len(p.a), dtype=bool)
        used_b = cb > 0 if cb.size == len(p.b) else np.ones(len(p.b), dtype=bool)
        for g, coords, mask in ((self.points_a, p.a, used_a), (self.points_a_unused, p.a, ~used_a),
                                (self.points_b, p.b, used_b), (self.points_b_unused, p.b, ~used_b)):
            idx = np.flatnonzero(mask)
            g.setData(x=coords[idx, 0], y=coords[idx, 1], data=idx)
        both = np.concatenate([p.a, p.b])
        lo, hi = both.min(axis=0), both.max(axis=0)
        pad = 0.05 * np.maximum(hi - lo, 1e-9)
        self.proj.getPlotItem().getViewBox().setRange(xRange=(lo[0] - pad[0], hi[0] + pad[0]),
                                                      yRange=(lo[1] - pad[1], hi[1] + pad[1]), padding=0.0)
        item = self.proj.getPlotItem()
        item.setLabel("bottom", f"PC1 ({p.explained[0]:.0%} of variance)")
        item.setLabel("left", f"PC2 ({p.explained[1]:.0%})")
        self.proj_label.setText(f"<b>Layer {layer}: both centroid sets in one PCA</b>, fitted once on the "
                                f"{html.escape(p.fitted_on)} of A and B · "
                                f"<span style='color:{A_COLOR}'>● A</span> "
                                f"<span style='color:{B_COLOR}'>▲ B</span>, faint = unused on the features")

    def _proj_clicked(self, event) -> None:
        c = self.comparison
        if c is None:
            return
        layer = self.selection.layer
        p = c.projections[layer]
        vb = self.proj.getPlotItem().getViewBox()
        if p is None or not vb.sceneBoundingRect().contains(event.scenePos()):
            return
        where = vb.mapSceneToView(event.scenePos())
        px = np.asarray(vb.viewPixelSize(), dtype=np.float64)
        px = np.where(px > 0, px, 1.0)
        best = None
        for side, coords in (("a", p.a), ("b", p.b)):
            if len(coords) == 0:
                continue
            d2 = (((coords - [where.x(), where.y()]) / px) ** 2).sum(axis=1)
            i = int(np.argmin(d2))
            if best is None or d2[i] < best[0]:
                best = (float(d2[i]), side, i)
        if best is None or best[0] > PICK_PIXELS ** 2:
            return
        _, side, i = best
        code = i
        if side == "b":
            match = c.matches[layer]
            if match is None:
                return
            code = int(match.reverse_index[i])
            self.statusBar().showMessage(f"B code {i}: its nearest code of A is {code}", 6000)
        self.selection.set_code(layer, code)

    # --- selection ------------------------------------------------------------------------------------------
    def _match_row_changed(self, current, _previous) -> None:
        if self._syncing or not current.isValid():
            return
        code = self.match_model.code_at(current.row())
        if code >= 0:
            self.selection.set_code(self.selection.layer, code)

    def _show_code(self) -> None:
        c = self.comparison
        if c is None or self._drawn_layer != self.selection.layer:
            return
        layer, code = self.selection.layer, self.selection.code
        p, match = c.projections[layer], c.matches[layer]
        self._show_code_lines()
        row = self.match_model.row_of(code) if code >= 0 else -1
        self._syncing = True
        try:
            sel = self.match_view.selectionModel()
            if row >= 0:
                index = self.match_model.index(row, 0)
                if self.match_view.currentIndex().row() != row:
                    sel.setCurrentIndex(index, QItemSelectionModel.SelectionFlag.ClearAndSelect
                                        | QItemSelectionModel.SelectionFlag.Rows)
                self.match_view.scrollTo(index, QAbstractItemView.ScrollHint.PositionAtCenter)
            else:
                sel.clearSelection()
        finally:
            self._syncing = False
        if code < 0 or p is None or code >= len(p.a):
            for thing in (self.ring_a, self.ring_b, self.link):
                thing.hide()
            self.code_label.setText("<span style='color:#555'>Select a code (a row, a point, or a bar) to see "
                                    "it and its nearest code of B.</span>")
            return
        ua = np.asarray(c.usage_a[layer])
        ub = np.asarray(c.usage_b[layer])
        pa = p.a[code]
        self.ring_a.setData(x=[pa[0]], y=[pa[1]])
        self.ring_a.show()
        text = (f"<b style='color:{A_COLOR}'>A code {code}</b>: "
                f"{int(ua[code]) if code < ua.size else 0:,} uses")
        if match is not None and code < match.index.size:
            b = int(match.index[code])
            pb = p.b[b]
            self.ring_b.setData(x=[pb[0]], y=[pb[1]])
            self.link.setData(x=[pa[0], pb[0]], y=[pa[1], pb[1]])
            self.ring_b.show()
            self.link.show()
            back = int(match.reverse_index[b])
            text += (f" → nearest <b style='color:{B_COLOR}'>B code {b}</b> at {match.distance[code]:.3g} "
                     f"({match.relative[code]:.2f}× A's spacing), {int(ub[b]) if b < ub.size else 0:,} uses"
                     + (" · mutual nearest" if back == code else f" · B {b}'s nearest A code is {back}"))
        else:
            self.ring_b.hide()
            self.link.hide()
        self.code_label.setText(text)

    # --- change / export ------------------------------------------------------------------------------------
    def ask_change(self) -> None:
        spec = self.spec
        dialog = CompareDialog(self, spec.checkpoint_a if spec else None, spec.features_a if spec else (),
                               spec.checkpoint_b if spec else None, spec.features_b if spec else ())
        if dialog.exec() == QDialog.DialogCode.Accepted:
            chunk = spec.chunk_frames if spec else 16384
            new = dialog.spec(self._device(), chunk)
            reuse = self._reuse if self._reuse is not None and self._reuse.matches(new.checkpoint_a,
                                                                                   new.features_a) else None
            self.start(new, reuse)

    def ask_export_html(self) -> None:
        if self.outcome is None:
            return
        stem = f"{self.outcome.spec.checkpoint_a.stem}-vs-{self.outcome.spec.checkpoint_b.stem}.report.html"
        start = str(Path(settings.get("last_dir") or Path.cwd()) / stem)
        path, _ = QFileDialog.getSaveFileName(self, "Export the comparison as an HTML report", start, HTML_FILTER)
        if path:
            settings.set("last_dir", str(Path(path).parent))
            self.export_html(path)

    def export_html(self, path, pairs: bool = True) -> bool:
        """Write the report (A's audit and verdicts, the comparison with B) in a worker; False if none."""
        if self.outcome is None:
            return False
        o = self.outcome
        self.statusBar().showMessage("Writing the HTML report…")
        self.export_slot.start(compare_jobs.html_report_job, path, o.a, o.comparison, o.b, self._device(), pairs,
                               returned=self._written, errored=self._export_failed)
        return True

    def _written(self, path) -> None:
        self.statusBar().showMessage(f"Wrote {path}", 8000)
        self.report_written.emit(Path(path))

    def _export_failed(self, exc: Exception) -> None:
        self.statusBar().showMessage("Export failed", 8000)
        self.banner.show_message(html.escape(f"cannot write the report: {error_text(exc)}"), "error")
        self.failed.emit(error_text(exc))

    def _update_actions(self) -> None:
        self.export_button.setEnabled(self.outcome is not None and not self.export_slot.busy)

    # --- shutdown -------------------------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Stop both workers (their results are dropped). Safe to call twice."""
        self._closing = True
        self.slot.cancel()
        self.export_slot.cancel()

    def closeEvent(self, event):  # noqa: N802
        self.shutdown()
        super().closeEvent(event)


# --- install into the main window ----------------------------------------------------------------------------

DIAGNOSIS_DOCK_WIDTH = 360


def _state_mentions(state, name: str) -> bool:
    """Whether a `QMainWindow.saveState()` blob names the object `name` (stored as UTF-16)."""
    try:
        blob = bytes(state) if state is not None else b""
    except TypeError:
        return False
    return bool(blob) and (name.encode("utf-16-be") in blob or name.encode("utf-8") in blob)


class Installed(QObject):
    """What `install` adds to a main window: the Diagnosis dock, File ▸ Compare with…, Export ▸ HTML report…

    It reads the window's public state only: `selection`, `session`, `snapshot`, `docks`, `map`,
    `device`, `audit_slot`, `show_message`, `statusBar()`, and its signals `session_changed` and
    `snapshot_applied`.
    """

    report_written = Signal(object)      # Path of an HTML report written from the Export menu
    report_failed = Signal(str)

    def __init__(self, window):
        super().__init__(window)
        self.window = window
        self.compare_window: CompareWindow | None = None
        self.report_slot = JobSlot("html-report", self)

        self.panel = DiagnosisPanel(window.selection, show_view=self.show_view)
        dock = QDockWidget(self.panel.title, window)
        dock.setObjectName("dock-diagnosis")
        dock.setWidget(self.panel)
        dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable
                         | QDockWidget.DockWidgetFeature.DockWidgetFloatable
                         | QDockWidget.DockWidgetFeature.DockWidgetClosable)
        window.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, dock)
        window.resizeDocks([dock], [DIAGNOSIS_DOCK_WIDTH], Qt.Orientation.Horizontal)
        # Where the user left it, when the saved window state knows the dock: that state is applied again
        # (now, or when the window first shows), since the window may have restored it before the dock
        # existed. Applying the same state twice changes nothing else. A dock added to a window already
        # on screen needs a show() otherwise.
        saved = settings.get("window/state")
        self._pending_state = saved if _state_mentions(saved, dock.objectName()) else None
        if window.isVisible():
            if self._pending_state is not None:
                window.restoreState(self._pending_state)
                self._pending_state = None
            else:
                dock.show()
        self.dock = dock
        docks = getattr(window, "docks", None)
        if isinstance(docks, dict):
            docks.setdefault("diagnosis", dock)
        self.panel.headline_changed.connect(dock.setWindowTitle)

        self.act_compare = QAction("Co&mpare with…", window)
        self.act_compare.setObjectName("action-compare")
        self.act_compare.setStatusTip("audit a second checkpoint or feature set and compare it with this one")
        self.act_compare.triggered.connect(lambda checked=False: self.ask_compare())
        self.act_html = QAction("&HTML report…", window)
        self.act_html.setObjectName("action-export-html")
        self.act_html.setStatusTip("the self-contained report `rvq-viewer report` writes (with the comparison, "
                                   "when one is open)")
        self.act_html.triggered.connect(lambda checked=False: self.ask_export_html())
        self._add_to_menus()

        window.session_changed.connect(self._session_changed)
        window.snapshot_applied.connect(self._snapshot_applied)
        window.audit_slot.busy_changed.connect(lambda busy: self._update_actions())
        self.report_slot.busy_changed.connect(lambda busy: self._update_actions())
        window.installEventFilter(self)
        if window.session is not None:
            self.panel.set_session(window.session)
        if window.snapshot is not None:
            self.panel.set_snapshot(window.snapshot)
        self._update_actions()

    # --- menus ----------------------------------------------------------------------------------------------
    @staticmethod
    def _menu(parent, title: str):
        """A submenu of `parent` (a QMenuBar or QMenu) by its title, '&' ignored."""
        want = title.replace("&", "").lower()
        for action in parent.actions():
            menu = action.menu()
            if menu is not None and action.text().replace("&", "").lower() == want:
                return menu
        return None

    def _add_to_menus(self) -> None:
        bar = self.window.menuBar()
        file_menu = self._menu(bar, "File") or bar.addMenu("&File")
        export = self._menu(file_menu, "Export")
        if export is not None:
            # File: ... Recent ▸ | Compare with… | Export ▸ ...
            anchor = export.menuAction()
            actions = file_menu.actions()
            at = actions.index(anchor)
            before = actions[at - 1] if at > 0 and actions[at - 1].isSeparator() else anchor
            file_menu.insertAction(before, self.act_compare)
            file_menu.insertSeparator(self.act_compare)
            first = export.actions()[0] if export.actions() else None
            if first is not None:
                export.insertAction(first, self.act_html)
            else:
                export.addAction(self.act_html)
        else:
            file_menu.addAction(self.act_compare)
            export = file_menu.addMenu("&Export")
            export.addAction(self.act_html)
        view = self._menu(bar, "View")
        if view is not None:
            toggle = self.dock.toggleViewAction()
            reset = next((a for a in view.actions() if a.text().replace("&", "") == "Reset layout"), None)
            if reset is not None:
                view.insertAction(reset, toggle)
            else:
                view.addAction(toggle)

    def _update_actions(self) -> None:
        w = self.window
        self.act_compare.setEnabled(w.session is not None)
        self.act_html.setEnabled(w.snapshot is not None and not self.report_slot.busy)

    # --- window signals -------------------------------------------------------------------------------------
    def _session_changed(self) -> None:
        self.panel.set_session(self.window.session)
        self._update_actions()

    def _snapshot_applied(self, snapshot) -> None:
        self.panel.set_snapshot(snapshot)
        self._update_actions()

    def eventFilter(self, watched, event):  # noqa: N802
        if watched is self.window:
            if event.type() == QEvent.Type.Close:
                self.shutdown()
            elif event.type() == QEvent.Type.Show and self._pending_state is not None:
                state, self._pending_state = self._pending_state, None
                self.window.restoreState(state)
        return False

    # --- diagnosis navigation -------------------------------------------------------------------------------
    def show_view(self, name: str) -> None:
        """Raise the dock of `name` ('overview', 'histogram', 'residuals', 'dead_codes'; 'centroids' is the
        central centroid map). A dock in the same tab group as the Diagnosis dock is not raised over it."""
        w = self.window
        own = getattr(w, "show_view", None)
        if callable(own):
            own(name)
            return
        dock = getattr(w, "docks", {}).get(name)
        label = {"overview": "Overview", "histogram": "Usage histogram", "residuals": "Residual norms",
                 "dead_codes": "Dead codes", "centroids": "Centroid map"}.get(name, name)
        if dock is None:
            target = getattr(w, "map", None) if name == "centroids" else None
            if target is not None:
                target.setFocus(Qt.FocusReason.OtherFocusReason)
            w.statusBar().showMessage(f"Evidence: {label}", 5000)
            return
        if dock is self.dock:
            return
        if dock in w.tabifiedDockWidgets(self.dock):
            w.statusBar().showMessage(f"Evidence: the {label} tab beside the Diagnosis", 6000)
            return
        dock.show()
        dock.raise_()
        w.statusBar().showMessage(f"Evidence: {label}", 5000)

    # --- compare --------------------------------------------------------------------------------------------
    def _reuse_side(self, spec: CompareSpec) -> Side | None:
        """The window's complete audit as side A, when A is what the window has open."""
        w = self.window
        session, snapshot = w.session, w.snapshot
        if session is None or snapshot is None or not snapshot.complete or snapshot.cancelled:
            return None
        side = Side(session.checkpoint, list(session.features), session.quantizer, None, snapshot.result,
                    snapshot.verdicts, snapshot.diagnosis_error)
        return side if side.matches(spec.checkpoint_a, spec.features_a) else None

    def ask_compare(self) -> None:
        w = self.window
        if w.session is None:
            w.show_message("Open a checkpoint (and features) first: it is A of the comparison.", "info")
            return
        dialog = CompareDialog(w, w.session.checkpoint, w.session.features)
        if dialog.exec() == QDialog.DialogCode.Accepted:
            self.start_compare(dialog.spec(w.device, int(settings.get("chunk_frames"))))

    def start_compare(self, spec: CompareSpec) -> CompareWindow:
        if self.compare_window is None:
            self.compare_window = CompareWindow(self.window, device=lambda: self.window.device)
            self.compare_window.selection.code_changed.connect(self._compare_code_changed)
            self.window.selection.code_changed.connect(self._window_code_changed)
        cw = self.compare_window
        cw.start(spec, self._reuse_side(spec))
        cw.show()
        cw.raise_()
        cw.activateWindow()
        return cw

    # --- one selected code in both windows --------------------------------------------------------------------
    def codes_linked(self) -> bool:
        """The comparison's A is the checkpoint open in the main window: a code of A is a code there too."""
        cw, session = self.compare_window, self.window.session
        return (cw is not None and cw.outcome is not None and session is not None
                and compare_jobs.same_path(cw.outcome.a.checkpoint, session.checkpoint))

    def _compare_code_changed(self, layer: int, code: int) -> None:
        # Selection emits only on a change, so the echo from the other window ends here.
        if code >= 0 and self.codes_linked() and layer < self.window.selection.n_layers:
            self.window.selection.set_code(layer, code)

    def _window_code_changed(self, layer: int, code: int) -> None:
        cw = self.compare_window
        if code >= 0 and self.codes_linked() and layer < cw.selection.n_layers:
            cw.selection.set_code(layer, code)

    # --- HTML report ----------------------------------------------------------------------------------------
    def ask_export_html(self) -> None:
        w = self.window
        if w.snapshot is None or w.session is None:
            w.show_message("Nothing to report yet: open a checkpoint and features, and let the audit run.", "info")
            return
        if w.audit_slot.busy:
            w.show_message("The audit is still running: export the report when it completes (or cancel it "
                           "for a report of the partial audit).", "info")
            return
        start = str(Path(settings.get("last_dir") or Path.cwd()) / f"{w.session.checkpoint.stem}.report.html")
        path, _ = QFileDialog.getSaveFileName(w, "Export HTML report", start, HTML_FILTER)
        if path:
            settings.set("last_dir", str(Path(path).parent))
            self.export_html(path)

    def included_comparison(self) -> CompareOutcome | None:
        """The open comparison, when its A is the window's audit (the report is about that audit)."""
        cw, session = self.compare_window, self.window.session
        if cw is None or not cw.isVisible() or cw.outcome is None or session is None:
            return None
        return cw.outcome if cw.outcome.a.matches(session.checkpoint, session.features) else None

    def export_html(self, path, pairs: bool | None = None) -> bool:
        """Write the report of the window's audit (and the open comparison) in a worker; False if none.

        `pairs` (default: when the audit is complete) adds the pair pass `rvq-viewer report` makes."""
        w = self.window
        session, snapshot = w.session, w.snapshot
        if session is None or snapshot is None:
            return False
        a = Side(session.checkpoint, list(session.features), session.quantizer, None, snapshot.result,
                 snapshot.verdicts, snapshot.diagnosis_error)
        outcome = self.included_comparison()
        comparison, b = (outcome.comparison, outcome.b) if outcome is not None else (None, None)
        if pairs is None:
            pairs = bool(snapshot.complete and session.features)
        note = " with the comparison" if outcome is not None else ""
        w.statusBar().showMessage(f"Writing the HTML report{note}…")
        self.report_slot.start(compare_jobs.html_report_job, path, a, comparison, b, w.device, pairs,
                               returned=self._written, errored=self._report_failed)
        return True

    def _written(self, path) -> None:
        self.window.statusBar().showMessage(f"Wrote {path}", 8000)
        self.report_written.emit(Path(path))

    def _report_failed(self, exc: Exception) -> None:
        text = f"cannot write the HTML report: {error_text(exc)}"
        self.window.show_message(text)
        self.report_failed.emit(text)

    # --- shutdown -------------------------------------------------------------------------------------------
    def shutdown(self) -> None:
        self.report_slot.cancel()
        if self.compare_window is not None:
            self.compare_window.shutdown()
            self.compare_window.close()


def install(window) -> Installed:
    """Add the Diagnosis dock, File ▸ Compare with… and File ▸ Export ▸ HTML report… to a `MainWindow`.

    Call once, after the window built its docks and menus. The returned object (also kept as
    `window.diagnosis_compare`) holds the panel (`.panel`, dock `.dock`) and the compare window
    (`.compare_window`, made on first use).
    """
    if getattr(window, "diagnosis_compare", None) is not None:  # once per window
        return window.diagnosis_compare
    installed = Installed(window)
    window.diagnosis_compare = installed
    return installed
