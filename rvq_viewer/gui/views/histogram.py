"""Usage histogram of the selected layer: counts per code as one step curve, dead codes in red.

One `PlotCurveItem` with stepMode="center" and a fill draws all K bars as a single path (K = 65,536
stays fluid; a bar item per code would not). Dead codes are a second step curve: a red band below
the baseline. Log scale is done here (log10 of the data, the axis only labels powers of ten) rather
than with pyqtgraph's log mode, which cannot fill down to a zero count.
"""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QCheckBox, QHBoxLayout, QVBoxLayout, QWidget

from ..model import Session, Snapshot
from ..state import Selection
from .common import DEAD_COLOR, SELECT_COLOR, export_scene_png, header_label, steady_axis

BAR_COLOR = "#3B75AF"
LOG_FLOOR = math.log10(0.5)   # where a zero count sits on a log axis (just below 1)
COUNT_AXIS_WIDTH = 66         # room for 6-character ticks ("800000", "4e+07") beside the axis title


def _decade_ticks(k: int) -> list:
    top = max(1, math.ceil(math.log10(max(k, 1))))
    major = [(float(e), f"{10 ** e:,}") for e in range(0, top + 1)]
    minor = [(math.log10(m * 10 ** e), "") for e in range(0, top) for m in range(2, 10)]
    return [major, minor]


