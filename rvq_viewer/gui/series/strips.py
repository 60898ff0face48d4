"""The heat strips under the event timeline: per layer over the checkpoints, the EMA-dead count and the
perplexity on the open features, with the cell under the pointer described."""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF

from ..widgets.empty import EmptyNote
from .marks import uniform_columns
from ..theme import muted

STRIPS = (("dead", "EMA-dead", "inferno", "EMA-dead codes"), ("perp", "perplexity", "viridis",
                                                               "perplexity on the features"))


class HeatStrips:
    """Two strips (rows 1 and 2 of `canvas`), x-linked to the timeline plot `above`."""

    def __init__(self, canvas: pg.GraphicsLayoutWidget, above: pg.PlotItem):
        self.plots, self.images, self.bars = [], [], []
        for row, (_, label, cmap, _) in enumerate(STRIPS, start=1):
            plot = canvas.addPlot(row=row, col=0)
            plot.setMenuEnabled(False)
            plot.hideButtons()
            plot.getViewBox().invertY(True)
            plot.getViewBox().setMouseEnabled(x=True, y=False)
            plot.getAxis("left").setWidth(74)
            plot.setXLink(above)
            plot.getAxis("bottom").setStyle(showValues=False)
            plot.setMaximumHeight(90)
            plot.setMinimumHeight(50)
            image = pg.ImageItem(axisOrder="row-major")
            plot.addItem(image)
            bar = pg.ColorBarItem(values=(0, 1), colorMap=pg.colormap.get(cmap), interactive=False, width=10,
                                  colorMapMenu=False, pen="#888888", label=label)
            bar.setImageItem(image)
            canvas.addItem(bar, row=row, col=1)
            self.plots.append(plot)
            self.images.append(image)
            self.bars.append(bar)
        self.dead_plot, self.perp_plot = self.plots
        self.dead_image, self.perp_image = self.images
        self.perp_plot.getAxis("bottom").setStyle(showValues=True)
        self.perp_plot.setLabel("bottom", "training step")
        self.perp_note = pg.TextItem("", color=muted(), anchor=(0.5, 0.5))
        self.perp_plot.addItem(self.perp_note, ignoreBounds=True)
        self.empty = [EmptyNote(plot, "") for plot in self.plots]     # axes only once there is a series
        for bar in self.bars:
            bar.hide()
        self.result = None
        self._cols = None

    def draw(self, r) -> None:
        self.result = r
        for note, bar in zip(self.empty, self.bars):
            note.hide()
            bar.show()
        index, x0, width = uniform_columns(r.steps)
        self._cols = (index, x0, width)
        rect = QRectF(x0, -0.5, width, r.n_q)
        for image, bar, data, lo_default in ((self.dead_image, self.bars[0], r.ema_dead, 0.0),
                                             (self.perp_image, self.bars[1], r.perplexity, None)):
            values = data[index].T          # [L, cols]
            if not np.isfinite(values).any():
                image.hide()
                continue
            lo = lo_default if lo_default is not None else float(np.nanmin(values))
            hi = float(np.nanmax(values))
            hi = hi if hi > lo else lo + 1
            image.setImage(np.nan_to_num(values, nan=lo), levels=(lo, hi), autoLevels=False)
            image.setRect(rect)
            bar.setLevels(values=(lo, hi))
            image.show()
        if self.perp_image.isVisible():
            self.perp_note.setText("")
        else:
            self.perp_note.setText("no features open: perplexity per step needs features")
            self.perp_note.setPos((r.steps[0] + r.steps[-1]) / 2, (r.n_q - 1) / 2)

    def cell_at(self, scene_pos) -> tuple[int, int, int] | None:
        """(strip, checkpoint index, layer) under a scene position, or None."""
        r = self.result
        if r is None or self._cols is None:
            return None
        for strip, plot in enumerate(self.plots):
            if not plot.getViewBox().sceneBoundingRect().contains(scene_pos):
                continue
            p = plot.getViewBox().mapSceneToView(scene_pos)
            index, x0, width = self._cols
            col = int(math.floor((p.x() - x0) / width * len(index)))
            layer = int(round(p.y()))
            if 0 <= col < len(index) and 0 <= layer < r.n_q:
                return strip, int(index[col]), layer
            return None
        return None

    def describe(self, cell: tuple[int, int, int]) -> str:
        r = self.result
        strip, i, layer = cell
        data = r.ema_dead if strip == 0 else r.perplexity
        v = data[i, layer]
        value = "–" if not np.isfinite(v) else f"{v:,.0f}" if strip == 0 else f"{v:,.1f}"
        text = f"step {r.steps[i]:,} · layer {layer} · {STRIPS[strip][3]}: {value}"
        if np.isfinite(r.used[i, layer]):
            text += f" · used {int(r.used[i, layer]):,} / {r.codebook_sizes[layer]:,}"
        return text
