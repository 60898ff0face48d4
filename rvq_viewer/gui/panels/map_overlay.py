"""A path on the centroid map (a code's centroid across a checkpoint series), drawn only where the map
shows that layer's PCA: the points go through the map's own projection, so they land where the codes do."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, Qt

from ..state import MapOverlay
from ..widgets.common import SELECT_COLOR
from ..theme import ink, paper_brush


class OverlayPath:
    def __init__(self, plot: pg.PlotItem):
        self.line = pg.PlotDataItem(pen=pg.mkPen(SELECT_COLOR, width=2, style=Qt.PenStyle.DashLine),
                                    symbol="o", symbolSize=6, symbolPen=pg.mkPen(ink(), width=1),
                                    symbolBrush=paper_brush(230))
        self.line.setZValue(25)
        self.label = pg.TextItem("", color=ink(), anchor=(0, 1), fill=paper_brush(200))
        self.label.setZValue(26)
        for item in (self.line, self.label):
            plot.addItem(item, ignoreBounds=True)
            item.hide()

    @staticmethod
    def fits(overlay: MapOverlay | None, geometry) -> bool:
        return (overlay is not None and geometry is not None and geometry.projection is not None
                and geometry.single_layer == overlay.layer)

    def draw(self, overlay: MapOverlay | None, geometry) -> bool:
        """Show `overlay` on `geometry` if it fits; True when drawn."""
        if not self.fits(overlay, geometry):
            self.line.hide()
            self.label.hide()
            return False
        xy = geometry.projection.transform(overlay.points).astype(np.float64)
        self.line.setData(xy[:, 0], xy[:, 1])
        self.label.setText(overlay.label)
        self.label.setPos(QPointF(xy[0, 0], xy[0, 1]))
        self.line.show()
        self.label.show()
        return True
