"""The trainer's runs: a table of every run and what it reached, and the words comparing run A with B."""

from __future__ import annotations

import html

from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem

from ...training import RunHistory, describe_settings, settings_diff
from ..widgets.common import LAYER_COLORS

RUN_COLUMNS = ["Run", "Settings", "Start", "Steps", "State", "Util. (train frames)", "Perplexity", "EMA-dead",
               "Replacements", "Codes replaced", "Saved"]


class RunsTable(QTableWidget):
    def __init__(self, parent=None):
        super().__init__(0, len(RUN_COLUMNS), parent)
        self.setObjectName("trainer-runs")
        self.setHorizontalHeaderLabels(RUN_COLUMNS)
        self.verticalHeader().setVisible(False)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.horizontalHeader().setStretchLastSection(True)
        self.setToolTip("double-click a run to put its settings back in the form")

    def fill(self, runs: list[RunHistory]) -> None:
        self.setRowCount(len(runs))
        for row, run in enumerate(runs):
            f = run.final()
            util = f"{f['utilization']:.1%}" if "utilization" in f else "–"
            perp = f"{f['perplexity']:,.0f}" if "perplexity" in f else "–"
            values = [run.name, describe_settings(run.settings), run.start, f"{f['steps']:,}", run.state, util, perp,
                      f"{f.get('dead', 0):,}", f"{f['events']:,}", f"{f['distinct_replaced']:,}",
                      str(run.saved_path.name) if run.saved_path else ""]
            for col, value in enumerate(values):
                item = self.item(row, col)
                if item is None:
                    item = QTableWidgetItem()
                    self.setItem(row, col, item)
                item.setText(value)
                if col == 1:
                    item.setToolTip(run.describe())


def legend_text(a: RunHistory, b: RunHistory | None) -> str:
    colors = " ".join(f"<span style='color:{LAYER_COLORS[i % len(LAYER_COLORS)]}'>■ L{i}</span>"
                      for i in range(max(a.settings.n_q, b.settings.n_q if b else 0)))
    text = f"{colors} &nbsp; solid: <b>{html.escape(a.name)}</b> ({html.escape(describe_settings(a.settings))})"
    if b is not None and b is not a:
        text += f" &nbsp; dashed: <b>{html.escape(b.name)}</b>"
    return text


def compare_text(a: RunHistory, b: RunHistory | None) -> str:
    """What changed from B to A, and what each reached."""
    if b is None or b is a:
        return ""
    text = f"B → A: {html.escape('; '.join(settings_diff(b.settings, a.settings)) or 'same settings')}"
    if a.start != b.start:
        text += f"; {html.escape(b.start)} → {html.escape(a.start)}"
    fa, fb = a.final(), b.final()
    if "utilization" in fa and "utilization" in fb:
        text += (f" · codes used: A {fa['utilization']:.0%} vs B {fb['utilization']:.0%}, "
                 f"perplexity A {fa['perplexity']:,.0f} vs B {fb['perplexity']:,.0f}")
    return text
