"""The trainer's curves (per layer, run A solid and run B dashed) and run A's replacement raster."""

from __future__ import annotations

import html

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, Qt
from PySide6.QtWidgets import QLabel

from ...training import RunHistory
from ..widgets.common import export_plot_png, layer_color, mark_muted
from ..widgets.empty import EmptyNote
from ..widgets.picking import view_point

PLOTS = [("perplexity", "batch perplexity"), ("used", "codes used in the batch"),
         ("dead", "EMA-dead codes"), ("events", "replacements per step")]


class TrainerPlots:
    """`redraw(a, b)` draws the runs that changed since the last call (or all, `force`)."""

    def __init__(self):
        self.canvas = pg.GraphicsLayoutWidget()
        self.canvas.setObjectName("trainer-canvas")
        self.canvas.ci.layout.setSpacing(4)
        self.plots: dict[str, pg.PlotItem] = {}
        for i, (name, label) in enumerate(PLOTS):
            p = self.canvas.addPlot(row=i // 2, col=i % 2)
            p.setMenuEnabled(False)
            p.hideButtons()
            p.showGrid(x=True, y=True, alpha=0.2)
            p.setTitle(label, size="9pt")
            p.getAxis("left").setWidth(46)
            if i >= 2:
                p.setLabel("bottom", "step")
            if i > 0:
                p.setXLink(self.plots["perplexity"])
            self.plots[name] = p
        self.raster_plot = self.canvas.addPlot(row=0, col=2, rowspan=2)
        self.raster_plot.setMenuEnabled(False)
        self.raster_plot.hideButtons()
        self.raster_plot.setLabel("bottom", "step")
        self.raster_plot.setLabel("left", "code")
        self.raster_plot.setTitle("dead-code replacements (run A)", size="9pt")
        self.raster_image = pg.ImageItem(axisOrder="row-major")
        self.raster_plot.addItem(self.raster_image)
        self.raster_bar = pg.ColorBarItem(values=(0, 1), colorMap=pg.colormap.get("inferno"), interactive=False,
                                          width=10, colorMapMenu=False, pen="#888888",
                                          label="log10(1 + replacements)")
        self.raster_bar.setImageItem(self.raster_image)
        self.canvas.addItem(self.raster_bar, row=0, col=3, rowspan=2)
        for col in range(3):
            self.canvas.ci.layout.setColumnStretchFactor(col, 3)
        # Until a run has steps, a sentence instead of axes over meaningless ranges.
        self.empty = [EmptyNote(p, "no run yet: press Start") for p in self.plots.values()]
        self.empty.append(EmptyNote(self.raster_plot, "no run yet"))
        self.raster_bar.hide()
        self.curves: dict[tuple[str, str, int], pg.PlotDataItem] = {}
        self.hover = QLabel(" ")
        self.hover.setObjectName("trainer-hover")
        mark_muted(self.hover)
        self._drawn: dict = {}
        self.raster_layer = 0
        self.run_a: RunHistory | None = None
        self._hover_proxy = pg.SignalProxy(self.canvas.scene().sigMouseMoved, rateLimit=30, slot=self._hovered)

    def _curve(self, slot: str, plot: str, layer: int) -> pg.PlotDataItem:
        key = (slot, plot, layer)
        item = self.curves.get(key)
        if item is None:
            color = layer_color(layer)
            if slot == "B":
                color.setAlpha(170)
                pen = pg.mkPen(color, width=1.3, style=Qt.PenStyle.DashLine)
            else:
                pen = pg.mkPen(color, width=1.6)
            item = pg.PlotDataItem(pen=pen, skipFiniteCheck=True)
            item.setDownsampling(auto=True, method="peak")
            item.setClipToView(True)
            item.setZValue(2 if slot == "A" else 1)
            self.plots[plot].addItem(item)
            self.curves[key] = item
        return item

    def forget(self) -> None:
        """Draw everything again at the next `redraw`."""
        self._drawn.clear()

    def redraw(self, a: RunHistory | None, b: RunHistory | None, force: bool = False) -> bool:
        """Draw run A and run B where they changed; True when something was drawn."""
        shown = {"A": a, "B": b if b is not a else None}
        self.run_a = a
        changed = False
        for slot, run in shown.items():
            version = (id(run), run.version if run is not None else -1)
            if not force and self._drawn.get(slot) == version:
                continue
            self._drawn[slot] = version
            changed = True
            n_q = run.settings.n_q if run is not None else 0
            for (s, plot, layer), item in self.curves.items():
                if s == slot and (run is None or layer >= n_q):
                    item.setData([], [])
            if run is None or len(run) == 0:
                continue
            x = run.steps.astype(np.float64)
            for plot, _ in PLOTS:
                values = run.curve(plot)
                for layer in range(n_q):
                    self._curve(slot, plot, layer).setData(x, values[:, layer].astype(np.float64))
            if slot == "A":
                self._draw_raster(run)
        if changed:
            runs = [r for r in shown.values() if r is not None]
            has_steps = any(len(r) for r in runs)
            for note in self.empty[:-1]:
                note.set_empty(not has_steps)
            has_raster = a is not None and len(a) > 0
            self.empty[-1].set_empty(not has_raster)
            self.raster_bar.setVisible(has_raster)
            if not has_raster:
                self.raster_image.clear()
            if runs:
                self.plots["perplexity"].setXRange(0, max(r.settings.steps for r in runs), padding=0.02)
        return changed

    def _draw_raster(self, run: RunHistory) -> None:
        layer = self.raster_layer if self.raster_layer < run.settings.n_q else 0
        raster = run.raster[layer]           # [step bins, code bins]
        image = np.log10(1.0 + raster.T.astype(np.float32))
        top = float(image.max()) or 1.0
        self.raster_image.setImage(image, levels=(0.0, top), autoLevels=False)
        self.raster_image.setRect(QRectF(0, 0, raster.shape[0] * run.step_bin, raster.shape[1] * run.code_bin))
        self.raster_bar.setLevels(values=(0.0, top))
        self.raster_plot.setTitle(f"dead-code replacements, layer {layer} ({html.escape(run.name)})", size="9pt")
        self.raster_plot.setXRange(0, run.settings.steps, padding=0.02)
        self.raster_plot.setYRange(0, run.settings.codebook_size, padding=0.02)

    def _hovered(self, args) -> None:
        a = self.run_a
        p = view_point(self.raster_plot.getViewBox(), args[0]) if a is not None else None
        if p is not None:
            layer = self.raster_layer
            col, row = int(p.x() // a.step_bin), int(p.y() // a.code_bin)
            if 0 <= col < a.raster.shape[1] and 0 <= row < a.raster.shape[2] and layer < a.raster.shape[0]:
                codes = f"code {row * a.code_bin}" if a.code_bin == 1 else \
                    f"codes {row * a.code_bin}–{(row + 1) * a.code_bin - 1}"
                steps = f"step {col * a.step_bin}" if a.step_bin == 1 else \
                    f"steps {col * a.step_bin}–{(col + 1) * a.step_bin - 1}"
                self.hover.setText(f"layer {layer}, {codes}, {steps}: {int(a.raster[layer, col, row]):,} "
                                   "replacements")
                return
        self.hover.setText(" ")

    def export_png(self, path) -> None:
        export_plot_png(self.canvas, path, "What-if trainer runs")

    def cleanup(self) -> None:
        self._hover_proxy.disconnect()
