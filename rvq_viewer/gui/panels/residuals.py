"""Residual norms after each stage (the input as stage 0) and the SNR per number of stages used.

Two stacked plots: mean ||residual|| with its p5-p95 band and median, then SNR in dB (bars) with the
gain each added stage brings: where the bars stop growing, more stages stop helping. A pinned
reference audit (another checkpoint on the same features) is drawn dashed for comparison.
"""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QHBoxLayout, QWidget

from ...app.session import Session, Snapshot
from ..state import AppState
from .base import Panel
from ..widgets.empty import EmptyNote
from ..widgets.common import (MIN_PLOT_HEIGHT, MIN_PLOT_WIDTH, SELECT_COLOR, export_plot_png, header_label,
                              reset_button, steady_axis)
from ..theme import ink

LINE = "#3B75AF"
ONE_LINE_PX = 110            # width per stage below which a bar's label takes two lines
REFERENCE = "#9E9E9E"


def residual_series(snapshot: Snapshot) -> dict[str, np.ndarray]:
    """x = stages used (0 = input), mean/p5/p50/p95 of the residual norm, SNR dB and rel. error."""
    res = snapshot.result
    rows = [res.input_norm] + [layer.residual_norm for layer in res.layers]

    def col(name):
        return np.array([_f(r.get(name)) for r in rows], dtype=np.float64)

    snr = np.array([_f(layer.snr_db) if layer.snr_db is not None else math.inf for layer in res.layers])
    rel = np.array([_f(layer.rel_error) for layer in res.layers])
    return {"x": np.arange(len(rows), dtype=np.float64), "mean": col("mean"), "p5": col("p5"),
            "p50": col("p50"), "p95": col("p95"), "snr": snr, "rel": rel}


def _set_text(item: pg.TextItem, text: str) -> None:
    if item.textItem.toPlainText() != text:
        item.setText(text)


def _f(value) -> float:
    return float("nan") if value is None else float(value)


