"""The Compare window's two plots of the selected layer: both usage curves on one axis, and both centroid
sets in one PCA fitted once on both. Each pane draws a `Comparison` and moves the shared selection."""

from __future__ import annotations

import html
import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from ...analysis.compare import Comparison
from ..state import Selection
from ..widgets.empty import EmptyNote
from ..widgets.common import header_label
from ..widgets.picking import pick, view_point
from ..widgets.usage_curve import UsageCurve, UsageSteps, decade_ticks, usage_steps
from .palette import A_COLOR, B_COLOR, brush
from ..theme import ink, muted, paper_brush

PICK_PIXELS = 12         # a click picks the nearest point within this many pixels


def column(header: QWidget, body: QWidget, footer: QWidget | None = None) -> QWidget:
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


class UsagePane:
    """Uses per code of A and B as two filled step curves (as shares when their frame counts differ)."""

    def __init__(self, selection: Selection):
        self.selection = selection
        self.label = header_label()
        self.label.setObjectName("compare-hist-header")
        self.plot = pg.PlotWidget()
        self.plot.setObjectName("compare-histogram")
        item = self.plot.getPlotItem()
        item.setMenuEnabled(False)
        item.hideButtons()
        item.showGrid(x=False, y=True, alpha=0.25)
        item.getViewBox().setMouseEnabled(x=True, y=False)
        self.usage_a = UsageCurve(item, A_COLOR, fill_alpha=90, width=1.2)
        self.usage_b = UsageCurve(item, B_COLOR, fill_alpha=80, width=1.2)
        self.code_line_a = pg.InfiniteLine(angle=90, movable=False, pen=pg.mkPen("#003B5C", width=2.5))
        self.code_line_b = pg.InfiniteLine(angle=90, movable=False,
                                           pen=pg.mkPen("#7A2E00", width=2.5, style=Qt.PenStyle.DashLine))
        for line in (self.code_line_a, self.code_line_b):
            item.addItem(line)
            line.setZValue(10)
            line.hide()
        self.legend = item.addLegend(offset=(-10, 8), labelTextSize="8pt", brush=paper_brush(210))
        self.legend.addItem(self.usage_a.curve, "A")
        self.legend.addItem(self.usage_b.curve, "B")
        self.plot.scene().sigMouseClicked.connect(self._clicked)
        item.getViewBox().sigXRangeChanged.connect(lambda *_: (self.usage_a.draw_visible(),
                                                               self.usage_b.draw_visible()))
        self.steps: tuple[UsageSteps, UsageSteps] | None = None
        self._mode = None
        self.empty = EmptyNote(item, "comparing…")
        self.widget = column(self.label, self.plot)

    def draw(self, c: Comparison, layer: int, ranked: bool, log: bool, autorange: bool = True) -> None:
        item = self.plot.getPlotItem()
        self.empty.hide()
        ca, cb = np.asarray(c.usage_a[layer]), np.asarray(c.usage_b[layer])
        frames_equal = c.frames_a == c.frames_b
        share = ranked or not frames_equal
        # A zero sits half a unit below the smallest possible value (1 use, or 1 frame's share).
        floor = math.log10(0.5 * (1.0 / max(c.frames_a, c.frames_b, 1) if share else 1.0))

        def steps_of(counts):
            total = counts.sum()
            scale = 1.0 / total if share and total > 0 else 1.0
            return usage_steps(counts, ranked=ranked, log=log, scale=scale, floor=floor)

        sa, sb = steps_of(ca), steps_of(cb)
        self.steps = (sa, sb)
        unit = "share of frames" if share else "uses"
        item.setLabel("left", f"{unit} (log)" if log else unit)
        item.setLabel("bottom", "rank (by uses)" if ranked else "code")
        top = max(sa.top, sb.top)
        base = sa.base
        left = item.getAxis("left")
        left.setTicks([[(float(e), f"{10.0 ** e:g}") for e in range(math.floor(floor) + 1, math.ceil(top) + 1)], []]
                      if log else None)
        x_hi = max(float(sa.edges[-1]), float(sb.edges[-1]))
        item.getAxis("bottom").setTicks(decade_ticks(x_hi) if ranked and log else None)
        if autorange or (ranked, log) != self._mode:
            x_lo = min(float(sa.edges[0]), float(sb.edges[0]))
            vb = item.getViewBox()
            vb.setLimits(xMin=x_lo - 0.02 * (x_hi - x_lo), xMax=x_hi + 0.02 * (x_hi - x_lo))
            vb.setRange(xRange=(x_lo, x_hi), yRange=(base, top + 0.05 * (top - base)), padding=0.0)
        self._mode = (ranked, log)
        self.usage_a.set_steps(sa)
        self.usage_b.set_steps(sb)
        kind = "rank-frequency (sorted by uses)" if ranked else "uses per code"
        note = "" if frames_equal or ranked else f" as shares: A has {c.frames_a:,} frames, B {c.frames_b:,}"
        used_a, used_b = int((ca > 0).sum()), int((cb > 0).sum())
        self.label.setText(f"<b>Layer {layer}: {kind}</b>{html.escape(note)} · "
                           f"<span style='color:{A_COLOR}'>A uses {used_a:,}/{ca.size:,}</span> · "
                           f"<span style='color:{B_COLOR}'>B uses {used_b:,}/{cb.size:,}</span>")

    def show_code(self, code: int, match_b: int) -> None:
        """Mark A's code and its match in B (-1: none)."""
        for line, steps, which in ((self.code_line_a, 0, code), (self.code_line_b, 1, match_b)):
            x = self.steps[steps].x_of(which) if self.steps is not None and which >= 0 else None
            if x is None:
                line.hide()
            else:
                line.setPos(x)
                line.show()

    def _clicked(self, event) -> None:
        if self.steps is None:
            return
        point = view_point(self.plot.getPlotItem().getViewBox(), event.scenePos())
        code = self.steps[0].code_at(point.x()) if point is not None else None
        if code is not None:
            self.selection.set_code(self.selection.layer, code)


