"""Event timeline of a checkpoint series: when codes died, revived or were replaced, layer by layer.

Top: steps on x, layers on y (layer 0 on top), one mark per event, coloured and shaped by kind, in a
lane per kind inside each layer's band; inside a lane the height gives the code index, so marks of
one step do not all sit on one point. Beyond `INDIVIDUAL_MAX` events (or when asked) the marks are
aggregated: one per (step, layer, kind), its size growing with log(count); clicking one lists its
distinct codes. Below: heat strips per layer over steps of the EMA-dead count and of the perplexity
on the open features. Right: the clicked mark's codes, the selected code's history, and its
centroid's trajectory across the checkpoints (PCA fitted on the layer's codebooks of all checkpoints).

The selected code is the window's `Selection` when the open checkpoint is this quantizer (same n_q and
K); the trajectory is then also drawn on the centroid map when the map shows that layer's PCA, whose
projection is recomputed here and checked against the map's own coordinates. Loading runs in a
`JobSlot` (`series_jobs.series_job`); only arrays reach this thread. `install(window)` adds the dock,
the File-menu action, and registers the view in `window.views` (set_session/set_snapshot/cleanup).
"""

from __future__ import annotations

import html
import math
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QAction
from PySide6.QtWidgets import (QComboBox, QFileDialog, QHBoxLayout, QLabel, QListWidget,
                               QListWidgetItem, QProgressBar, QPushButton, QSplitter, QVBoxLayout, QWidget)

from ...errors import RvqViewerError
from ...training import EVENT_KINDS, PcaProjection, died_at_mapping
from ..series_jobs import SeriesProgress, SeriesResult, series_job
from ..workers import JobSlot
from .common import DEAD_COLOR, SELECT_COLOR, add_bottom_dock, export_scene_png, find_menu, header_label

KIND_COLORS = {"died": DEAD_COLOR, "revived": "#009E73", "replaced": "#0072B2"}
KIND_SYMBOLS = {"died": "t", "revived": "t1", "replaced": "o"}      # t: triangle down, t1: up
KIND_MARKS = {"died": "▼", "revived": "▲", "replaced": "●"}
KIND_TIPS = {"died": "EMA cluster size fell below the checkpoint's dead-code threshold",
             "revived": "EMA-dead at the previous checkpoint, no longer",
             "replaced": "centroid jumped far beyond the drift of the other codes (respawned by expiry)"}
LANES = (-0.28, 0.0, 0.28)        # y offset of each kind's lane inside a layer's band
LANE_HALF = 0.12                  # half-height of a lane (codes spread over it)
INDIVIDUAL_MAX = 20_000           # more events than this: one mark per (step, layer, kind)
HIT_PX = 9
LIST_MAX = 5_000                  # codes listed for one mark
MARK_MODES = [("auto", "Marks: automatic"), ("events", "Marks: one per event"),
              ("aggregate", "Marks: one per step, layer, kind")]


def _lane_y(layers: np.ndarray, kinds: np.ndarray, codes: np.ndarray | None, k: int) -> np.ndarray:
    y = layers.astype(np.float64) + np.asarray(LANES)[kinds.astype(np.int64)]
    if codes is not None:
        y += ((codes.astype(np.float64) + 0.5) / max(k, 1) - 0.5) * 2 * LANE_HALF
    return y


def _uniform_columns(steps: list[int], max_cols: int = 2000) -> tuple[np.ndarray, float, float]:
    """Resample checkpoints onto equal-width columns: (checkpoint index per column, x0, width)."""
    s = np.asarray(steps, dtype=np.float64)
    if len(s) == 1:
        return np.zeros(1, dtype=np.int64), s[0] - 0.5, 1.0
    gaps = np.diff(s)
    edges = np.r_[s[0] - gaps[0] / 2, (s[1:] + s[:-1]) / 2, s[-1] + gaps[-1] / 2]
    if np.allclose(gaps, gaps[0]):
        return np.arange(len(s)), float(edges[0]), float(edges[-1] - edges[0])
    n = int(min(max_cols, max(len(s), math.ceil((edges[-1] - edges[0]) / max(gaps.min(), 1e-9)))))
    centers = edges[0] + (np.arange(n) + 0.5) * (edges[-1] - edges[0]) / n
    index = np.clip(np.searchsorted(edges, centers, side="right") - 1, 0, len(s) - 1)
    return index, float(edges[0]), float(edges[-1] - edges[0])