class ResidualsView(Panel):
    title = "Residual norms"

    def __init__(self, state: AppState, parent=None):
        super().__init__(state, "residuals", parent)
        selection = self.selection
        self.reference: tuple[str, Snapshot] | None = None
        self._drawn = False
        self.header = header_label(lines=3)
        self.header.setObjectName("residuals-header")
        self.header.setToolTip("SNR = 10·log10(‖x‖² / ‖r‖²) with the first k stages; err = ‖r‖² / ‖x‖² "
                               "(relative error). Where the gains shrink, more stages stop helping.")
        self.canvas = pg.GraphicsLayoutWidget()
        self.canvas.setObjectName("residuals-canvas")
        self.canvas.setMinimumSize(MIN_PLOT_WIDTH, 2 * MIN_PLOT_HEIGHT - 80)    # two plots, one x axis
        self.norm_plot = self.canvas.addPlot(row=1, col=0)
        self.snr_plot = self.canvas.addPlot(row=2, col=0)
        for plot in (self.norm_plot, self.snr_plot):
            plot.setMenuEnabled(False)
            plot.hideButtons()
            plot.showGrid(x=False, y=True, alpha=0.25)
            plot.getViewBox().setMouseEnabled(x=False, y=True)
            plot.disableAutoRange()   # ranges are set from the data below; autorange would redo it per item
        self.snr_plot.setXLink(self.norm_plot)
        self.norm_plot.setLabel("left", "‖residual‖")
        self.snr_plot.setLabel("left", "SNR", units="dB")
        self.snr_plot.setLabel("bottom", "stages used (0 = input)")
        for plot in (self.norm_plot, self.snr_plot):
            steady_axis(plot.getAxis("left"))
        # A row of its own above the plots: inside one it covers the curve.
        self.legend = pg.LegendItem(colCount=3, labelTextColor=ink(), labelTextSize="8pt", frame=False)
        self.canvas.addItem(self.legend, row=0, col=0)
        self.band_lo = pg.PlotCurveItem(pen=None)
        self.band_hi = pg.PlotCurveItem(pen=None)
        self.band = pg.FillBetweenItem(self.band_lo, self.band_hi, brush=pg.mkBrush(LINE + "33"))
        self.norm_plot.addItem(self.band_lo)
        self.norm_plot.addItem(self.band_hi)
        self.norm_plot.addItem(self.band)
        self.mean_curve = self.norm_plot.plot(pen=pg.mkPen(LINE, width=2), symbol="o", symbolSize=7,
                                              symbolBrush=LINE, symbolPen=None)
        self.median_curve = self.norm_plot.plot(pen=pg.mkPen(LINE, width=1, style=Qt.PenStyle.DashLine))
        self.legend.addItem(self.mean_curve, "mean")
        self.legend.addItem(self.median_curve, "median (band: p5–p95)")
        self.ref_curve = self.norm_plot.plot(pen=pg.mkPen(REFERENCE, width=2, style=Qt.PenStyle.DotLine),
                                             symbol="t", symbolSize=6, symbolBrush=REFERENCE, symbolPen=None)
        self.bars = pg.BarGraphItem(x=[], height=[], width=0.6, brush=pg.mkBrush(LINE + "BB"), pen=None)
        self.snr_plot.addItem(self.bars)
        self.ref_snr = self.snr_plot.plot(pen=pg.mkPen(REFERENCE, width=2, style=Qt.PenStyle.DotLine),
                                          symbol="t", symbolSize=7, symbolBrush=REFERENCE, symbolPen=None)
        self._labels: list[pg.TextItem] = []
        # The selected layer: a line in the norm plot, its bar outlined in the SNR plot (a line there would
        # cross the bar's labels).
        self.select_line = pg.InfiniteLine(angle=90, movable=False, pen=pg.mkPen(SELECT_COLOR, width=1.5,
                                                                                 style=Qt.PenStyle.DashLine))
        self.norm_plot.addItem(self.select_line, ignoreBounds=True)
        self.selected_bar = pg.BarGraphItem(x=[], height=[], width=0.6, brush=None, pen=pg.mkPen(SELECT_COLOR, width=3))
        self.selected_bar.setZValue(5)
        self.snr_plot.addItem(self.selected_bar)
        self.empty = [EmptyNote(self.norm_plot, "no checkpoint open"), EmptyNote(self.snr_plot, "")]
        self.legend.setVisible(False)                # shown with the first curves
        self.select_line.setVisible(False)
        self.reset_button = reset_button(self.reset_view, "residuals")
        # The button beside the header, not in a row of its own: this dock is short on a small screen.
        top = QWidget()
        row = QHBoxLayout(top)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.header, 1)
        row.addWidget(self.reset_button, 0, Qt.AlignmentFlag.AlignTop)
        self.lay_out([], top, self.canvas)
        selection.layer_changed.connect(lambda _: self._show_selected())
        self.canvas.scene().sigMouseClicked.connect(self._clicked)
        self._snr_top = 1.0
        self._applied: dict = {}
        self._two_lines = False
        self.snr_plot.getViewBox().sigResized.connect(lambda *_: self._resized())
        self._show_header()

    def set_session(self, session: Session | None) -> None:
        self.session = session
        self.snapshot = None
        self._drawn = False
        self._redraw()

    def set_snapshot(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self._redraw()

    def set_reference(self, name: str | None, snapshot: Snapshot | None) -> None:
        """Draw another audit's curves dashed (None removes them)."""
        self.reference = (name, snapshot) if snapshot is not None else None
        self._redraw()

    @property
    def ready(self) -> bool:
        return self._drawn

    def _label(self, index: int, color: str, anchor: tuple) -> pg.TextItem:
        # Text items are reused between redraws: creating them is the slow part of this view.
        while len(self._labels) <= index:
            item = pg.TextItem("", color=color, anchor=anchor)
            item.setColor(color)
            self.snr_plot.addItem(item, ignoreBounds=True)
            self._labels.append(item)
        self._labels[index].show()
        return self._labels[index]

    def _set_if_changed(self, key: str, value, apply) -> None:
        if self._applied.get(key) != value:
            apply()
            self._applied[key] = value

    def _redraw(self) -> None:
        for label in self._labels:
            label.hide()
        s = residual_series(self.snapshot) if self.snapshot is not None and self.snapshot.result.layers else None
        if s is None or not np.isfinite(s["mean"][1:]).any():  # [0]: the input, counted not measured in a run
            for curve in (self.mean_curve, self.median_curve, self.band_lo, self.band_hi, self.ref_curve,
                          self.ref_snr):
                curve.setData([], [])
            self.bars.setOpts(x=[], height=[])
            self._drawn = False
            self.select_line.setVisible(False)     # nothing to mark, no curves to name
            self.legend.setVisible(False)
            if s is not None:               # counts without residuals: a window of a monitored run
                self.empty[0].show("no residual norms: a training run records code counts only")
            else:
                self.empty[0].show("no audit yet" if self.session is not None else "no checkpoint open")
            self.empty[1].show("")
            self._show_header()
            return
        for note in self.empty:
            note.hide()
        self.legend.setVisible(True)
        x = s["x"]
        self.band_lo.setData(x, s["p5"])
        self.band_hi.setData(x, s["p95"])
        self.mean_curve.setData(x, s["mean"])
        self.median_curve.setData(x, s["p50"])
        snr = np.where(np.isfinite(s["snr"]), s["snr"], np.nan)
        stages = x[1:]
        self.bars.setOpts(x=stages, height=np.nan_to_num(snr, nan=0.0), width=0.6)
        top = float(np.nanmax(snr)) if np.isfinite(snr).any() else 1.0
        two_lines = self._narrow()
        if two_lines != self._two_lines:
            self._two_lines = two_lines
            self._applied.pop("snr", None)
        previous = 0.0
        used = 0
        for stage, value, rel in zip(stages, snr, s["rel"]):
            if not math.isfinite(value):
                continue
            gain = value - previous
            above = self._label(used, ink(), (0.5, 1.0))
            inside = self._label(used + 1, "#FFFFFF", (0.5, 0.0))
            used += 2
            _set_text(above, f"{value:.1f} dB\n({gain:+.1f})" if self._two_lines else f"{value:.1f} dB ({gain:+.1f})")
            _set_text(inside, f"{rel:.3f}" if self._two_lines else f"err {rel:.3f}")
            above.setPos(float(stage), float(value))
            inside.setPos(float(stage), float(value))
            previous = value
        ref_top = 0.0
        if self.reference is not None:
            rs = residual_series(self.reference[1])
            n = min(len(rs["x"]), len(x))
            self.ref_curve.setData(rs["x"][:n], rs["mean"][:n])
            ref_snr = np.where(np.isfinite(rs["snr"]), rs["snr"], np.nan)[: max(0, n - 1)]
            self.ref_snr.setData(rs["x"][1:n], ref_snr)
            ref_top = float(np.nanmax(ref_snr)) if np.isfinite(ref_snr).any() else 0.0
        else:
            self.ref_curve.setData([], [])
            self.ref_snr.setData([], [])
        n = float(x[-1])
        self._set_if_changed("x", n, lambda: self.norm_plot.setXRange(-0.5, n + 0.5, padding=0))
        hi = float(np.nanmax(np.concatenate([s["p95"], s["mean"]])))
        y_top = round(hi * 1.08, 3) if math.isfinite(hi) and hi > 0 else 1.0
        self._set_if_changed("y", y_top, lambda: self.norm_plot.setYRange(0, y_top, padding=0))
        self._snr_top = round(max(top, ref_top, 1.0), 2)
        self._set_if_changed("snr", self._snr_top, self._fit_snr_range)
        ticks = [[(float(v), str(int(v))) for v in x]]
        self._set_if_changed("ticks", len(x), lambda: (self.norm_plot.getAxis("bottom").setTicks(ticks),
                                                       self.snr_plot.getAxis("bottom").setTicks(ticks)))
        self._drawn = True
        self._show_selected()
        self._show_header()

    def reset_view(self) -> None:
        self._applied.clear()
        if self._drawn:
            self._redraw()

    def _narrow(self) -> bool:
        """Too little width per stage for a one-line label ("12.0 dB (+1.5)") beside its neighbours'."""
        stages = max(1, len(self.snapshot.result.layers)) if self.snapshot is not None else 1
        return self.snr_plot.getViewBox().width() / (stages + 1) < ONE_LINE_PX

    def _resized(self) -> None:
        if self._drawn and self._narrow() != self._two_lines:
            self._redraw()
        else:
            self._fit_snr_range()

    def _fit_snr_range(self) -> None:
        # Room above the tallest bar for its label (~20 px a line), whatever the plot's height.
        height = self.snr_plot.getViewBox().height()
        room = 40.0 if self._two_lines else 22.0
        frac = min(0.5, room / height) if height > 40 else 0.3
        self.snr_plot.setYRange(0, self._snr_top / (1.0 - frac), padding=0)

    def _show_header(self) -> None:
        if self.snapshot is None:
            self.header.setText("<i>no audit yet</i>" if self.session else "<i>no checkpoint open</i>")
            return
        layers = self.snapshot.result.layers
        snr = [layer.snr_db for layer in layers]
        text = "‖residual‖ after k stages (band p5–p95) · SNR with the first k stages (gain of stage k)" + \
            (", relative error in the bar" if self._two_lines else "")
        if len(snr) >= 2 and all(v is not None and math.isfinite(v) for v in snr):
            gains = np.diff([0.0] + snr)
            last = float(gains[-1])
            text += f"<br>Last stage adds <b>{last:+.2f} dB</b> (first: {gains[0]:+.2f} dB)."
        if self.reference is not None:
            text += (f"<br><span style='color:{REFERENCE}'>▲ dotted: {self.reference[0]}</span>")
        if not self.snapshot.complete:
            text += " <i>(partial)</i>"
        self.header.setText(text)

    def _show_selected(self) -> None:
        layer = self.selection.layer
        self.select_line.setPos(layer + 1)
        self.select_line.setVisible(self._drawn)
        x, height = self.bars.opts.get("x"), self.bars.opts.get("height")
        if self._drawn and x is not None and layer < len(x):
            self.selected_bar.setOpts(x=[x[layer]], height=[height[layer]], width=0.6)
        else:
            self.selected_bar.setOpts(x=[], height=[])

    def _clicked(self, event) -> None:
        if event.button() != Qt.MouseButton.LeftButton or self.snapshot is None:
            return
        for plot in (self.norm_plot, self.snr_plot):
            vb = plot.getViewBox()
            if vb.sceneBoundingRect().contains(event.scenePos()):
                stage = int(round(vb.mapSceneToView(event.scenePos()).x()))
                if 1 <= stage <= len(self.snapshot.result.layers):
                    self.selection.set_layer(stage - 1)
                return

    def export_png(self, path) -> None:
        export_plot_png(self.canvas, path, self.export_title("Residual norms and SNR per stage"))

    def cleanup(self) -> None:
        pass