class ProjectionPane(QObject):
    """Both centroid sets in one PCA (faint: unused on the features); a selected code of A is ringed, with
    a dashed link to its nearest code of B."""

    message = Signal(str)

    def __init__(self, selection: Selection, parent=None):
        super().__init__(parent)
        self.selection = selection
        self.comparison: Comparison | None = None
        self.label = header_label()
        self.label.setObjectName("compare-proj-header")
        self.plot = pg.PlotWidget()
        self.plot.setObjectName("compare-projection")
        item = self.plot.getPlotItem()
        item.setMenuEnabled(False)
        item.hideButtons()
        item.setAspectLocked(True)
        item.showGrid(x=True, y=True, alpha=0.15)
        # One item per (side, used) group: one brush each keeps ScatterPlotItem on its fast path.
        self.points_a_unused = pg.ScatterPlotItem(size=5, pen=None, brush=brush(A_COLOR, 55), symbol="o")
        self.points_b_unused = pg.ScatterPlotItem(size=6, pen=None, brush=brush(B_COLOR, 55), symbol="t1")
        self.points_a = pg.ScatterPlotItem(size=7, pen=None, brush=brush(A_COLOR, 210), symbol="o")
        self.points_b = pg.ScatterPlotItem(size=8, pen=None, brush=brush(B_COLOR, 210), symbol="t1")
        self.link = pg.PlotCurveItem(pen=pg.mkPen(ink(), width=1.5, style=Qt.PenStyle.DashLine))
        self.ring_a = pg.ScatterPlotItem(size=19, pen=pg.mkPen(A_COLOR, width=3), brush=None, symbol="o")
        self.ring_b = pg.ScatterPlotItem(size=19, pen=pg.mkPen(B_COLOR, width=3), brush=None, symbol="o")
        for z, thing in enumerate((self.points_a_unused, self.points_b_unused, self.points_a, self.points_b,
                                   self.link, self.ring_a, self.ring_b)):
            thing.setZValue(z)
            item.addItem(thing)
        for thing in (self.link, self.ring_a, self.ring_b):
            thing.hide()
        legend = item.addLegend(offset=(-10, 8), labelTextSize="8pt", brush=paper_brush(210))
        for points, name in ((self.points_a, "A used"), (self.points_a_unused, "A unused"),
                             (self.points_b, "B used"), (self.points_b_unused, "B unused")):
            legend.addItem(points, name)
        self.legend = legend
        self.plot.scene().sigMouseClicked.connect(self._clicked)
        self.code_label = QLabel(" ")
        self.code_label.setObjectName("compare-code")
        self.code_label.setTextFormat(Qt.TextFormat.RichText)
        self.code_label.setWordWrap(True)
        self.empty = EmptyNote(item, "comparing…")
        self.widget = column(self.label, self.plot, self.code_label)

    def draw(self, c: Comparison, layer: int) -> None:
        self.comparison = c
        p = c.projections[layer] if layer < len(c.projections) else None
        groups = (self.points_a, self.points_a_unused, self.points_b, self.points_b_unused)
        if p is None:
            for g in groups:
                g.clear()
            self.empty.show("no joint projection for this layer")
            self.label.setText("<i>No joint projection for this layer (see the notes above).</i>")
            return
        self.empty.hide()
        ca, cb = np.asarray(c.usage_a[layer]), np.asarray(c.usage_b[layer])
        used_a = ca > 0 if ca.size == len(p.a) else np.ones(len(p.a), dtype=bool)
        used_b = cb > 0 if cb.size == len(p.b) else np.ones(len(p.b), dtype=bool)
        for g, coords, mask in ((self.points_a, p.a, used_a), (self.points_a_unused, p.a, ~used_a),
                                (self.points_b, p.b, used_b), (self.points_b_unused, p.b, ~used_b)):
            idx = np.flatnonzero(mask)
            g.setData(x=coords[idx, 0], y=coords[idx, 1], data=idx)
        both = np.concatenate([p.a, p.b]).astype(np.float64)   # float32 ranges overflow in ViewBox's checks
        lo, hi = both.min(axis=0), both.max(axis=0)
        pad = 0.05 * np.maximum(hi - lo, 1e-9)
        item = self.plot.getPlotItem()
        item.getViewBox().setRange(xRange=(float(lo[0] - pad[0]), float(hi[0] + pad[0])),
                                   yRange=(float(lo[1] - pad[1]), float(hi[1] + pad[1])), padding=0.0)
        item.setLabel("bottom", f"PC1 ({p.explained[0]:.0%} of variance)")
        item.setLabel("left", f"PC2 ({p.explained[1]:.0%})")
        self.label.setText(f"<b>Layer {layer}: both centroid sets in one PCA</b>, fitted once on the "
                           f"{html.escape(p.fitted_on)} of A and B · <span style='color:{A_COLOR}'>● A</span> "
                           f"<span style='color:{B_COLOR}'>▲ B</span>, faint = unused on the features")

    def show_code(self, layer: int, code: int) -> None:
        c = self.comparison
        p = c.projections[layer] if c is not None else None
        match = c.matches[layer] if c is not None else None
        if code < 0 or p is None or code >= len(p.a):
            for thing in (self.ring_a, self.ring_b, self.link):
                thing.hide()
            self.code_label.setText(f"<span style='color:{muted()}'>Select a code (a row, a point, or a bar) to see "
                                    "it and its nearest code of B.</span>")
            return
        ua, ub = np.asarray(c.usage_a[layer]), np.asarray(c.usage_b[layer])
        pa = p.a[code]
        self.ring_a.setData(x=[pa[0]], y=[pa[1]])
        self.ring_a.show()
        text = f"<b style='color:{A_COLOR}'>A code {code}</b>: {int(ua[code]) if code < ua.size else 0:,} uses"
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

    def _clicked(self, event) -> None:
        c = self.comparison
        layer = self.selection.layer
        p = c.projections[layer] if c is not None and layer < len(c.projections) else None
        if p is None:
            return
        hit = pick(self.plot.getPlotItem().getViewBox(), event.scenePos(), [p.a, p.b], PICK_PIXELS)
        if hit is None:
            return
        side, code = hit
        if side == 1:
            match = c.matches[layer]
            if match is None:
                return
            b, code = code, int(match.reverse_index[code])
            self.message.emit(f"B code {b}: its nearest code of A is {code}")
        self.selection.set_code(layer, code)