class HistogramView(QWidget):
    title = "Usage histogram"

    def __init__(self, selection: Selection, parent=None):
        super().__init__(parent)
        self.setObjectName("histogram")
        self.selection = selection
        self.session: Session | None = None
        self.snapshot: Snapshot | None = None
        self.counts: np.ndarray | None = None
        self._order: np.ndarray | None = None   # codes by descending count (sorted mode)
        self._rank: np.ndarray | None = None    # rank of each code
        self._drawn = False
        self._mode = None
        self._axes_mode = None
        self._limits = None
        self._y_range = None
        self._series = None
        self.drawn_bins = 0
        self._range_timer = QTimer(self)
        self._range_timer.setSingleShot(True)
        self._range_timer.setInterval(30)
        self._range_timer.timeout.connect(self._draw_visible)

        self.log_box = QCheckBox("Log scale")
        self.log_box.setObjectName("histogram-log")
        self.sorted_box = QCheckBox("Sorted: rank-frequency (Zipf)")
        self.sorted_box.setObjectName("histogram-sorted")
        self.sorted_box.setToolTip("codes ordered by use; with log scale both axes are logarithmic")
        self.header = header_label(lines=2)     # the layer's figures, then the selected code's
        self.header.setObjectName("histogram-header")
        self.plot = pg.PlotWidget()
        self.plot.setObjectName("histogram-plot")
        item = self.plot.getPlotItem()
        item.setMenuEnabled(False)
        item.showGrid(x=False, y=True, alpha=0.25)
        item.setLabel("left", "uses")
        item.setLabel("bottom", "code")
        steady_axis(item.getAxis("left"), COUNT_AXIS_WIDTH)
        item.getViewBox().setMouseEnabled(x=True, y=False)
        item.disableAutoRange()
        step = {"stepMode": "center", "fillLevel": 0, "skipFiniteCheck": True, "antialias": False}
        self.curve = pg.PlotCurveItem(x=[0.0, 1.0], y=[0.0], pen=pg.mkPen(BAR_COLOR, width=1),
                                      brush=pg.mkBrush(BAR_COLOR + "99"), **step)
        self.dead_curve = pg.PlotCurveItem(x=[0.0, 1.0], y=[0.0], pen=pg.mkPen(DEAD_COLOR, width=1),
                                           brush=pg.mkBrush(DEAD_COLOR), **step)
        self.zipf_curve = pg.PlotCurveItem(pen=pg.mkPen("#888888", width=1, style=Qt.PenStyle.DashLine))
        label_opts = {"position": 0.04, "color": "#2E7D32", "anchors": [(0, 1), (0, 1)]}
        self.uniform_line = pg.InfiniteLine(angle=0, movable=False, label="uniform share", labelOpts=label_opts,
                                            pen=pg.mkPen("#2E7D32", width=1, style=Qt.PenStyle.DashLine))
        self.select_line = pg.InfiniteLine(angle=90, movable=False, pen=pg.mkPen(SELECT_COLOR, width=2))
        self.select_line.setZValue(10)
        for thing in (self.curve, self.dead_curve, self.zipf_curve, self.uniform_line, self.select_line):
            item.addItem(thing)
        self.select_line.hide()
        self.zipf_curve.hide()

        top = QHBoxLayout()
        top.setContentsMargins(4, 0, 4, 0)
        top.addWidget(self.log_box)
        top.addWidget(self.sorted_box)
        top.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.setSpacing(2)
        layout.addLayout(top)
        layout.addWidget(self.header)
        layout.addWidget(self.plot, 1)

        self.log_box.toggled.connect(self._redraw)
        self.sorted_box.toggled.connect(self._redraw)
        selection.layer_changed.connect(self._layer_changed)
        selection.code_changed.connect(lambda layer, code: self._show_code())
        self.plot.scene().sigMouseClicked.connect(self._clicked)
        item.getViewBox().sigXRangeChanged.connect(self._x_range_changed)
        self._show_header()

    # --- data ---------------------------------------------------------------------------------------
    def set_session(self, session: Session | None) -> None:
        self.session = session
        self.snapshot = None
        self.counts = None
        self._drawn = False
        self._redraw()

    def set_snapshot(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self._load_counts()
        self._redraw()

    def _layer_changed(self, layer: int) -> None:
        self._load_counts()
        self._redraw(autorange=True)

    def _load_counts(self) -> None:
        layer = self.selection.layer
        if self.snapshot is None or layer >= len(self.snapshot.counts):
            self.counts = None
            return
        self.counts = self.snapshot.counts[layer]
        self._order = np.argsort(-self.counts, kind="stable")
        self._rank = np.empty_like(self._order)
        self._rank[self._order] = np.arange(self._order.size)

    @property
    def ready(self) -> bool:
        return self._drawn

    # --- drawing --------------------------------------------------------------------------------------
    def _redraw(self, *_, autorange: bool = False) -> None:
        item = self.plot.getPlotItem()
        if self.counts is None:
            for thing in (self.curve, self.dead_curve, self.zipf_curve):
                thing.hide()
            self.uniform_line.hide()
            self.select_line.hide()
            self._series = None
            self._drawn = False
            self._show_header()
            return
        counts = self.counts
        k = counts.size
        self.curve.show()
        self.dead_curve.show()
        log, ranked = self.log_box.isChecked(), self.sorted_box.isChecked()
        values = counts[self._order] if ranked else counts
        dead = values == 0
        total = int(counts.sum())
        axes_mode = (log, ranked and log)
        if axes_mode != self._axes_mode:
            # Linear first, log after the view range is set (below): a log axis over a linear
            # range (0..K) would ask numpy for 10**K. Only on a change: axes redraw their labels.
            item.getAxis("left").setLogMode(False, False)
            item.getAxis("bottom").setLogMode(False, False)
            item.setLabel("bottom", "rank (by uses)" if ranked else "code")
        if ranked and log:
            used = values[~dead].astype(np.float64)
            ranks = np.arange(1, used.size + 1, dtype=np.float64)
            edges = np.log10(np.concatenate([[0.8], ranks + 0.5]))
            self._series = (edges, np.log10(used), np.zeros(used.size, dtype=bool), LOG_FLOOR, 0.0)
            self.dead_curve.hide()
            if used.size:
                self.zipf_curve.setData(np.log10(ranks[[0, -1]]), np.log10(used[0]) - np.log10(ranks[[0, -1]]))
                self.zipf_curve.show()
            else:
                self.zipf_curve.hide()
            base, top = LOG_FLOOR, math.log10(max(1.0, float(values.max()) if k else 1.0))
            x_range = (edges[0], edges[-1] if used.size else 1.0)
        else:
            self.zipf_curve.hide()
            edges = np.arange(k + 1, dtype=np.float64)
            if log:
                y = np.where(values > 0, np.log10(np.maximum(values, 1)), LOG_FLOOR)
                base, top = LOG_FLOOR, math.log10(max(1.0, float(values.max())))
            else:
                y = values.astype(np.float64)
                base, top = 0.0, max(1.0, float(values.max()))
            self._series = (edges, y, dead, base, 0.05 * (top - base))
            x_range = (0, k)
        if total > 0 and k:
            share = total / k
            self.uniform_line.setPos(math.log10(share) if log else share)
            self.uniform_line.show()
        else:
            self.uniform_line.hide()
        vb = item.getViewBox()
        band = 0.05 * (top - base)
        x_range = (float(x_range[0]), float(x_range[1]))
        limits = (x_range[0] - 0.02 * (x_range[1] - x_range[0]), x_range[1] + 0.02 * (x_range[1] - x_range[0]))
        if limits != self._limits:
            vb.setLimits(xMin=limits[0], xMax=limits[1])
            self._limits = limits
        mode = (log, ranked, self.selection.layer, k)
        y_range = (base - band * 1.6, top + 0.06 * (top - base))
        if autorange or not self._drawn or mode != self._mode:
            vb.setRange(xRange=x_range, yRange=y_range, padding=0)
        elif y_range != self._y_range:  # keep the user's horizontal zoom while counts stream in
            vb.setYRange(*y_range, padding=0)
        self._y_range = y_range
        self._mode = mode
        self._draw_visible()
        if axes_mode != self._axes_mode:
            item.getAxis("left").setLogMode(False, log)
            # Log-log: decade labels only (pyqtgraph would label every minor tick, 0.6 0.7 0.8 ...).
            item.getAxis("bottom").setTicks(_decade_ticks(k) if ranked and log else None)
            self._axes_mode = axes_mode
        self._drawn = True
        self._show_header()
        self._show_code()

    def _draw_visible(self) -> None:
        """Give the curves the bins in view, at most ~2 per pixel: the tallest bar of each pixel
        column (and red where any code in it is dead). K = 65,536 then paints as fast as K = 512."""
        self._range_timer.stop()
        if self._series is None:
            return
        edges, y, dead, base, band = self._series
        n = y.size
        if n == 0:
            self.curve.setData(np.array([0.0, 1.0]), np.array([base]), stepMode="center", fillLevel=base)
            self.dead_curve.setData(np.array([0.0, 1.0]), np.array([base]), stepMode="center", fillLevel=base)
            return
        vb = self.plot.getPlotItem().getViewBox()
        lo, hi = vb.viewRange()[0]
        a = max(0, int(np.searchsorted(edges, lo, side="right")) - 1)
        b = min(n, int(np.searchsorted(edges, hi, side="left")) + 1)
        if b <= a:
            a, b = 0, n
        max_bins = int(min(4000, max(800, 2 * vb.width())))
        if b - a > max_bins:
            grid = np.linspace(edges[a], edges[b], max_bins + 1)[:-1]
            starts = np.unique(np.clip(np.searchsorted(edges, grid, side="right") - 1, a, b - 1))
            ys = np.maximum.reduceat(y[a:b], starts - a)
            ds = np.logical_or.reduceat(dead[a:b], starts - a) if dead.any() else np.zeros(starts.size, bool)
            xs = np.concatenate([edges[starts], [edges[b]]])
        else:
            ys, ds, xs = y[a:b], dead[a:b], edges[a:b + 1]
        self.curve.setData(xs, ys, stepMode="center", fillLevel=base, skipFiniteCheck=True)
        if band > 0:
            self.dead_curve.setData(xs, np.where(ds, base - band, base), stepMode="center", fillLevel=base,
                                    skipFiniteCheck=True)
        self.drawn_bins = int(ys.size)

    def _x_range_changed(self, *_) -> None:
        if not self._range_timer.isActive():
            self._range_timer.start()

    def _show_header(self) -> None:
        layer = self.selection.layer
        rep = self.snapshot.layer(layer) if self.snapshot is not None else None
        if rep is None:
            self.header.setText("<i>no audit yet</i>" if self.session else "<i>no checkpoint open</i>")
            return
        dead = len(rep.dead_codes)
        text = (f"<b>Layer {layer}</b> · used {rep.used:,} / {rep.codebook_size:,} ({rep.utilization:.1%})"
                f" · perplexity {rep.perplexity:,.1f} · entropy {rep.entropy:.3f}"
                f" · <span style='color:{DEAD_COLOR}'><b>{dead:,} dead</b></span>")
        if self.sorted_box.isChecked() and self.log_box.isChecked() and dead:
            text += " (not on log axes)"
        if not self.snapshot.complete:
            text += " · <i>partial</i>"
        code = self.selection.code
        if 0 <= code < rep.codebook_size and self.counts is not None:
            count = int(self.counts[code])
            total = max(1, int(self.counts.sum()))
            extra = ""
            if self.session is not None:
                extra = f", norm {self.session.norms[layer][code]:.3g}"
                if self.session.ema_sizes is not None:
                    extra += f", EMA size {self.session.ema_sizes[layer][code]:.3g}"
            text += (f"<br><span style='color:{SELECT_COLOR}'>■</span> code <b>{code}</b>: {count:,} uses "
                     f"({count / total:.2%}), rank {int(self._rank[code]) + 1:,}{extra}")
        self.header.setText(text)

    def _show_code(self) -> None:
        code = self.selection.code
        if self.counts is None or not 0 <= code < self.counts.size:
            self.select_line.hide()
            self._show_header()
            return
        if self.sorted_box.isChecked():
            rank = int(self._rank[code])
            if self.log_box.isChecked():
                if self.counts[code] == 0:
                    self.select_line.hide()
                    self._show_header()
                    return
                x = math.log10(rank + 1)
            else:
                x = rank + 0.5
        else:
            x = code + 0.5
        self.select_line.setPos(x)
        self.select_line.show()
        self._show_header()

    # --- clicks ---------------------------------------------------------------------------------------
    def code_at(self, x: float) -> int | None:
        """The code under view x coordinate `x` in the current mode, or None."""
        if self.counts is None:
            return None
        k = self.counts.size
        if self.sorted_box.isChecked():
            if self.log_box.isChecked():
                rank = int(round(10 ** x)) - 1
                used = int((self.counts > 0).sum())
                if not 0 <= rank < used:
                    return None
            else:
                rank = int(math.floor(x))
            return int(self._order[rank]) if 0 <= rank < k else None
        code = int(math.floor(x))
        return code if 0 <= code < k else None

    def _clicked(self, event) -> None:
        if event.button() != Qt.MouseButton.LeftButton or self.counts is None:
            return
        vb = self.plot.getPlotItem().getViewBox()
        if not vb.sceneBoundingRect().contains(event.scenePos()):
            return
        point = vb.mapSceneToView(event.scenePos())
        code = self.code_at(point.x())
        if code is not None:
            self.selection.set_code(self.selection.layer, code)

    # --- export ---------------------------------------------------------------------------------------
    def export_png(self, path) -> None:
        export_scene_png(self.plot.getPlotItem(), path)

    def cleanup(self) -> None:
        pass
