"""The per-layer metrics of A and B and their difference: three rows per layer, Δ = B − A coloured green
where B is better."""

from __future__ import annotations

import math

from PySide6.QtCore import QItemSelection, QItemSelectionModel, Qt, Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem

from ...analysis.compare import HIGHER_IS_BETTER, Comparison
from ..widgets.common import HEALTH_COLORS
from .match_model import fmt
from .palette import A_COLOR, B_COLOR
from ..theme import current, ink, muted

METRIC_ROWS = [  # key, header, value format, delta format, tooltip
    ("used", "Used / K", None, "+,d", "codes used at least once / codebook size"),
    ("utilization", "Util.", ".1%", None, "used / K (Δ in percentage points)"),
    ("perplexity", "Perpl.", ",.1f", "+,.1f", "exp(entropy of code use)"),
    ("entropy", "Entropy", ".3f", "+.3f", "normalised entropy H / log K"),
    ("dead", "Dead", ",d", "+,d", "codes never used on the features"),
    ("ema_dead", "EMA-dead", ",d", "+,d", "codes the checkpoint's EMA statistics call dead"),
    ("rel_error", "Rel. err", ".4f", "+.4f", "||residual||² / ||input||² after this layer"),
    ("snr_db", "SNR dB", ".2f", "+.2f", "10·log10(1 / rel. error) after this layer"),
]
MATCHED = "Codes matched"
MATCHED_TIP = ("share of A's codes that B has a code for: a code of B nearer than half of A's own code "
               "spacing stands for the same region")


def delta_color(key: str, delta) -> str:
    if delta is None or (isinstance(delta, float) and not math.isfinite(delta)) or abs(delta) < 1e-12:
        return muted()
    better = (delta > 0) == HIGHER_IS_BETTER.get(key, True)
    return HEALTH_COLORS["ok"] if better else HEALTH_COLORS["bad"]


class DeltasTable(QTableWidget):
    """`fill(comparison)`; clicking a layer's rows emits `layer_clicked`; `select_layer` shows one."""

    layer_clicked = Signal(int)

    def __init__(self, parent=None):
        headers = ["Layer", ""] + [m[1] for m in METRIC_ROWS] + [MATCHED]
        super().__init__(0, len(headers), parent)
        self.setObjectName("compare-deltas")
        self.setHorizontalHeaderLabels(headers)
        for col, metric in enumerate(METRIC_ROWS, start=2):
            self.horizontalHeaderItem(col).setToolTip(metric[4])
        self.horizontalHeaderItem(len(headers) - 1).setToolTip(MATCHED_TIP)
        self.verticalHeader().setVisible(False)
        self.verticalHeader().setDefaultSectionSize(20)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        header = self.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
        self.itemSelectionChanged.connect(self._selected)

    def fill(self, c: Comparison) -> None:
        self.blockSignals(True)
        self.clearSpans()
        self.setRowCount(3 * len(c.layers))
        last = self.columnCount() - 1
        for d, match in zip(c.layers, c.matches):
            r = 3 * d.layer
            k_a, k_b = c.usage_a[d.layer].size, c.usage_b[d.layer].size
            self.setSpan(r, 0, 3, 1)
            self.setSpan(r, last, 3, 1)
            self._cell(r, 0, str(d.layer), align=Qt.AlignmentFlag.AlignCenter)
            close = "–" if match is None else f"{match.summary()['close_fraction']:.0%}"
            self._cell(r, last, close, align=Qt.AlignmentFlag.AlignCenter)
            for offset, (side, color) in enumerate((("A", A_COLOR), ("B", B_COLOR), ("Δ", ink()))):
                self._cell(r + offset, 1, side, color=color, bold=True, align=Qt.AlignmentFlag.AlignCenter)
            for col, (key, _, spec, dspec, _) in enumerate(METRIC_ROWS, start=2):
                a, b, delta = d.a.get(key), d.b.get(key), d.delta.get(key)
                if key == "used":
                    texts = (f"{a:,} / {k_a:,}", f"{b:,} / {k_b:,}", fmt(delta, dspec))
                elif key == "utilization":
                    texts = (fmt(a, spec), fmt(b, spec), "–" if delta is None else f"{100 * delta:+.1f} pp")
                elif key == "snr_db":
                    texts = ("∞" if a is None else fmt(a, spec), "∞" if b is None else fmt(b, spec),
                             fmt(delta, dspec))
                else:
                    texts = (fmt(a, spec), fmt(b, spec), fmt(delta, dspec))
                self._cell(r, col, texts[0])
                self._cell(r + 1, col, texts[1])
                self._cell(r + 2, col, texts[2], color=delta_color(key, delta), bold=True)
        self.blockSignals(False)

    def _cell(self, row: int, col: int, text: str, color: str | None = None, bold: bool = False,
              align=Qt.AlignmentFlag.AlignRight) -> None:
        item = QTableWidgetItem(text)
        item.setTextAlignment(align | Qt.AlignmentFlag.AlignVCenter)
        if color:
            item.setForeground(QBrush(QColor(color)))
        if bold:
            font = item.font()
            font.setBold(True)
            item.setFont(font)
        if row % 3 == 2 and col > 0:
            item.setBackground(QBrush(QColor(current().faint)))
        self.setItem(row, col, item)

    def _selected(self) -> None:
        rows = self.selectionModel().selectedRows()
        if rows:
            self.layer_clicked.emit(rows[0].row() // 3)

    def select_layer(self, layer: int) -> None:
        if 3 * layer + 2 >= self.rowCount():
            return
        self.blockSignals(True)
        model = self.selectionModel()
        model.clearSelection()
        first, last = self.model().index(3 * layer, 0), self.model().index(3 * layer + 2, self.columnCount() - 1)
        model.select(QItemSelection(first, last), QItemSelectionModel.SelectionFlag.Select)
        self.blockSignals(False)
        self.viewport().update()
