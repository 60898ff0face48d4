"""The run's timelines: per-layer utilization, perplexity and EMA-dead codes over steps, and the events
(and the step where each layer first met a collapse rule) in one lane per layer below them.

The selected layer is drawn thick, the others thin; a vertical line marks the window the step slider
shows, on every plot. Everything is redrawn from `RunArrays` with `setData`, which is cheap for the few
thousand windows of a run.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg

from ...analysis.series import EVENT_KINDS
from ..series.marks import KIND_COLORS, KIND_SYMBOLS
from .. import theme
from ..widgets.common import DEAD_COLOR, SELECT_COLOR, layer_color

PLOTS = (("utilization", "used / K"), ("perplexity", "perplexity"), ("ema_dead", "EMA-dead"))


class RunPlots(pg.GraphicsLayoutWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("run-canvas")
        self.ci.layout.setSpacing(2)
        self.plots: dict[str, pg.PlotItem] = {}
        self.curves: dict[str, list[pg.PlotDataItem]] = {}
        self.cursors: list[pg.InfiniteLine] = []
        first = None
        self.corner_labels = []
        rows = PLOTS + (("events", "events"),)
        for row, (name, label) in enumerate(rows):
            plot = self.addPlot(row=row, col=0)
            plot.setMenuEnabled(False)
            plot.hideButtons()
            # The name inside the plot's corner: a rotated axis label is taller than a short dock's plot.
            self.corner_labels.append(_corner_label(plot, label))
            plot.getAxis("left").setWidth(48)
            if row < len(rows) - 1:                       # x-linked: one row of step values, at the bottom
                plot.getAxis("bottom").setStyle(showValues=False)
                plot.getAxis("bottom").setHeight(4)
            plot.showGrid(x=True, y=True, alpha=0.2)
            plot.getViewBox().setMouseEnabled(x=True, y=False)
            if first is None:
                first = plot
            else:
                plot.setXLink(first)
            cursor = pg.InfiniteLine(angle=90, movable=False, pen=pg.mkPen(SELECT_COLOR, width=1.5))
            cursor.setZValue(30)
            plot.addItem(cursor)
            self.cursors.append(cursor)
            self.plots[name] = plot
            self.curves[name] = []
        self.plots["events"].getViewBox().invertY(True)
        self.plots["events"].setLabel("bottom", "step")
        self.event_items = []
        for kind in EVENT_KINDS:
            item = pg.ScatterPlotItem(pen=None, brush=pg.mkBrush(KIND_COLORS[kind]), symbol=KIND_SYMBOLS[kind], size=7)
            self.plots["events"].addItem(item)
            self.event_items.append(item)
        self.collapse_marks = pg.ScatterPlotItem(pen=pg.mkPen(DEAD_COLOR, width=2), brush=None, symbol="x", size=13)
        self.collapse_marks.setZValue(25)
        self.plots["events"].addItem(self.collapse_marks)
        self.arrays = None

    def draw(self, arrays, layer: int) -> None:
        self.arrays = arrays
        n_q = arrays.utilization.shape[1] if arrays.utilization.ndim == 2 else 0
        x = arrays.steps.astype(np.float64)
        for name, _ in PLOTS:
            curves = self.curves[name]
            while len(curves) < n_q:
                curve = self.plots[name].plot([], [], symbol="o", symbolSize=3)
                curves.append(curve)
            values = getattr(arrays, name)
            for i, curve in enumerate(curves):
                if i >= n_q:
                    curve.setData([], [])
                    continue
                color = layer_color(i)
                width = 3 if i == layer else 1
                curve.setPen(pg.mkPen(color, width=width))
                curve.setSymbolBrush(color)
                curve.setSymbolPen(None)
                curve.setZValue(10 if i == layer else 0)
                finite = np.isfinite(values[:, i])
                curve.setData(x[finite], values[finite, i])
        for kind, item in enumerate(self.event_items):
            sel = arrays.event_kinds == kind
            y = arrays.event_layers[sel].astype(np.float64) + (kind - 1) * 0.25
            item.setData(arrays.event_steps[sel].astype(np.float64), y)
        firsts = [(h.first_collapse_step, h.layer) for h in arrays.histories if h.first_collapse_step is not None]
        self.collapse_marks.setData([float(s) for s, _ in firsts], [float(l) for _, l in firsts])
        events = self.plots["events"]
        events.setYRange(-0.6, max(n_q, 1) - 0.4, padding=0)
        events.getAxis("left").setTicks([[(float(i), f"L{i}") for i in range(n_q)]])

    def set_cursor(self, step: float | None) -> None:
        for cursor in self.cursors:
            cursor.setVisible(step is not None)
            if step is not None:
                cursor.setValue(float(step))

    def step_at(self, scene_pos) -> float | None:
        """The step under a scene position on any of the plots (None: outside them)."""
        for plot in self.plots.values():
            box = plot.getViewBox()
            if box.sceneBoundingRect().contains(scene_pos):
                return float(box.mapSceneToView(scene_pos).x())
        return None


def _corner_label(plot: pg.PlotItem, text: str) -> pg.TextItem:
    """`text` at the top-left corner of the plot's view, kept there as it pans and zooms."""
    paper = pg.mkColor(theme.current().paper)
    paper.setAlpha(200)                                  # legible over the curves it sits on
    item = pg.TextItem(text, color=theme.muted(), anchor=(0, 0), fill=pg.mkBrush(paper))
    item.setZValue(40)
    plot.addItem(item, ignoreBounds=True)

    def place(*_):
        (x0, _x1), (y0, y1) = plot.getViewBox().viewRange()
        top = y0 if plot.getViewBox().yInverted() else y1
        item.setPos(x0, top)
    plot.getViewBox().sigRangeChanged.connect(place)
    place()
    return item
