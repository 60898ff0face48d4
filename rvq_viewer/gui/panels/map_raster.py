"""A centroid map too big for scatter items, drawn as one image at the view's pixel resolution.

Above `RASTER_ABOVE` points, painting a scatter item costs tens of ms a frame in pyqtgraph (a 65,536-point
map stalled the window 60-80 ms, more on a loaded machine; benchmarks/ui.py blames ScatterPlotItem.paint).
Here every point sets the pixels of a small square in an RGBA image the size of the view box, in the
colour of its group; where points overlap, the group drawn on top in the scatter (higher z) wins. The
image is rebuilt for the visible range when the view is zoomed or panned (a few ms for 262,144 points),
so points stay points at any zoom. Hover, click and box selection still hit-test the exact positions.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, QTimer

RASTER_ABOVE = 16_384          # more points than this: the image, not scatter items
MAX_SIDE = 2048                # pixels per image side at most
REDRAW_MS = 40                 # after a zoom or pan, redraw once it pauses this long


class MapRaster:
    """The image item of one plot. `set_points(coords, groups)` gives the points and their colour groups
    ((indices, brush, size px, z), as the scatter would draw them); `clear()` empties it."""

    def __init__(self, plot: pg.PlotItem):
        self.plot = plot
        self.item = pg.ImageItem(axisOrder="row-major")
        self.item.setZValue(1)
        plot.addItem(self.item, ignoreBounds=True)
        self.item.hide()
        self._xy = np.zeros((0, 2))
        self._group = np.zeros(0, dtype=np.int16)
        self._lut = np.zeros((1, 4), dtype=np.uint8)
        self._size = 3
        self._timer = QTimer()
        self._timer.setSingleShot(True)
        self._timer.setInterval(REDRAW_MS)
        self._timer.timeout.connect(self.redraw)
        plot.getViewBox().sigRangeChanged.connect(lambda *_: self._timer.start() if self.active else None)
        plot.getViewBox().sigResized.connect(lambda *_: self._timer.start() if self.active else None)

    @property
    def active(self) -> bool:
        return self.item.isVisible()

    def set_points(self, coords: np.ndarray, groups: list) -> None:
        """Points in `coords` [n, 2], coloured by `groups`, drawn now."""
        ordered = sorted(groups, key=lambda g: g[3])           # low z first: higher z is written over it
        lut = [(0, 0, 0, 0)]                                     # -1 + 1: nothing there
        for _idx, brush, _size, _z in ordered:
            c = pg.mkBrush(brush).color()
            lut.append((c.red(), c.green(), c.blue(), 255))
        # Points in z order, group by group (no sort: the groups already partition them).
        order = np.concatenate([np.asarray(g[0], dtype=np.int64) for g in ordered]) if ordered else \
            np.zeros(0, dtype=np.int64)
        self._xy = coords[order].astype(np.float32)
        self._group = np.repeat(np.arange(len(ordered), dtype=np.int16), [len(g[0]) for g in ordered])
        self._lut = np.array(lut, dtype=np.uint8)
        self._size = max(2, int(round(max((g[2] for g in groups), default=3.0) * 0.8)))
        self.item.show()
        self.redraw()

    def clear(self) -> None:
        self._timer.stop()
        self._xy = np.zeros((0, 2))
        self._group = np.zeros(0, dtype=np.int16)
        self.item.clear()
        self.item.hide()

    def redraw(self) -> None:
        if not self.active:
            return
        vb = self.plot.getViewBox()
        (x0, x1), (y0, y1) = vb.viewRange()
        width = int(min(MAX_SIDE, max(16, vb.width())))
        height = int(min(MAX_SIDE, max(16, vb.height())))
        image = np.full((height, width), -1, dtype=np.int16)
        if len(self._xy) and x1 > x0 and y1 > y0:
            ix = ((self._xy[:, 0] - x0) * (width / (x1 - x0))).astype(np.int32)
            iy = ((self._xy[:, 1] - y0) * (height / (y1 - y0))).astype(np.int32)
            keep = (ix >= 0) & (ix < width) & (iy >= 0) & (iy < height)
            # One pixel per point first: points come sorted by group (z) and numpy assigns in order, so a
            # pixel keeps its highest-z point's group. Then each point grows to a size x size square by a
            # running maximum over shifted copies (group numbers rise with z: the top group still wins).
            image.reshape(-1)[iy[keep] * width + ix[keep]] = self._group[keep]
            grown = image.copy()
            for dy in range(self._size):
                for dx in range(self._size):
                    if dx or dy:
                        np.maximum(grown[dy:, dx:], image[:height - dy, :width - dx], out=grown[dy:, dx:])
            image = grown
        self.item.setImage(self._lut[image + 1], autoLevels=False)
        self.item.setRect(QRectF(x0, y0, x1 - x0, y1 - y0))
