"""Event timeline of a checkpoint series: when codes died, revived or were replaced, layer by layer.

Top: steps on x, layers on y (layer 0 on top), one mark per event, coloured and shaped by kind, placed
by `marks.lane_y`. Beyond `INDIVIDUAL_MAX` events (or when asked) the marks are aggregated: one per
(step, layer, kind), its size growing with log(count); clicking one lists its distinct codes. Below:
heat strips per layer over steps of the EMA-dead count and of the perplexity on the open features.
Right: the clicked mark's codes, the selected code's history, and its centroid's trajectory across the
checkpoints (`TrajectoryPane`).

The selected code is the app's `Selection` when the open checkpoint is this quantizer (same n_q and K);
the trajectory then goes to the app state as a `MapOverlay`, which the centroid map draws when it shows
that layer's PCA. Loading runs in a `JobSlot` (`app.series_jobs.series_job`, over the pipeline); only
arrays reach this thread.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QComboBox, QHBoxLayout, QLabel, QListWidgetItem, QProgressBar,
                               QPushButton, QSplitter, QVBoxLayout, QWidget)

from ...analysis.series import EVENT_KINDS, died_at_mapping
from ...app.series_jobs import SeriesResult, series_job
from ...pipeline import AuditSpec, SeriesProgress
from ..controller import error_text
from ..panels.map_overlay import OverlayPath
from ..state import AppState, MapOverlay
from ..widgets.common import DEAD_COLOR, SELECT_COLOR, export_plot_png, header_label, reset_button, reset_plots
from ..widgets.picking import nearest_within, pixel_size, view_point
from ..workers import JobSlot
from .marks import KIND_COLORS, KIND_MARKS, KIND_SYMBOLS, KIND_TIPS, lane_y
from .strips import HeatStrips
from .texts import LIST_MAX, header_text, history_text, mark_text
from ..widgets.empty import EmptyNote
from .open_dialog import ask_series
from .side import EventSide
from ..theme import ink

INDIVIDUAL_MAX = 20_000           # more events than this: one mark per (step, layer, kind)
HIT_PX = 9
MARK_MODES = [("auto", "Marks: automatic"), ("events", "Marks: one per event"),
              ("aggregate", "Marks: one per step, layer, kind")]


class EventsView(QWidget):
    title = "Events"
    checkpoint_wanted = Signal(object)     # a checkpoint of the series to open (nothing is open yet)
    died_at_changed = Signal(object, str)  # {(layer, code): step} when each EMA-dead code died (None: clear)

    def __init__(self, state: AppState, parent=None):
        super().__init__(parent)
        self.setObjectName("events")
        self.state = state
        self.selection = selection = state.selection
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
        self.reset_button = reset_button(self.reset_view, "events")
        for w in (self.folder_button, self.files_button, self.mode_box, self.reset_button):
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
        self.plot.setMenuEnabled(False)
        self.plot.hideButtons()
        self.plot.getViewBox().invertY(True)
        self.plot.getViewBox().setMouseEnabled(x=True, y=False)
        self.plot.getAxis("left").setWidth(74)
        self.strips = HeatStrips(self.canvas, self.plot)
        self.plot.setLabel("left", "layer")
        self.empty = EmptyNote(self.plot, "no checkpoint series open")
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
        self.mark_ring = pg.ScatterPlotItem(size=18, pen=pg.mkPen(ink(), width=1.5), brush=None,
                                            symbol="s", pxMode=True)
        self.mark_ring.setZValue(19)
        self.plot.addItem(self.mark_ring)
        self.plot.setMinimumHeight(120)
        self.hover_label = QLabel(" ")
        self.hover_label.setObjectName("events-hover")

        # --- side panel: the clicked mark's codes, the selected code's history and trajectory ------------
        side = EventSide()
        self.mark_label, self.code_list = side.mark_label, side.code_list
        self.history_label, self.trajectory = side.history_label, side.trajectory
        self.code_list.itemClicked.connect(self._list_clicked)
        self.code_list.currentItemChanged.connect(lambda item, _: self._list_clicked(item))

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

        state.session_changed.connect(self.set_session)
        state.map_changed.connect(lambda geometry: self._show_map_note())
        selection.code_changed.connect(self._selection_changed)
        self._hover_proxy = pg.SignalProxy(self.canvas.scene().sigMouseMoved, rateLimit=30, slot=self._hovered)
        self.canvas.scene().sigMouseClicked.connect(self._clicked)
        self._show_header()
        self._show_side()

    # --- the panel protocol -----------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return not self.slot.busy

    def set_session(self, session) -> None:
        self.session = session
        self._link()

    def cleanup(self) -> None:
        self.slot.cancel()
        self._hover_proxy.disconnect()

    def reset_view(self) -> None:
        """Every step and layer of the series in view."""
        r = self.result
        if r is None:
            return
        steps = r.steps
        pad = (steps[-1] - steps[0]) * 0.04 + 1
        self.plot.setXRange(steps[0] - pad, steps[-1] + pad, padding=0)
        for p in (self.plot, *self.strips.plots):
            p.setYRange(-0.5, r.n_q - 0.5, padding=0)
        reset_plots(self.trajectory)

    # --- opening -------------------------------------------------------------------------------------------
    def ask_open_folder(self) -> None:
        paths = ask_series(self, folder=True)
        if paths:
            self.open_series(paths)

    def ask_open_files(self) -> None:
        paths = ask_series(self, folder=False)
        if paths:
            self.open_series(paths)

    def open_series(self, paths, features=None) -> None:
        """Load the checkpoints and find their events in a worker. Features default to the session's,
        read and audited as the session's are (device included)."""
        session = self.session
        template = session.spec.replace(device=self.state.device) if session is not None else None
        if features is None and session is not None and session.source is not None:
            features = list(session.features)
        if template is None:
            template = AuditSpec(Path(paths[0]), device=self.state.device)
        self.progress.setRange(0, 0)
        self.header.setText(f"Opening {html.escape(', '.join(Path(p).name for p in paths[:3]))}"
                            f"{'…' if len(paths) > 3 else ''}")
        self.slot.start(series_job, [Path(p) for p in paths], features, template,
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
        text = error_text(exc)
        self.header.setText(f"<span style='color:{DEAD_COLOR}'>Cannot open the series: {html.escape(text)}</span>")
        self.state.show_message(f"checkpoint series: {text}")

    # --- data ----------------------------------------------------------------------------------------------
    def set_result(self, result: SeriesResult) -> None:
        self.result = result
        self.selected = None
        self._agg = result.events.aggregate()
        self.empty.hide()
        self._draw_marks()
        self.strips.draw(result)
        self._link()
        self._show_header()
        self._show_side()
        self.reset_view()
        ticks = [[(float(i), f"L{i}") for i in range(result.n_q)]]
        for p in (self.plot, *self.strips.plots):
            p.getAxis("left").setTicks(ticks)
        if self.state.session is None:
            # nothing open yet: open the last checkpoint, so the other views show it and selections link
            self.checkpoint_wanted.emit(result.paths[-1])

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
        self._publish_overlay()

    def _push_died_at(self) -> None:
        """When each EMA-dead code died, for the dead-code table's 'died at step' column."""
        if self.reference is None or not self.died_at:
            self.died_at_changed.emit(None, "")          # only meaningful for a checkpoint of the series
            return
        r = self.result
        note = (f"step at which each EMA-dead code last died, from the series ({len(r.steps)} checkpoints, "
                f"up to step {r.steps[self.reference]}); {r.steps[0]} means at or before the first checkpoint")
        self.died_at_changed.emit(dict(self.died_at), note)

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
            self._my = lane_y(ev.layers, ev.kinds, ev.codes, k)
            self._mark_rows = np.arange(len(ev))
            self._mark_kind = ev.kinds
            for i, item in enumerate(self.scatters):
                sel = ev.kinds == i
                item.setData(x=self._mx[sel], y=self._my[sel], size=6, pen=None,
                             brush=pg.mkBrush(KIND_COLORS[EVENT_KINDS[i]]), symbol=KIND_SYMBOLS[EVENT_KINDS[i]])
        else:
            a = self._agg
            self._mx = a.steps.astype(np.float64)
            self._my = lane_y(a.layers, a.kinds, None, k)
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

    # --- text ----------------------------------------------------------------------------------------------
    def _show_header(self) -> None:
        r = self.result
        if r is None:
            if not self.slot.busy:
                self.header.setText("<i>No checkpoint series open: File ▸ Open checkpoint series… (a folder of "
                                    "checkpoints saved during one training run)</i>")
            return
        self.header.setText(header_text(r, len(self._agg) if self.mode == "aggregate" else None,
                                        self.session is not None, self.linked, self.reference))

    def _show_side(self) -> None:
        r = self.result
        if r is None:
            self.mark_label.setText("<i>Click a mark for its codes.</i>")
            self.history_label.setText("")
            self.trajectory.set_note("")
            return
        self.history_label.setText(history_text(r, self.selected, self.died_at))

    # --- marks: hit-testing and selection -------------------------------------------------------------------
    def mark_at(self, x: float, y: float, radius_px: float = HIT_PX) -> int | None:
        """Index of the mark nearest to view position (x, y) within `radius_px` pixels."""
        hit = nearest_within(self._mx, self._my, (x, y), pixel_size(self.plot.getViewBox()), radius_px)
        return None if hit is None else hit[0]

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
        self.mark_label.setText(mark_text(step, layer, kind, codes))
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
        self.trajectory.show_code(self.result, self.selected, self.reference)
        self._publish_overlay()

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
            y = lane_y(ev.layers[rows], ev.kinds[rows], ev.codes[rows], k)
        else:
            y = lane_y(ev.layers[rows], ev.kinds[rows], None, k)
        self.highlight.setData(x=ev.steps[rows].astype(np.float64), y=y)

    def _clicked(self, event) -> None:
        if event.button() != Qt.MouseButton.LeftButton or self.result is None:
            return
        pos = event.scenePos()
        p = view_point(self.plot.getViewBox(), pos)
        if p is not None:
            index = self.mark_at(p.x(), p.y())
            if index is not None:
                self.click_mark(index)
            return
        cell = self.strips.cell_at(pos)
        if cell is not None and self.linked:
            self.selection.set_layer(cell[2])

    # --- hover ----------------------------------------------------------------------------------------------
    def _hovered(self, args) -> None:
        pos = args[0]
        r = self.result
        if r is None:
            return
        text = " "
        p = view_point(self.plot.getViewBox(), pos)
        if p is not None:
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
            cell = self.strips.cell_at(pos)
            if cell is not None:
                text = self.strips.describe(cell)
        self.hover_label.setText(text)

    # --- the centroid map ---------------------------------------------------------------------------------
    def _publish_overlay(self) -> None:
        """The selected code's path, for the centroid map to draw (when the open checkpoint is this quantizer)."""
        r = self.result
        if r is None or self.selected is None or not self.linked:
            if self.state.overlay is not None:
                self.state.set_overlay(None)
        else:
            layer, code = self.selected
            self.state.set_overlay(MapOverlay(layer, r.trajectory(layer, code),
                                              f"code {code}: steps {r.steps[0]:,}→{r.steps[-1]:,}"))
        self._show_map_note()

    def _show_map_note(self) -> None:
        if self.selected is None or self.result is None:
            return
        if not self.linked:
            note = ""
        elif OverlayPath.fits(self.state.overlay, self.state.map_geometry):
            note = "Also drawn (dashed) on the centroid map."
        else:
            note = "Not on the centroid map: it is not showing this layer's PCA."
        self.trajectory.set_note("", note)

    # --- export -----------------------------------------------------------------------------------------------
    def export_png(self, path) -> None:
        title = "Dead-code events"
        if self.result is not None:
            steps = self.result.steps
            title += f" · {len(steps)} checkpoints, steps {steps[0]:,}–{steps[-1]:,}" if steps else ""
        export_plot_png(self.canvas, path, title)
