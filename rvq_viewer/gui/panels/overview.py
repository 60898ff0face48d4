"""Overview: one row per layer with its usage, dead codes, residual and a health mark."""

from __future__ import annotations

import html
import math

from PySide6.QtCore import Qt
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem

from ...analysis.diagnosis import severity_rank
from ...app.session import Session, Snapshot, snapshot_health
from ..state import AppState
from .base import Panel
from ...app.tables import OVERVIEW_HEADER, overview_rows, write_csv
from ..widgets.common import HEALTH_BACKGROUNDS, HEALTH_COLORS, MIN_TABLE_HEIGHT, header_label
from ..theme import current, health_colors, muted

COLUMNS = ["Layer", "Used / K", "Util.", "Perplexity", "Entropy", "Dead", "EMA-dead", "Resid.", "Rel. err",
           "SNR dB", "Health"]
TOOLTIPS = [
    "RVQ stage (0 = first)",
    "codes used at least once on these features / codebook size",
    "utilization: used / K",
    "exp(entropy of code use): the number of equally used codes that would give the same entropy",
    "normalised entropy of code use: H / log K (1 = all codes used equally)",
    "dead codes: never chosen on these features",
    "codes the checkpoint's EMA statistics call dead (its own rule)",
    "mean L2 norm of the residual left after this layer",
    "||residual||² / ||input||² after this layer (cumulative)",
    "10·log10(1 / rel. error) after this layer",
    "the diagnosis' worst verdict for the layer (as `rvq-viewer audit` prints it) once the audit is "
    "complete; while it runs, the same usage rules on the frames so far (marked 'so far')",
]


class OverviewView(Panel):
    title = "Overview"

    def __init__(self, state: AppState, parent=None):
        super().__init__(state, "overview", parent)
        selection = self.selection
        self.info = header_label()
        self.info.setObjectName("overview-info")
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setObjectName("overview-table")
        self.table.setMinimumHeight(MIN_TABLE_HEIGHT)
        self.table.setHorizontalHeaderLabels(COLUMNS)
        for col, tip in enumerate(TOOLTIPS):
            self.table.horizontalHeaderItem(col).setToolTip(tip)
        self.table.verticalHeader().setVisible(False)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setAlternatingRowColors(True)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
        self.lay_out([], self.info, self.table)
        self.table.itemSelectionChanged.connect(self._row_selected)
        selection.layer_changed.connect(self._select_row)
        self._show_info()

    # --- data ---------------------------------------------------------------------------------------
    def set_session(self, session: Session | None) -> None:
        self.session = session
        self.snapshot = None
        self.table.setRowCount(0)
        self._show_info()

    def set_snapshot(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        layers = snapshot.result.layers
        self.table.blockSignals(True)
        if self.table.rowCount() != len(layers):
            self.table.setRowCount(len(layers))
        for row, rep in enumerate(layers):
            health = snapshot_health(snapshot, row)
            ema = "–" if rep.ema_dead_codes is None else f"{len(rep.ema_dead_codes):,}"
            snr = "∞" if rep.snr_db is None else _num(rep.snr_db, ".2f")
            values = [str(rep.layer), f"{rep.used:,} / {rep.codebook_size:,}", f"{rep.utilization:.1%}",
                      _num(rep.perplexity, ".1f"), _num(rep.entropy, ".3f"), f"{len(rep.dead_codes):,}", ema,
                      _num(rep.residual_norm.get("mean"), ".4g"), _num(rep.rel_error, ".4f"), snr, health.label]
            for col, text in enumerate(values):
                item = self.table.item(row, col)
                if item is None:
                    item = QTableWidgetItem()
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
                                          if 0 < col < len(values) - 1 else
                                          Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
                    self.table.setItem(row, col, item)
                if item.text() != text:
                    item.setText(text)
            mark = self.table.item(row, len(values) - 1)
            fg, bg = health_colors(health.level, (HEALTH_COLORS[health.level], HEALTH_BACKGROUNDS[health.level]))
            mark.setForeground(QBrush(QColor(fg)))
            mark.setBackground(QBrush(QColor(bg)))
            mark.setToolTip(health.reason)
        self.table.blockSignals(False)
        self._select_row(self.selection.layer)
        self._show_info()

    @property
    def ready(self) -> bool:
        return self.snapshot is not None and self.table.rowCount() > 0

    def _show_info(self) -> None:
        if self.session is None:
            self.info.setText("<i>No checkpoint open. File ▸ Open checkpoint (Ctrl+O), or drop files here.</i>")
            return
        s, snap = self.session, self.snapshot
        parts = [f"<b>{html.escape(s.name)}</b> — {html.escape(s.describe())}"]
        if snap is not None:
            state = ("complete" if snap.complete else
                     "cancelled: partial" if snap.cancelled else f"running {snap.fraction:.0%}")
            parts.append(f"audit on {html.escape(snap.device)}: {state}, {snap.frames_done:,} frames"
                         f" ({snap.frames_per_second:,.0f} frames/s)")
        lines = [" · ".join(parts)]
        # What the columns mean goes to the tooltip: the table keeps the height on a small screen.
        rule = s.quantizer.dead_code_rule.describe() if s.quantizer.has_ema else None
        self.info.setToolTip("Dead: never used on these features. EMA-dead: " + (
            f"{rule} in the checkpoint." if rule else "– (the checkpoint has no EMA statistics).")
            + "\nPer-layer verdicts: hover the Health column.")
        notes = [f"<span style='color:{current().note}'>note: {html.escape(note)}</span>" for note in s.quantizer.notes]
        if snap is not None and snap.final and snap.verdicts:
            whole = [v for v in snap.verdicts if v.layer is None and severity_rank(v.severity) >= 1]
            for v in whole[:2]:
                color = HEALTH_COLORS.get({"collapse": "bad", "warning": "warn"}.get(v.severity, "ok"))
                notes.append(f"<span style='color:{color}'>[{v.severity}] {html.escape(v.title)}</span>")
        elif snap is not None and snap.diagnosis_error:
            notes.append(f"<span style='color:{muted()}'>{html.escape(snap.diagnosis_error)}</span>")
        if notes:
            lines.append(" · ".join(notes))
        self.info.setText("<br>".join(lines))

    # --- selection ------------------------------------------------------------------------------------
    def _row_selected(self) -> None:
        rows = self.table.selectionModel().selectedRows()
        if rows:
            self.selection.set_layer(rows[0].row())

    def _select_row(self, layer: int) -> None:
        if 0 <= layer < self.table.rowCount() and self.table.currentRow() != layer:
            self.table.blockSignals(True)
            self.table.selectRow(layer)
            self.table.blockSignals(False)

    # --- export ---------------------------------------------------------------------------------------
    def export_csv(self, path) -> None:
        """What the table shows, in typed columns (app/tables.py)."""
        if self.snapshot is None:
            raise ValueError("no audit to export yet")
        write_csv(path, OVERVIEW_HEADER, overview_rows(self.snapshot))

def _num(value, fmt: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return format(value, fmt)
