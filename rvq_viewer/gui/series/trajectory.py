"""A code's centroid across the checkpoints of a series, in the PCA of its layer's codebooks at all of them."""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from ...analysis.series import EVENT_KINDS
from ..widgets.empty import EmptyNote
from ..widgets.common import SELECT_COLOR, mark_muted
from .marks import KIND_COLORS, KIND_SYMBOLS
from ..theme import ink

CONTEXT_MAX = 20_000       # grey codes drawn for context at most


class TrajectoryPane(QWidget):
    """`show(result, (layer, code), reference)` draws the path, its events ringed, the reference step's
    codebook in grey; `show(None, ...)` clears it."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.plot = pg.PlotWidget()
        self.plot.setObjectName("events-trajectory")
        tp = self.plot.getPlotItem()
        tp.setMenuEnabled(False)
        tp.hideButtons()
        tp.setAspectLocked(True)
        tp.setLabel("bottom", "PC 1")
        tp.setLabel("left", "PC 2")
        self.context = pg.ScatterPlotItem(size=3, pen=None, brush=pg.mkBrush(150, 150, 150, 90), pxMode=True)
        self.line = pg.PlotDataItem(pen=pg.mkPen(SELECT_COLOR, width=2), symbol="o", symbolSize=7,
                                    symbolPen=None, symbolBrush=pg.mkBrush(SELECT_COLOR))
        self.events = pg.ScatterPlotItem(size=13, brush=None, pxMode=True)
        self.labels: list[pg.TextItem] = []
        for item in (self.context, self.line, self.events):
            tp.addItem(item)
        self.empty = EmptyNote(tp, "click an event or a code for its path")
        self.note = QLabel("")
        self.note.setWordWrap(True)
        mark_muted(self.note)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 0, 2, 0)
        layout.setSpacing(2)
        layout.addWidget(self.plot, 1)
        layout.addWidget(self.note)
        self._text = ""

    def show_code(self, r, selected: tuple[int, int] | None, reference: int | None) -> None:
        tp = self.plot.getPlotItem()
        for label in self.labels:
            tp.removeItem(label)
        self.labels = []
        if r is None or selected is None:
            self.line.setData([], [])
            self.events.setData([], [])
            self.context.setData([], [])
            self.empty.show()
            self.set_note("")
            return
        layer, code = selected
        if not (0 <= layer < r.n_q and 0 <= code < r.codebook_sizes[layer]):
            return
        self.empty.hide()
        proj = r.union_projection(layer)
        path = r.trajectory(layer, code)
        xy = proj.transform(path).astype(np.float64)
        ref = reference if reference is not None else len(r.steps) - 1
        context = proj.transform(r.codebook(ref, layer))
        if len(context) > CONTEXT_MAX:
            context = context[:: math.ceil(len(context) / CONTEXT_MAX)]
        self.context.setData(pos=context.astype(np.float64))
        self.line.setData(xy[:, 0], xy[:, 1])
        # Ring the checkpoints at which this code had an event, in the event's colour.
        step_index = {s: i for i, s in enumerate(r.steps)}
        spots = []
        for row in r.events.of_code(layer, code):
            i = step_index.get(int(r.events.steps[row]))
            if i is not None:
                kind = EVENT_KINDS[int(r.events.kinds[row])]
                spots.append({"pos": (xy[i, 0], xy[i, 1]), "pen": pg.mkPen(KIND_COLORS[kind], width=2),
                              "symbol": KIND_SYMBOLS[kind]})
        self.events.setData(spots)
        leftward = xy[-1, 0] < xy[0, 0]          # put each end's step label on its outer side
        for i, anchor in ((0, (0, 0) if leftward else (1, 0)), (len(r.steps) - 1, (1, 1) if leftward else (0, 1))):
            label = pg.TextItem(f"{r.steps[i]:,}", color=ink(), anchor=anchor)
            label.setPos(xy[i, 0], xy[i, 1])
            tp.addItem(label, ignoreBounds=True)
            self.labels.append(label)
        lo = np.minimum(context.min(axis=0), xy.min(axis=0))
        hi = np.maximum(context.max(axis=0), xy.max(axis=0))
        tp.getViewBox().setRange(xRange=(float(lo[0]), float(hi[0])), yRange=(float(lo[1]), float(hi[1])))
        moved = float(np.linalg.norm(np.diff(path, axis=0), axis=1).sum())
        self.set_note(f"<b>Code {code}</b> of layer {layer} over {len(r.steps)} checkpoints (moved {moved:.3g} in "
                      f"total). PCA of the layer's codebooks at all checkpoints; grey: step {r.steps[ref]:,}; "
                      "rings: its events.")

    def set_note(self, text: str, map_note: str | None = None) -> None:
        """The trajectory's caption, and (when given) whether the centroid map draws it too."""
        if text or map_note is None:
            self._text = text
        self.note.setText(self._text + (f" {map_note}" if map_note and self._text else ""))
