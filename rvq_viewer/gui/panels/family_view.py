"""Levels and bits: what an implicit grid does with its dimensions, and usage table by table.

- FSQ: each dimension's level histogram side by side (dimension j's L_j bars in slot j), pinned or narrow
  dimensions coloured as their verdict;
- LFQ: the share of frames with each bit set (0.5 = balanced; dead bits red), and the bits' correlation
  matrix below;
- several tables per layer (heads, groups; any family): each table's utilization and perplexity against
  a uniform table, never one pooled count (vector-quantize-pytorch #109).
Everything comes from the layer's `family` numbers in the audit result, the ones the JSON and the report
show. A one-table learned codebook has nothing here beyond the usage histogram, and the panel says so.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QComboBox, QLabel

from ...analysis.diagnosis import thresholds
from ...app.session import Session, Snapshot
from ..state import AppState
from ..theme import muted
from ..widgets.common import (DEAD_COLOR, MIN_PLOT_HEIGHT, MIN_PLOT_WIDTH, export_plot_png, header_label,
                              reset_button, steady_axis)
from ..widgets.empty import EmptyNote
from .base import Panel

BAR = "#3B75AF"
WARN = "#B26A00"
PERPLEXITY = "#009E73"
CORRELATION = pg.ColorMap([0.0, 0.5, 1.0], [(33, 102, 172), (247, 247, 247), (178, 24, 43)])


def fsq_bars(grid: dict) -> tuple[np.ndarray, np.ndarray, float, list[str]]:
    """Bar centres, heights, width and colours of every level of every dimension of one grid."""
    xs, hs, colors = [], [], []
    width = 0.8 / max(d["levels"] for d in grid["dims"])
    for d in grid["dims"]:
        step = 0.8 / d["levels"]
        xs.extend(d["dim"] - 0.4 + step * (np.arange(d["levels"]) + 0.5))
        hs.extend(d["shares"])
        bad = d["levels_used"] <= 1
        low = d["bits"] < thresholds.FSQ_DIM_BITS_WARN * d["max_bits"]
        colors.extend([DEAD_COLOR if bad else WARN if low else BAR] * d["levels"])
    return np.asarray(xs), np.asarray(hs), width * 0.9, colors


def lfq_bars(stats: dict) -> tuple[np.ndarray, np.ndarray, list[str]]:
    colors = [DEAD_COLOR if b in stats["dead"] else WARN if h < thresholds.LFQ_BIT_ENTROPY_WARN else BAR
              for b, h in enumerate(stats["entropy"])]
    return np.arange(stats["bits"], dtype=float), np.asarray(stats["ones"]), colors


class FamilyView(Panel):
    title = "Levels and bits"

    def __init__(self, state: AppState, parent=None):
        super().__init__(state, "family", parent)
        self.header = header_label(lines=2)
        self.header.setObjectName("family-header")
        self.table_box = QComboBox()
        self.table_box.setObjectName("family-table")
        self.table_box.setToolTip("which table (head / group) of the layer to show")
        self.table_box.currentIndexChanged.connect(lambda _: self._redraw())
        self.table_label = QLabel("Table")
        self.canvas = pg.GraphicsLayoutWidget()
        self.canvas.setObjectName("family-canvas")
        self.canvas.setMinimumSize(MIN_PLOT_WIDTH, MIN_PLOT_HEIGHT)
        self.plot = self.canvas.addPlot(row=0, col=0)
        # The correlation matrix sits beside the bits (LFQ only): placed in the layout when shown, taken out
        # otherwise, so the other views get the whole width.
        self.corr_plot = pg.PlotItem()
        for plot in (self.plot, self.corr_plot):
            plot.setMenuEnabled(False)
            plot.hideButtons()
            plot.getViewBox().setMouseEnabled(x=False, y=False)
            steady_axis(plot.getAxis("left"))
        self.plot.showGrid(x=False, y=True, alpha=0.25)
        self.bars = pg.BarGraphItem(x=[], height=[], width=0.5, pen=None)
        self.second = pg.BarGraphItem(x=[], height=[], width=0.35, pen=None, brush=pg.mkBrush(PERPLEXITY))
        self.plot.addItem(self.bars)
        self.plot.addItem(self.second)
        self.guide = pg.InfiniteLine(angle=0, movable=False, pen=pg.mkPen(muted(), style=Qt.PenStyle.DashLine))
        self.plot.addItem(self.guide, ignoreBounds=True)
        self.image = pg.ImageItem()
        self.image.setLookupTable(CORRELATION.getLookupTable(nPts=256))
        self.corr_plot.addItem(self.image)
        self.corr_plot.setLabel("bottom", "bit")
        self.corr_plot.setLabel("left", "bit")
        self.corr_plot.setTitle("correlation of bits (red +1, blue -1)", size="8pt")
        self.corr_plot.getViewBox().invertY(True)
        self._corr_shown = False
        self.empty = EmptyNote(self.plot, "no checkpoint open")
        self.reset_button = reset_button(self.reset_view, "family")
        self.lay_out([self.table_label, self.table_box, self.reset_button], self.header, self.canvas)
        self.selection.layer_changed.connect(lambda _: self._redraw())
        self.drawn = ""          # what is drawn: "fsq", "lfq", "tables" or "" (for tests and exports)
        self._redraw()

    def set_session(self, session: Session | None) -> None:
        self.session = session
        self.snapshot = None
        self._redraw()

    def set_snapshot(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self._redraw()

    @property
    def ready(self) -> bool:
        return self.snapshot is None or bool(self.drawn) or not self._section()

    def _section(self) -> dict:
        if self.snapshot is None:
            return {}
        layers = self.snapshot.result.layers
        layer = self.selection.layer
        return layers[layer].family if 0 <= layer < len(layers) else {}

    def _tables(self, section: dict) -> list[str]:
        tables = section.get("tables") or []
        names = [t["name"] for t in tables]
        if [self.table_box.itemText(i) for i in range(self.table_box.count())] != names:
            self.table_box.blockSignals(True)
            self.table_box.clear()
            self.table_box.addItems(names)
            self.table_box.blockSignals(False)
        visible = len(names) > 1 and bool(section.get("grids") or section.get("bit_stats"))
        self.table_box.setVisible(visible)
        self.table_label.setVisible(visible)
        return names

    def _redraw(self) -> None:
        section = self._section()
        names = self._tables(section)
        t = max(0, self.table_box.currentIndex())
        self._show_correlation(False)
        self.second.setOpts(x=[], height=[])
        self.guide.hide()
        self.drawn = ""
        if section.get("grids"):
            self._draw_fsq(section["grids"][min(t, len(section["grids"]) - 1)], names[t] if names else "")
        elif section.get("bit_stats"):
            self._draw_lfq(section["bit_stats"][min(t, len(section["bit_stats"]) - 1)], names[t] if names else "")
        elif section.get("tables"):
            self._draw_tables(section["tables"])
        else:
            self.bars.setOpts(x=[], height=[])
            if self.snapshot is None:
                text = "no audit yet" if self.session is not None else "no checkpoint open"
            else:
                text = "a learned codebook with one table: see the usage histogram"
            self.empty.show(text)
            self.header.setText("FSQ levels per dimension, LFQ bits, and usage per head or group appear here "
                                "for the quantizers that have them.")
            return
        self.empty.hide()

    def _show_correlation(self, shown: bool) -> None:
        if shown == self._corr_shown:
            return
        if shown:
            self.canvas.addItem(self.corr_plot, row=0, col=1)
            self.canvas.ci.layout.setColumnStretchFactor(0, 3)
            self.canvas.ci.layout.setColumnStretchFactor(1, 1)
        else:
            self.canvas.removeItem(self.corr_plot)
        self._corr_shown = shown

    def _draw_fsq(self, grid: dict, name: str) -> None:
        xs, hs, width, colors = fsq_bars(grid)
        self.bars.setOpts(x=xs, height=hs, width=width, brushes=[pg.mkBrush(c) for c in colors])
        n = len(grid["dims"])
        self.plot.setXRange(-0.6, n - 0.4, padding=0)
        self.plot.setYRange(0, max(0.05, float(hs.max()) * 1.1 if hs.size else 1.0), padding=0)
        self.plot.getAxis("bottom").setTicks([[(float(j), str(j)) for j in range(n)]])
        self.plot.setLabel("bottom", "dimension (its levels left to right)")
        self.plot.setLabel("left", "share of frames")
        dims = " · ".join(f"{d['levels_used']}/{d['levels']} levels, {d['bits']:.1f}/{d['max_bits']:.1f} b"
                          for d in grid["dims"][:6])
        self.header.setText(f"<b>FSQ{' ' + name if name else ''}</b>: {grid['cells_used']:,} of {grid['cells']:,} "
                            f"grid cells used ({grid['share_used']:.1%}); the cell carries {grid['code_bits']:.1f} bits, "
                            f"its dimensions {grid['bits']:.1f} of {grid['max_bits']:.1f} summed"
                            f"<br>{dims}{' …' if len(grid['dims']) > 6 else ''}")
        self.drawn = "fsq"

    def _draw_lfq(self, stats: dict, name: str) -> None:
        xs, hs, colors = lfq_bars(stats)
        self.bars.setOpts(x=xs, height=hs, width=0.7, brushes=[pg.mkBrush(c) for c in colors])
        n = stats["bits"]
        self.plot.setXRange(-0.6, n - 0.4, padding=0)
        self.plot.setYRange(0, 1.05, padding=0)
        self.plot.getAxis("bottom").setTicks([[(float(j), str(j)) for j in range(0, n, max(1, n // 12))]])
        self.plot.setLabel("bottom", "bit (dimension)")
        self.plot.setLabel("left", "share of ones")
        self.guide.setPos(0.5)
        self.guide.show()
        corr = np.asarray(stats["correlation"], dtype=float)
        self.image.setImage(corr.T, levels=(-1.0, 1.0), autoLevels=False)
        self._show_correlation(True)
        self.corr_plot.setXRange(0, n, padding=0)
        self.corr_plot.setYRange(0, n, padding=0)
        dead = ", ".join(map(str, stats["dead"])) or "none"
        pair = stats["most_correlated"]
        corr_text = f"; max |corr| {stats['max_abs_correlation']:.2f} (bits {pair[0]}, {pair[1]})" if pair else ""
        self.header.setText(f"<b>LFQ{' ' + name if name else ''}</b>: {n} bits, dead bits: {dead}{corr_text}<br>"
                            f"code entropy {stats['code_entropy']:.1f} of {stats['bit_entropy_sum']:.1f} bits summed "
                            f"over bits (the gap is what correlated bits cost)")
        self.drawn = "lfq"

    def _draw_tables(self, tables: list[dict]) -> None:
        xs = np.arange(len(tables), dtype=float)
        util = np.array([t["utilization"] for t in tables])
        ppl = np.array([t["perplexity"] / max(1, t["codes"]) for t in tables])
        self.bars.setOpts(x=xs - 0.18, height=util, width=0.35, brushes=[pg.mkBrush(BAR)] * len(tables))
        self.second.setOpts(x=xs + 0.18, height=ppl, width=0.35)
        self.plot.setXRange(-0.6, len(tables) - 0.4, padding=0)
        self.plot.setYRange(0, 1.05, padding=0)
        self.plot.getAxis("bottom").setTicks([[(float(i), t["name"]) for i, t in enumerate(tables)]])
        self.plot.setLabel("bottom", "table")
        self.plot.setLabel("left", "utilization (blue) · perplexity / K (green)")
        worst = min(tables, key=lambda t: t["utilization"])
        self.header.setText(f"<b>{len(tables)} tables</b>, judged one by one (never pooled): lowest use "
                            f"{worst['name']} {worst['used']}/{worst['codes']} ({worst['utilization']:.1%})")
        self.drawn = "tables"

    def export_png(self, path) -> None:
        what = {"fsq": "FSQ levels per dimension", "lfq": "LFQ bit balance", "tables": "Usage per table"}
        export_plot_png(self.canvas, path, self.export_title(what.get(self.drawn, self.title), self.selection.layer))
