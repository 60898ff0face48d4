"""A sentence in place of a plot with nothing to show ("no audit yet"), never axes over meaningless
ranges."""

from __future__ import annotations
from ..theme import muted

import pyqtgraph as pg


class EmptyNote:
    """While shown, the plot's axes are hidden and the sentence sits in the middle of its view."""

    def __init__(self, plot: pg.PlotItem, text: str):
        self.plot = plot
        self.text = text
        self.item = pg.TextItem(text, color=muted(), anchor=(0.5, 0.5))
        self.item.setZValue(100)
        plot.addItem(self.item, ignoreBounds=True)
        self.axes = [name for name in ("left", "bottom", "right", "top") if plot.getAxis(name).isVisible()]
        plot.getViewBox().sigRangeChanged.connect(lambda *_: self._place())
        self.shown = False
        self.show(text)

    def _place(self) -> None:
        if self.shown:
            (x0, x1), (y0, y1) = self.plot.getViewBox().viewRange()
            self.item.setPos((x0 + x1) / 2, (y0 + y1) / 2)

    def show(self, text: str | None = None) -> None:
        self.item.setText(text or self.text)
        if not self.shown:
            for name in self.axes:
                self.plot.hideAxis(name)
            self.shown = True
        self.item.show()
        self._place()

    def hide(self) -> None:
        if self.shown:
            for name in self.axes:
                self.plot.showAxis(name)
            self.shown = False
        self.item.hide()

    def set_empty(self, empty: bool, text: str | None = None) -> None:
        if empty:
            self.show(text)
        else:
            self.hide()
