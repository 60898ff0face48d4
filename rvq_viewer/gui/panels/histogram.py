"""Usage histogram of the selected layer: uses per code as one step curve, dead codes in red below it.

The curve is a `UsageCurve` (one path for all K codes, only the bins in view drawn); by code or sorted by
use (rank-frequency, log-log with a Zipf guide), linear or log.
"""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QCursor
from PySide6.QtWidgets import QCheckBox, QToolTip

from ...app.session import counted_on
from ..state import AppState
from .base import Panel
from ..widgets.common import (DEAD_COLOR, MIN_PLOT_HEIGHT, MIN_PLOT_WIDTH, SELECT_COLOR, export_plot_png,
                              header_label, reset_button, steady_axis)
from ..widgets.empty import EmptyNote
from ..widgets.picking import view_point
from ..widgets.usage_curve import UsageCurve, decade_ticks, usage_steps
from ..theme import muted

BAR_COLOR = "#3B75AF"
UNIFORM_COLOR = "#2E7D32"
COUNT_AXIS_WIDTH = 66         # room for 6-character ticks ("800000", "4e+07") beside the axis title


class HistogramView(Panel):
    title = "Usage histogram"

    def __init__(self, state: AppState, parent=None):
        super().__init__(state, "histogram", parent)
        self.counts: np.ndarray | None = None
        self.steps = None
        self._drawn = False
        self._mode = None
        self._axes_mode = None
        self._limits = None
        self._y_range = None
        self._count_ticks = None
        self._range_timer = QTimer(self)
        self._range_timer.setSingleShot(True)
        self._range_timer.setInterval(30)
        self._range_timer.timeout.connect(lambda: self.usage.draw_visible())

        self.log_box = QCheckBox("Log scale")
        self.log_box.setObjectName("histogram-log")
        self.sorted_box = QCheckBox("Sorted: rank-frequency (Zipf)")
        self.sorted_box.setObjectName("histogram-sorted")
        self.sorted_box.setToolTip("codes ordered by use; with log scale both axes are logarithmic")
        self.header = header_label(lines=2)     # the layer's figures, then the selected code's
        self.header.setObjectName("histogram-header")
        self.plot = pg.PlotWidget()
        self.plot.setObjectName("histogram-plot")
        self.plot.setMinimumSize(MIN_PLOT_WIDTH, MIN_PLOT_HEIGHT)
        item = self.plot.getPlotItem()
        item.setMenuEnabled(False)
        item.showGrid(x=False, y=True, alpha=0.25)
        item.setLabel("left", "uses")
        item.setLabel("bottom", "code")
        steady_axis(item.getAxis("left"), COUNT_AXIS_WIDTH)
        item.getViewBox().setMouseEnabled(x=True, y=False)
        item.disableAutoRange()
        self.usage = UsageCurve(item, BAR_COLOR, dead_color=DEAD_COLOR)
        self.zipf_curve = pg.PlotCurveItem(pen=pg.mkPen("#888888", width=1, style=Qt.PenStyle.DashLine))
        # The header names the dashed line: a label on it would sit on the bars.
        self.uniform_line = pg.InfiniteLine(angle=0, movable=False, pen=pg.mkPen(UNIFORM_COLOR, width=1,
                                                                                  style=Qt.PenStyle.DashLine))
        self.select_line = pg.InfiniteLine(angle=90, movable=False, pen=pg.mkPen(SELECT_COLOR, width=2))
        self.select_line.setZValue(10)
        # The shared set of codes (a box on the map): their bars outlined from the base up.
        self.set_bars = pg.PlotCurveItem(pen=pg.mkPen(SELECT_COLOR, width=2), connect="pairs")
        self.set_bars.setZValue(9)
        for thing in (self.zipf_curve, self.uniform_line, self.select_line, self.set_bars):
            item.addItem(thing)
        self.select_line.hide()
        self.zipf_curve.hide()
        self.empty = EmptyNote(item, "no checkpoint open")

        self.reset_button = reset_button(self.reset_view, "histogram")
        self.lay_out([self.log_box, self.sorted_box, self.reset_button], self.header, self.plot)

        self.log_box.toggled.connect(self._redraw)
        self.sorted_box.toggled.connect(self._redraw)
        self.selection.layer_changed.connect(self._layer_changed)
        self.selection.code_changed.connect(lambda layer, code: self._show_code())
        self.selection.codes_changed.connect(lambda layer, codes: self._show_set())
        self.plot.scene().sigMouseClicked.connect(self._clicked)
        self._hover_proxy = pg.SignalProxy(self.plot.scene().sigMouseMoved, rateLimit=20, slot=self._hovered)
        item.getViewBox().sigXRangeChanged.connect(self._x_range_changed)
        self._show_header()

    @property
    def curve(self) -> pg.PlotCurveItem:
        return self.usage.curve

    @property
    def drawn_bins(self) -> int:
        return self.usage.drawn_bins

    # --- data ---------------------------------------------------------------------------------------
    def set_session(self, session) -> None:
        self.session = session
        self.snapshot = None
        self.counts = None
        self._drawn = False
        self._redraw()

    def set_snapshot(self, snapshot) -> None:
        self.snapshot = snapshot
        self._load_counts()
        self._redraw()

    def _layer_changed(self, layer: int) -> None:
        self._load_counts()
        self._redraw(autorange=True)

    def _load_counts(self) -> None:
        layer = self.selection.layer
        self.counts = None if self.snapshot is None or layer >= len(self.snapshot.counts) \
            else self.snapshot.counts[layer]

    @property
    def ready(self) -> bool:
        return self._drawn

    # --- drawing --------------------------------------------------------------------------------------
    def _redraw(self, *_, autorange: bool = False) -> None:
        item = self.plot.getPlotItem()
        if self.counts is None:
            self.usage.set_steps(None)
            for thing in (self.zipf_curve, self.uniform_line, self.select_line, self.set_bars):
                thing.hide()
            self.steps = None
            self._drawn = False
            self.empty.show("no audit yet" if self.session is not None else "no checkpoint open")
            self._show_header()
            return
        self.empty.hide()
        counts = self.counts
        k = counts.size
        log, ranked = self.log_box.isChecked(), self.sorted_box.isChecked()
        steps = usage_steps(counts, ranked=ranked, log=log)
        self.steps = steps
        axes_mode = (log, ranked and log)
        if axes_mode != self._axes_mode:
            # Linear first, log after the view range is set (below): a log axis over a linear
            # range (0..K) would ask numpy for 10**K. Only on a change: axes redraw their labels.
            item.getAxis("left").setLogMode(False, False)
            item.getAxis("bottom").setLogMode(False, False)
            item.setLabel("bottom", "rank (by uses)" if ranked else "code")
        if ranked and log and steps.y.size:
            ranks = np.array([1.0, float(steps.y.size)])
            self.zipf_curve.setData(np.log10(ranks), steps.y[0] - np.log10(ranks))
            self.zipf_curve.show()
        else:
            self.zipf_curve.hide()
        x_range = (float(steps.edges[0]), float(steps.edges[-1]) if steps.y.size else 1.0)
        total = int(counts.sum())
        if total > 0 and k:
            share = total / k
            self.uniform_line.setPos(math.log10(share) if log else share)
            self.uniform_line.show()
        else:
            self.uniform_line.hide()
        base, top = steps.base, steps.top
        band = 0.05 * (top - base)
        vb = item.getViewBox()
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
        self.usage.set_steps(steps, band)
        # Decades only on a log count axis: pyqtgraph labels every minor tick (2·10¹, 3·10¹, ...) on a tall
        # plot, and the labels then run into each other.
        count_ticks = (log, math.ceil(top)) if log else None
        if count_ticks != self._count_ticks:
            item.getAxis("left").setTicks(decade_ticks(top) if log else None)
            self._count_ticks = count_ticks
        if axes_mode != self._axes_mode:
            item.getAxis("left").setLogMode(False, log)
            # Log-log: decade labels only (pyqtgraph would label every minor tick, 0.6 0.7 0.8 ...).
            item.getAxis("bottom").setTicks(decade_ticks(math.log10(max(k, 1))) if ranked and log else None)
            self._axes_mode = axes_mode
        self._drawn = True
        self._show_set()
        self._show_code()

    def reset_view(self) -> None:
        self._redraw(autorange=True)

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
        codes = self.selection.codes
        if codes.size and self.counts is not None:
            uses = int(self.counts[codes[codes < self.counts.size]].sum())
            unused = int((self.counts[codes[codes < self.counts.size]] == 0).sum())
            text += (f"<br><span style='color:{SELECT_COLOR}'>▢</span> {codes.size:,} codes boxed on the map: "
                     f"{uses:,} uses ({uses / max(1, int(self.counts.sum())):.1%}), {unused:,} unused")
        code = self.selection.code
        if 0 <= code < rep.codebook_size and self.counts is not None and self.steps is not None:
            count = int(self.counts[code])
            total = max(1, int(self.counts.sum()))
            extra = ""
            if self.session is not None:
                extra = f", norm {self.session.norms[layer][code]:.3g}"
                if self.session.ema_sizes is not None:
                    extra += f", EMA size {self.session.ema_sizes[layer][code]:.3g}"
            text += (f"<br><span style='color:{SELECT_COLOR}'>■</span> code <b>{code}</b>: {count:,} uses "
                     f"({count / total:.2%}), rank {int(self.steps.rank[code]) + 1:,}{extra}")
        else:       # the second line names the marks until a code is selected (a label would sit on bars)
            text += (f"<br><span style='color:{muted()}'><span style='color:{UNIFORM_COLOR}'>- - -</span> the uniform "
                     f"share · <span style='color:{DEAD_COLOR}'>▁</span> unused codes · click a bar for its code"
                     "</span>")
        self.header.setText(text)

    def _show_code(self) -> None:
        x = self.steps.x_of(self.selection.code) if self.steps is not None else None
        if x is None:
            self.select_line.hide()
        else:
            self.select_line.setPos(x)
            self.select_line.show()
        self._show_header()

    def _show_set(self) -> None:
        codes = self.selection.codes
        if self.steps is None or codes.size == 0:
            self.set_bars.hide()
        else:
            x, top = self.steps.bars_of(codes)
            self.set_bars.setData(np.repeat(x, 2), np.column_stack([np.full(x.size, self.steps.base), top]).ravel())
            self.set_bars.show()
        self._show_header()

    def describe_code(self, code: int) -> str:
        """What a bar's tooltip says: code, uses, share, rank, EMA size, dead."""
        counts = self.counts
        count = int(counts[code])
        text = (f"code {code}\n{count:,} uses ({count / max(1, int(counts.sum())):.2%} of frames)\n"
                f"rank {int(self.steps.rank[code]) + 1:,} of {counts.size:,}")
        layer = self.selection.layer
        if self.session is not None and self.session.ema_sizes is not None:
            text += f"\nEMA size {self.session.ema_sizes[layer][code]:.3g}"
        if count == 0:
            text += f"\ndead: unused on {counted_on(self.snapshot)}"
        return text

    def _hovered(self, args) -> None:
        if self.steps is None or self.counts is None:
            return
        point = view_point(self.plot.getPlotItem().getViewBox(), args[0])
        code = self.code_at(point.x()) if point is not None else None
        if code is None:
            QToolTip.hideText()
            return
        QToolTip.showText(QCursor.pos(), self.describe_code(code), self.plot)

    # --- clicks ---------------------------------------------------------------------------------------
    def code_at(self, x: float) -> int | None:
        """The code under view x coordinate `x` in the current mode, or None."""
        return self.steps.code_at(x) if self.steps is not None else None

    def _clicked(self, event) -> None:
        if event.button() != Qt.MouseButton.LeftButton or self.steps is None:
            return
        point = view_point(self.plot.getPlotItem().getViewBox(), event.scenePos())
        code = self.code_at(point.x()) if point is not None else None
        if code is not None:
            self.selection.set_code(self.selection.layer, code)

    # --- export ---------------------------------------------------------------------------------------
    def export_png(self, path) -> None:
        what = "Rank-frequency of code use" if self.sorted_box.isChecked() else "Uses per code"
        export_plot_png(self.plot, path, self.export_title(what, self.selection.layer))

    def cleanup(self) -> None:
        self._range_timer.stop()
        self._hover_proxy.disconnect()