class EventsView(QWidget):
    title = "Events"

    def __init__(self, selection, window=None, parent=None):
        super().__init__(parent)
        self.setObjectName("events")
        self.selection = selection
        self.window_ = window
        self.session = None
        self.result: SeriesResult | None = None
        self.mode = "events"                     # what is drawn: "events" or "aggregate"
        self.selected: tuple[int, int] | None = None
        self.linked = False                      # the open checkpoint is this quantizer: share selection
        self.reference: int | None = None        # series index of the open checkpoint
        self.died_at: dict[tuple[int, int], int] = {}
        self._agg = None
        self._mx = self._my = np.zeros(0)
        self._mark_rows = np.zeros(0, dtype=np.int64)
        self._mark_kind = np.zeros(0, dtype=np.int8)
        self._map_key = None
        self._map_projection = None
        self._cols = None
        self.slot = JobSlot("series", self)
        self.slot.busy_changed.connect(self._busy)

        # --- top bar ---------------------------------------------------------------------------------
        self.folder_button = QPushButton("Open series…")
        self.folder_button.setToolTip("a folder of checkpoints of one quantizer, saved during one training run")
        self.folder_button.clicked.connect(self.ask_open_folder)
        self.files_button = QPushButton("Files…")
        self.files_button.setToolTip("several checkpoint files of one quantizer")
        self.files_button.clicked.connect(self.ask_open_files)
        self.mode_box = QComboBox()
        self.mode_box.setObjectName("events-mode")
        for key, text in MARK_MODES:
            self.mode_box.addItem(text, key)
        self.mode_box.setToolTip(f"automatic: one mark per event up to {INDIVIDUAL_MAX:,} events, "
                                 "else one per (step, layer, kind) sized by log(count)")
        self.mode_box.currentIndexChanged.connect(lambda _: self._draw_marks())
        self.progress = QProgressBar()
        self.progress.setObjectName("events-progress")
        self.progress.setFixedWidth(160)
        self.progress.hide()
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        self.cancel_button.hide()
        top = QHBoxLayout()
        top.setContentsMargins(4, 0, 4, 0)
        for w in (self.folder_button, self.files_button, self.mode_box):
            top.addWidget(w)
        top.addStretch(1)
        top.addWidget(self.progress)
        top.addWidget(self.cancel_button)
        self.header = header_label()
        self.header.setObjectName("events-header")
        self.header.setToolTip("\n".join(f"{KIND_MARKS[k]} {k}: {KIND_TIPS[k]}" for k in EVENT_KINDS)
                               + "\nAn event's step is that of the later checkpoint of the pair.")

        # --- plots -----------------------------------------------------------------------------------
        self.canvas = pg.GraphicsLayoutWidget()
        self.canvas.setObjectName("events-canvas")
        self.canvas.ci.layout.setSpacing(2)
        self.plot = self.canvas.addPlot(row=0, col=0)
        self.dead_plot = self.canvas.addPlot(row=1, col=0)
        self.perp_plot = self.canvas.addPlot(row=2, col=0)
        for p in (self.plot, self.dead_plot, self.perp_plot):
            p.setMenuEnabled(False)
            p.hideButtons()
            p.getViewBox().invertY(True)
            p.getViewBox().setMouseEnabled(x=True, y=False)
            p.getAxis("left").setWidth(74)
        for p in (self.dead_plot, self.perp_plot):
            p.setXLink(self.plot)
            p.getAxis("bottom").setStyle(showValues=False)
            p.setMaximumHeight(90)
            p.setMinimumHeight(50)
        self.plot.setLabel("left", "layer")
        self.perp_plot.getAxis("bottom").setStyle(showValues=True)
        self.perp_plot.setLabel("bottom", "training step")
        self.plot.showGrid(x=True, y=False, alpha=0.2)
        self.canvas.ci.layout.setRowStretchFactor(0, 3)
        self.scatters = []
        for kind in EVENT_KINDS:
            item = pg.ScatterPlotItem(pen=None, brush=pg.mkBrush(KIND_COLORS[kind]), symbol=KIND_SYMBOLS[kind],
                                      size=7, pxMode=True, name=kind)
            self.plot.addItem(item)
            self.scatters.append(item)
        self.highlight = pg.ScatterPlotItem(size=15, pen=pg.mkPen(SELECT_COLOR, width=2.5), brush=None, pxMode=True)
        self.highlight.setZValue(20)
        self.plot.addItem(self.highlight)
        self.mark_ring = pg.ScatterPlotItem(size=18, pen=pg.mkPen("#222222", width=1.5), brush=None,
                                            symbol="s", pxMode=True)
        self.mark_ring.setZValue(19)
        self.plot.addItem(self.mark_ring)
        self.plot.setMinimumHeight(120)
        self.dead_image = pg.ImageItem(axisOrder="row-major")
        self.perp_image = pg.ImageItem(axisOrder="row-major")
        self.dead_plot.addItem(self.dead_image)
        self.perp_plot.addItem(self.perp_image)
        self.dead_cmap = pg.colormap.get("inferno")
        self.perp_cmap = pg.colormap.get("viridis")
        self.dead_bar = pg.ColorBarItem(values=(0, 1), colorMap=self.dead_cmap, interactive=False, width=10,
                                        colorMapMenu=False, pen="#888888", label="EMA-dead")
        self.perp_bar = pg.ColorBarItem(values=(0, 1), colorMap=self.perp_cmap, interactive=False, width=10,
                                        colorMapMenu=False, pen="#888888", label="perplexity")
        self.dead_bar.setImageItem(self.dead_image)
        self.perp_bar.setImageItem(self.perp_image)
        self.canvas.addItem(self.dead_bar, row=1, col=1)
        self.canvas.addItem(self.perp_bar, row=2, col=1)
        self.perp_note = pg.TextItem("", color="#666666", anchor=(0.5, 0.5))
        self.perp_plot.addItem(self.perp_note, ignoreBounds=True)
        self.hover_label = QLabel(" ")
        self.hover_label.setObjectName("events-hover")

        # --- side panel ------------------------------------------------------------------------------
        self.mark_label = header_label()
        self.mark_label.setObjectName("events-mark")
        self.code_list = QListWidget()
        self.code_list.setObjectName("events-codes")
        self.code_list.setMinimumHeight(50)
        self.code_list.itemClicked.connect(self._list_clicked)
        self.code_list.currentItemChanged.connect(lambda item, _: self._list_clicked(item))
        self.history_label = header_label()
        self.history_label.setObjectName("events-history")
        self.traj = pg.PlotWidget()
        self.traj.setObjectName("events-trajectory")
        tp = self.traj.getPlotItem()
        tp.setMenuEnabled(False)
        tp.hideButtons()
        tp.setAspectLocked(True)
        tp.setLabel("bottom", "PC 1")
        tp.setLabel("left", "PC 2")
        self.traj_context = pg.ScatterPlotItem(size=3, pen=None, brush=pg.mkBrush(150, 150, 150, 90), pxMode=True)
        self.traj_line = pg.PlotDataItem(pen=pg.mkPen(SELECT_COLOR, width=2), symbol="o", symbolSize=7,
                                         symbolPen=None, symbolBrush=pg.mkBrush(SELECT_COLOR))
        self.traj_events = pg.ScatterPlotItem(size=13, brush=None, pxMode=True)
        self.traj_labels: list[pg.TextItem] = []
        for item in (self.traj_context, self.traj_line, self.traj_events):
            tp.addItem(item)
        self.traj_note = QLabel("")
        self.traj_note.setWordWrap(True)
        self.traj_note.setStyleSheet("color:#555")
        marks = QWidget()
        marks_layout = QVBoxLayout(marks)
        marks_layout.setContentsMargins(2, 0, 2, 0)
        marks_layout.setSpacing(2)
        marks_layout.addWidget(self.mark_label)
        marks_layout.addWidget(self.code_list, 1)
        marks_layout.addWidget(self.history_label)
        trajectory = QWidget()
        traj_layout = QVBoxLayout(trajectory)
        traj_layout.setContentsMargins(2, 0, 2, 0)
        traj_layout.setSpacing(2)
        traj_layout.addWidget(self.traj, 1)
        traj_layout.addWidget(self.traj_note)
        side = QSplitter(Qt.Orientation.Horizontal)
        side.addWidget(marks)
        side.addWidget(trajectory)
        side.setSizes([260, 300])

        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.setSpacing(2)
        left_layout.addWidget(self.canvas, 1)
        left_layout.addWidget(self.hover_label)
        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.addWidget(left)
        self.splitter.addWidget(side)
        self.splitter.setStretchFactor(0, 3)
        self.splitter.setStretchFactor(1, 2)
        self.splitter.setSizes([800, 560])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.setSpacing(2)
        layout.addLayout(top)
        layout.addWidget(self.header)
        layout.addWidget(self.splitter, 1)

        # map overlay (drawn on the window's centroid map when its projection can be matched)
        self.map_line = pg.PlotDataItem(pen=pg.mkPen(SELECT_COLOR, width=2, style=Qt.PenStyle.DashLine),
                                        symbol="o", symbolSize=6, symbolPen=pg.mkPen("#222222", width=1),
                                        symbolBrush=pg.mkBrush(255, 255, 255, 230))
        self.map_line.setZValue(25)
        self.map_label = pg.TextItem("", color="#222222", anchor=(0, 1), fill=pg.mkBrush(255, 255, 255, 200))
        self.map_label.setZValue(26)
        self._map_plot = None

        selection.code_changed.connect(self._selection_changed)
        self._hover_proxy = pg.SignalProxy(self.canvas.scene().sigMouseMoved, rateLimit=30, slot=self._hovered)
        self.canvas.scene().sigMouseClicked.connect(self._clicked)
        self._show_header()
        self._show_side()

    # --- the window's view protocol ----------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return not self.slot.busy

    def set_session(self, session) -> None:
        self.session = session
        self._link()

    def set_snapshot(self, snapshot) -> None:
        pass

    def cleanup(self) -> None:
        self.slot.cancel()
        timer = getattr(self, "_poll_timer", None)
        if timer is not None:
            timer.stop()
        self._hover_proxy.disconnect()
        self._remove_map_overlay()

    # --- opening -------------------------------------------------------------------------------------------
    def _start_dir(self) -> str:
        try:
            from .. import settings
            return settings.get("last_dir") or ""
        except Exception:  # noqa: BLE001 - settings are a convenience here
            return ""

    def _remember_dir(self, path: str) -> None:
        try:
            from .. import settings
            settings.set("last_dir", path)
        except Exception:  # noqa: BLE001
            pass

    def ask_open_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open a folder of checkpoints of one quantizer",
                                                self._start_dir())
        if path:
            self._remember_dir(path)
            self.open_series([path])

    def ask_open_files(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(self, "Open checkpoints of one quantizer", self._start_dir(),
                                                "Checkpoints (*.pt *.pth *.ckpt *.th *.bin *.safetensors);;"
                                                "All files (*)")
        if paths:
            self._remember_dir(str(Path(paths[0]).parent))
            self.open_series(paths)

    def open_series(self, paths, features=None, device=None) -> None:
        """Load the checkpoints and find their events in a worker. Features default to the session's."""
        session = self.session if self.session is not None else getattr(self.window_, "session", None)
        if features is None and session is not None and session.source is not None:
            features = list(session.features)
        if device is None:
            device = "cpu"
            wanted = getattr(self.window_, "device", "cpu")
            try:
                from ...audit import resolve_device
                device = str(resolve_device(wanted))
            except (ValueError, RuntimeError):
                pass
        self.progress.setRange(0, 0)
        self.header.setText(f"Opening {html.escape(', '.join(Path(p).name for p in paths[:3]))}"
                            f"{'…' if len(paths) > 3 else ''}")
        self.slot.start(series_job, [Path(p) for p in paths], features, device,
                        yielded=self._yielded, errored=self._failed)

    def cancel(self) -> None:
        if self.slot.busy:
            self.slot.cancel()
            self._show_header()

    def _busy(self, busy: bool) -> None:
        self.progress.setVisible(busy)
        self.cancel_button.setVisible(busy)
        self.folder_button.setEnabled(not busy)
        self.files_button.setEnabled(not busy)

    def _yielded(self, value) -> None:
        if isinstance(value, SeriesProgress):
            self.progress.setRange(0, value.total)
            self.progress.setValue(value.done)
            self.progress.setFormat("%v/%m")
            self.header.setText(html.escape(value.text))
        elif isinstance(value, SeriesResult):
            self.set_result(value)

    def _failed(self, exc: Exception) -> None:
        text = str(exc) if isinstance(exc, RvqViewerError) else f"{type(exc).__name__}: {exc}"
        self.header.setText(f"<span style='color:{DEAD_COLOR}'>Cannot open the series: {html.escape(text)}</span>")
        show = getattr(self.window_, "show_message", None)
        if callable(show):
            show(f"checkpoint series: {text}")

    # --- data ----------------------------------------------------------------------------------------------
    def set_result(self, result: SeriesResult) -> None:
        self.result = result
        self.selected = None
        self._agg = result.events.aggregate()
        self._draw_marks()
        self._draw_strips()
        self._link()
        self._show_header()
        self._show_side()
        steps = result.steps
        pad = (steps[-1] - steps[0]) * 0.04 + 1
        self.plot.setXRange(steps[0] - pad, steps[-1] + pad, padding=0)
        for p in (self.plot, self.dead_plot, self.perp_plot):
            p.setYRange(-0.5, result.n_q - 0.5, padding=0)
        ticks = [[(float(i), f"L{i}") for i in range(result.n_q)]]
        for p in (self.plot, self.dead_plot, self.perp_plot):
            p.getAxis("left").setTicks(ticks)
        if self.window_ is not None and getattr(self.window_, "session", None) is None \
                and hasattr(self.window_, "open"):
            # nothing open yet: open the last checkpoint, so the other views show it and selections link
            self.window_.open(result.paths[-1])

    def _link(self) -> None:
        """Share the selection when the open checkpoint is this quantizer; find which file it is."""
        r = self.result
        q = getattr(self.session, "quantizer", None)
        self.linked = bool(r is not None and q is not None and q.codebook_sizes == r.codebook_sizes)
        self.reference = r.entry_matching(q) if self.linked else None
        self.died_at = {}
        if r is not None and r.dead_masks is not None:
            ref = self.reference if self.reference is not None else len(r.steps) - 1
            self.died_at = died_at_mapping(r.dead_masks, r.steps, ref)
        self._push_died_at()
        self._show_header()
        self._update_map_overlay()

    def _push_died_at(self) -> None:
        """Give the dead-code table its 'died at step' column, if it has the hook (see install())."""
        dead_view = getattr(self.window_, "dead_codes", None)
        hook = getattr(dead_view, "set_died_at", None)
        if not callable(hook):
            return
        if self.reference is None or not self.died_at:
            hook(None, "")                       # only meaningful for a checkpoint of the series
            return
        r = self.result
        note = (f"step at which each EMA-dead code last died, from the series ({len(r.steps)} checkpoints, "
                f"up to step {r.steps[self.reference]}); {r.steps[0]} means at or before the first checkpoint")
        hook(dict(self.died_at), note)

    def marks_mode(self) -> str:
        wanted = self.mode_box.currentData()
        if wanted == "auto":
            n = len(self.result.events) if self.result is not None else 0
            return "events" if n <= INDIVIDUAL_MAX else "aggregate"
        return wanted

    def _draw_marks(self) -> None:
        r = self.result
        if r is None:
            return
        self.mode = self.marks_mode()
        ev = r.events
        k = max(r.codebook_sizes) if r.codebook_sizes else 1
        if self.mode == "events":
            self._mx = ev.steps.astype(np.float64)
            self._my = _lane_y(ev.layers, ev.kinds, ev.codes, k)
            self._mark_rows = np.arange(len(ev))
            self._mark_kind = ev.kinds
            for i, item in enumerate(self.scatters):
                sel = ev.kinds == i
                item.setData(x=self._mx[sel], y=self._my[sel], size=6, pen=None,
                             brush=pg.mkBrush(KIND_COLORS[EVENT_KINDS[i]]), symbol=KIND_SYMBOLS[EVENT_KINDS[i]])
        else:
            a = self._agg
            self._mx = a.steps.astype(np.float64)
            self._my = _lane_y(a.layers, a.kinds, None, k)
            self._mark_rows = np.arange(len(a))
            self._mark_kind = a.kinds
            sizes = np.clip(6 + 3.5 * np.log10(np.maximum(a.counts, 1)), 6, 24)
            for i, item in enumerate(self.scatters):
                sel = a.kinds == i
                item.setData(x=self._mx[sel], y=self._my[sel], size=sizes[sel], pen=None,
                             brush=pg.mkBrush(KIND_COLORS[EVENT_KINDS[i]]), symbol=KIND_SYMBOLS[EVENT_KINDS[i]])
        self.mark_ring.setData([], [])
        self._draw_highlight()
        self._show_header()

    def _draw_strips(self) -> None:
        r = self.result
        index, x0, width = _uniform_columns(r.steps)
        self._cols = (index, x0, width)
        rect = QRectF(x0, -0.5, width, r.n_q)
        dead = r.ema_dead[index].T          # [L, cols]
        if np.isfinite(dead).any():
            hi = float(np.nanmax(dead)) or 1.0
            self.dead_image.setImage(np.nan_to_num(dead, nan=0.0), levels=(0.0, hi), autoLevels=False)
            self.dead_image.setRect(rect)
            self.dead_bar.setLevels(values=(0.0, hi))
            self.dead_image.show()
        else:
            self.dead_image.hide()
        perp = r.perplexity[index].T
        if np.isfinite(perp).any():
            lo, hi = float(np.nanmin(perp)), float(np.nanmax(perp))
            hi = hi if hi > lo else lo + 1
            self.perp_image.setImage(np.nan_to_num(perp, nan=lo), levels=(lo, hi), autoLevels=False)
            self.perp_image.setRect(rect)
            self.perp_bar.setLevels(values=(lo, hi))
            self.perp_image.show()
            self.perp_note.setText("")
        else:
            self.perp_image.hide()
            self.perp_note.setText("no features open: perplexity per step needs features")
            self.perp_note.setPos((r.steps[0] + r.steps[-1]) / 2, (r.n_q - 1) / 2)

    # --- text ----------------------------------------------------------------------------------------------
    def _show_header(self) -> None:
        r = self.result
        if r is None:
            if not self.slot.busy:
                self.header.setText("<i>No checkpoint series open: File ▸ Open checkpoint series… (a folder of "
                                    "checkpoints saved during one training run)</i>")
            return
        counts = r.events.counts_by_kind()
        kinds = " · ".join(f"<span style='color:{KIND_COLORS[k]}'>{KIND_MARKS[k]} {counts[k]:,} {k}</span>"
                           for k in EVENT_KINDS)
        folder = r.paths[0].parent
        text = (f"<b>{len(r.steps)} checkpoints</b> in {html.escape(str(folder))}, ordered by "
                f"<b>{html.escape(r.order)}</b>: steps {r.steps[0]:,} … {r.steps[-1]:,}. {kinds}")
        if self.mode == "aggregate":
            text += (f"<br><i>{len(r.events):,} events drawn as {len(self._agg):,} marks, one per (step, layer, "
                     "kind), size ∝ log(count): click one for its codes.</i>")
        if r.note:
            text += f"<br><span style='color:#8A5A00'>{html.escape(r.note)}</span>"
        if self.session is not None and not self.linked:
            text += ("<br><span style='color:#8A5A00'>The open checkpoint is another quantizer (n_q/K differ): "
                     "selecting here does not select in the other views.</span>")
        elif self.session is not None and self.reference is not None:
            text += f"<br>The open checkpoint is step {r.steps[self.reference]:,} of this series."
        elif self.session is not None:
            text += ("<br>The open checkpoint is not one of these files (same n_q and K): selections are shared "
                     "by code index; 'EMA-dead since' refers to the last checkpoint of the series.")
        self.header.setText(text)

    def _show_side(self, mark: int | None = None) -> None:
        r = self.result
        if r is None:
            self.mark_label.setText("<i>Click a mark for its codes.</i>")
            self.history_label.setText("")
            self.traj_note.setText("")
            return
        if self.selected is None:
            self.history_label.setText("<i>Select an event (or a code anywhere) for its history.</i>")
        else:
            layer, code = self.selected
            rows = r.events.of_code(layer, code)
            lines = [html.escape(r.events.describe_row(int(i))) for i in rows[:12]]
            if rows.size > 12:
                lines.append(f"… {rows.size - 12} more")
            died = self.died_at.get((layer, code))
            extra = ""
            if died is not None:
                extra = f" · EMA-dead since step {died:,}" if died != r.steps[0] else \
                    f" · EMA-dead since step ≤ {died:,}"
            self.history_label.setText(f"<b>Layer {layer}, code {code}</b>{extra}<br>" +
                                       ("<br>".join(lines) if lines else "<i>no event in the series</i>"))

    # --- marks: hit-testing and selection -------------------------------------------------------------------
    def mark_at(self, x: float, y: float, radius_px: float = HIT_PX) -> int | None:
        """Index of the mark nearest to view position (x, y) within `radius_px` pixels."""
        if self._mx.size == 0:
            return None
        px = self.plot.getViewBox().viewPixelSize()
        if px[0] <= 0 or px[1] <= 0:
            return None
        d2 = ((self._mx - x) / px[0]) ** 2 + ((self._my - y) / px[1]) ** 2
        i = int(np.argmin(d2))
        return i if d2[i] <= radius_px ** 2 else None

    def mark_position(self, index: int) -> tuple[float, float]:
        return float(self._mx[index]), float(self._my[index])

    def mark_info(self, index: int) -> tuple[int, int, int, np.ndarray]:
        """(step, layer, kind id, distinct codes) of a mark."""
        r = self.result
        if self.mode == "events":
            row = int(self._mark_rows[index])
            step, layer, kind = int(r.events.steps[row]), int(r.events.layers[row]), int(r.events.kinds[row])
        else:
            a = self._agg
            step, layer, kind = int(a.steps[index]), int(a.layers[index]), int(a.kinds[index])
        return step, layer, kind, r.events.codes_at(step, layer, kind)

    def click_mark(self, index: int) -> None:
        """What a click on a mark does: list its codes; an individual event also selects its code."""
        r = self.result
        step, layer, kind, codes = self.mark_info(index)
        self.mark_ring.setData([self._mx[index]], [self._my[index]])
        name = EVENT_KINDS[kind]
        self.mark_label.setText(f"<b>Step {step:,}, layer {layer}</b>: <span style='color:{KIND_COLORS[name]}'>"
                                f"{codes.size:,} code{'s' if codes.size != 1 else ''} {name}</span>"
                                + (f" (first {LIST_MAX:,} listed)" if codes.size > LIST_MAX else ""))
        self.code_list.blockSignals(True)
        self.code_list.clear()
        for c in codes[:LIST_MAX]:
            item = QListWidgetItem(f"code {int(c)}")
            item.setData(Qt.ItemDataRole.UserRole, (layer, int(c)))
            self.code_list.addItem(item)
        self.code_list.blockSignals(False)
        if self.mode == "events":
            code = int(r.events.codes[int(self._mark_rows[index])])
            self.select_code(layer, code)
            self._select_in_list(layer, code)

    def _select_in_list(self, layer: int, code: int) -> None:
        self.code_list.blockSignals(True)
        for i in range(self.code_list.count()):
            if self.code_list.item(i).data(Qt.ItemDataRole.UserRole) == (layer, code):
                self.code_list.setCurrentRow(i)
                break
        else:
            self.code_list.clearSelection()
        self.code_list.blockSignals(False)

    def _list_clicked(self, item) -> None:
        if item is None:
            return
        layer, code = item.data(Qt.ItemDataRole.UserRole)
        self.select_code(layer, code)

    def select_code(self, layer: int, code: int) -> None:
        """Select a code here and, when the open checkpoint is this quantizer, everywhere."""
        self.selected = (int(layer), int(code))
        if self.linked:
            self.selection.set_code(layer, code)
        self._selected_changed()

    def _selection_changed(self, layer: int, code: int) -> None:
        if not self.linked or self.result is None:
            return
        new = (int(layer), int(code)) if code >= 0 else None
        if new != self.selected:
            self.selected = new
            self._selected_changed()

    def _selected_changed(self) -> None:
        self._draw_highlight()
        self._show_side()
        self._update_map_overlay()
        self._draw_trajectory()

    def _draw_highlight(self) -> None:
        r = self.result
        if r is None or self.selected is None:
            self.highlight.setData([], [])
            return
        layer, code = self.selected
        rows = r.events.of_code(layer, code)
        k = max(r.codebook_sizes)
        ev = r.events
        if self.mode == "events":
            y = _lane_y(ev.layers[rows], ev.kinds[rows], ev.codes[rows], k)
        else:
            y = _lane_y(ev.layers[rows], ev.kinds[rows], None, k)
        self.highlight.setData(x=ev.steps[rows].astype(np.float64), y=y)

    def _clicked(self, event) -> None:
        if event.button() != Qt.MouseButton.LeftButton or self.result is None:
            return
        pos = event.scenePos()
        vb = self.plot.getViewBox()
        if vb.sceneBoundingRect().contains(pos):
            p = vb.mapSceneToView(pos)
            index = self.mark_at(p.x(), p.y())
            if index is not None:
                self.click_mark(index)
            return
        for plot in (self.dead_plot, self.perp_plot):
            if plot.getViewBox().sceneBoundingRect().contains(pos):
                cell = self._strip_cell(plot, pos)
                if cell is not None and self.linked:
                    self.selection.set_layer(cell[1])
                return

    # --- hover ----------------------------------------------------------------------------------------------
    def _strip_cell(self, plot, scene_pos) -> tuple[int, int] | None:
        r = self.result
        if r is None or self._cols is None:
            return None
        p = plot.getViewBox().mapSceneToView(scene_pos)
        index, x0, width = self._cols
        col = int(math.floor((p.x() - x0) / width * len(index)))
        layer = int(round(p.y()))
        if not (0 <= col < len(index) and 0 <= layer < r.n_q):
            return None
        return int(index[col]), layer

    def _hovered(self, args) -> None:
        pos = args[0]
        r = self.result
        if r is None:
            return
        text = " "
        vb = self.plot.getViewBox()
        if vb.sceneBoundingRect().contains(pos):
            p = vb.mapSceneToView(pos)
            index = self.mark_at(p.x(), p.y())
            if index is not None:
                step, layer, kind, codes = self.mark_info(index)
                if self.mode == "events":
                    row = int(self._mark_rows[index])
                    text = f"layer {layer} · code {int(r.events.codes[row])} · {r.events.describe_row(row)}"
                else:
                    text = (f"step {step:,} · layer {layer} · {EVENT_KINDS[kind]}: "
                            f"{int(self._agg.counts[index]):,} events, {codes.size:,} distinct codes")
        else:
            for plot, name, data in ((self.dead_plot, "EMA-dead codes", r.ema_dead),
                                     (self.perp_plot, "perplexity on the features", r.perplexity)):
                if plot.getViewBox().sceneBoundingRect().contains(pos):
                    cell = self._strip_cell(plot, pos)
                    if cell is not None:
                        i, layer = cell
                        v = data[i, layer]
                        value = "–" if not np.isfinite(v) else f"{v:,.0f}" if data is r.ema_dead else f"{v:,.1f}"
                        text = f"step {r.steps[i]:,} · layer {layer} · {name}: {value}"
                        if np.isfinite(r.used[i, layer]):
                            text += f" · used {int(r.used[i, layer]):,} / {r.codebook_sizes[layer]:,}"
        self.hover_label.setText(text)

    # --- trajectory -----------------------------------------------------------------------------------------
    def _draw_trajectory(self) -> None:
        for label in self.traj_labels:
            self.traj.getPlotItem().removeItem(label)
        self.traj_labels = []
        r = self.result
        if r is None or self.selected is None:
            self.traj_line.setData([], [])
            self.traj_events.setData([], [])
            self.traj_context.setData([], [])
            self.traj_note.setText("")
            return
        layer, code = self.selected
        if not (0 <= layer < r.n_q and 0 <= code < r.codebook_sizes[layer]):
            return
        proj = r.union_projection(layer)
        xy = proj.transform(r.trajectory(layer, code)).astype(np.float64)
        ref = self.reference if self.reference is not None else len(r.steps) - 1
        context = proj.transform(r.codebook(ref, layer))
        if len(context) > 20_000:
            context = context[:: math.ceil(len(context) / 20_000)]
        self.traj_context.setData(pos=context.astype(np.float64))
        self.traj_line.setData(xy[:, 0], xy[:, 1])
        # ring the checkpoints at which this code had an event, in the event's colour
        rows = r.events.of_code(layer, code)
        step_index = {s: i for i, s in enumerate(r.steps)}
        spots = []
        for row in rows:
            i = step_index.get(int(r.events.steps[row]))
            if i is not None:
                kind = EVENT_KINDS[int(r.events.kinds[row])]
                spots.append({"pos": (xy[i, 0], xy[i, 1]), "pen": pg.mkPen(KIND_COLORS[kind], width=2),
                              "symbol": KIND_SYMBOLS[kind]})
        self.traj_events.setData(spots)
        tp = self.traj.getPlotItem()
        leftward = xy[-1, 0] < xy[0, 0]          # put each end's step label on its outer side
        for i, anchor in ((0, (0, 0) if leftward else (1, 0)), (len(r.steps) - 1, (1, 1) if leftward else (0, 1))):
            label = pg.TextItem(f"{r.steps[i]:,}", color="#222222", anchor=anchor)
            label.setPos(xy[i, 0], xy[i, 1])
            tp.addItem(label, ignoreBounds=True)
            self.traj_labels.append(label)
        lo = np.minimum(context.min(axis=0), xy.min(axis=0))
        hi = np.maximum(context.max(axis=0), xy.max(axis=0))
        tp.getViewBox().setRange(xRange=(float(lo[0]), float(hi[0])), yRange=(float(lo[1]), float(hi[1])))
        moved = float(np.linalg.norm(np.diff(r.trajectory(layer, code), axis=0), axis=1).sum())
        self.traj_note.setText(f"<b>Code {code}</b> of layer {layer} over {len(r.steps)} checkpoints (moved "
                               f"{moved:.3g} in total). PCA of the layer's codebooks at all checkpoints; grey: "
                               f"step {r.steps[ref]:,}; rings: its events." + self._map_note())

    def _map_note(self) -> str:
        if self._map_plot is not None:
            return " Also drawn (dashed) on the centroid map."
        if self.window_ is not None and getattr(self.window_, "map", None) is not None and self.linked:
            return " Not on the centroid map: it is not showing this layer's PCA."
        return ""

    # --- centroid-map overlay --------------------------------------------------------------------------------
    def _map_projection_for(self, layer: int) -> PcaProjection | None:
        """The centroid map's projection for `layer`, if it shows that layer's PCA (checked, not assumed)."""
        view = getattr(self.window_, "map", None)
        geo = getattr(view, "geometry", None)
        session = self.session
        if view is None or geo is None or session is None or getattr(geo, "method", "") != "pca":
            return None
        layers = np.unique(geo.layers)
        if layers.size != 1 or int(layers[0]) != layer:
            return None
        key = (id(geo), layer)
        if self._map_key == key:
            return self._map_projection
        codebook = session.codebooks[layer]
        proj = PcaProjection.fit(codebook, max_points=len(codebook) + 1)
        probe = slice(0, min(64, len(codebook)))
        mine, theirs = proj.transform(codebook[probe]), np.asarray(geo.coords[probe])
        scale = float(np.abs(theirs).max()) or 1.0
        ok = mine.shape == theirs.shape and np.allclose(mine, theirs, atol=1e-3 * scale)
        self._map_key, self._map_projection = key, (proj if ok else None)
        return self._map_projection

    def _update_map_overlay(self) -> None:
        r = self.result
        if r is None or self.selected is None or not self.linked:
            self._remove_map_overlay()
            return
        layer, code = self.selected
        proj = self._map_projection_for(layer)
        if proj is None:
            self._remove_map_overlay()
            return
        view = self.window_.map
        if self._map_plot is not view.plot:
            self._remove_map_overlay()
            view.plot.addItem(self.map_line, ignoreBounds=True)
            view.plot.addItem(self.map_label, ignoreBounds=True)
            self._map_plot = view.plot
        xy = proj.transform(r.trajectory(layer, code)).astype(np.float64)
        self.map_line.setData(xy[:, 0], xy[:, 1])
        self.map_label.setText(f"code {code}: steps {r.steps[0]:,}→{r.steps[-1]:,}")
        self.map_label.setPos(QPointF(xy[0, 0], xy[0, 1]))

    def poll_map(self) -> None:
        """Called by the view's timer: follow the map when it changes layer or projection."""
        view = getattr(self.window_, "map", None)
        geo = getattr(view, "geometry", None)
        key = None if geo is None else id(geo)
        if key != getattr(self, "_polled_geo", None):
            self._polled_geo = key
            self._update_map_overlay()
            if self.selected is not None:
                self.traj_note.setText(self.traj_note.text().split(" Also drawn")[0].split(" Not on the")[0]
                                       + self._map_note())

    def _remove_map_overlay(self) -> None:
        if self._map_plot is not None:
            for item in (self.map_line, self.map_label):
                try:
                    self._map_plot.removeItem(item)
                except (RuntimeError, ValueError):
                    pass
            self._map_plot = None

    # --- export -----------------------------------------------------------------------------------------------
    def export_png(self, path) -> None:
        export_scene_png(self.canvas.ci, path)


# ======================================================================================================
# install
# ======================================================================================================

def install(window) -> EventsView:
    """Add the Events dock and File ▸ Open checkpoint series… to a MainWindow; returns the view.

    Uses only public attributes: `selection`, `session`, `device`, `open`, `show_message`, `map`,
    `dead_codes`, `views` (the view joins it, so the window calls its set_session / set_snapshot /
    cleanup like any other view's), `menuBar()`, `addDockWidget`, `tabifyDockWidget`, `docks`.
    """
    from PySide6.QtCore import QTimer

    if getattr(window, "events_view", None) is not None:  # once per window
        return window.events_view
    view = EventsView(window.selection, window)
    dock = add_bottom_dock(window, view, "Events (checkpoint series)", "events")
    window.events_view, window.events_dock = view, dock

    action = QAction("Open checkpoint &series…", window)
    action.setStatusTip("a folder of checkpoints saved during one training run: dead-code events over steps")
    action.triggered.connect(lambda checked=False: (dock.show(), dock.raise_(), view.ask_open_folder()))
    file_menu, _ = find_menu(window, "File")
    if file_menu is not None:
        actions = file_menu.actions()
        after = next((i for i, a in enumerate(actions) if "older" in a.text()), None)
        before = actions[after + 1] if after is not None and after + 1 < len(actions) else None
        if before is not None:
            file_menu.insertAction(before, action)
        else:
            file_menu.addAction(action)
    window.addAction(action)
    window.act_open_series = action
    view_menu, _ = find_menu(window, "View")
    if view_menu is not None:
        view_menu.addAction(dock.toggleViewAction())

    timer = QTimer(view)
    timer.setInterval(200)
    timer.timeout.connect(view.poll_map)
    timer.start()
    view._poll_timer = timer

    def loaded(busy: bool) -> None:
        if busy or view.result is None:
            return
        dock.show()
        dock.raise_()
        if not dock.isFloating() and dock.height() < 420:
            window.resizeDocks([dock], [440], Qt.Orientation.Vertical)

    view.slot.busy_changed.connect(loaded)
    return view
