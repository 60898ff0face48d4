"""Help > Keyboard shortcuts (F1): every action's keys, from the window's action registry, and what the
mouse does in the plots."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QHeaderView, QTableWidget, QTableWidgetItem, QVBoxLayout

# Gestures no QAction carries; the keys come from the actions themselves.
POINTER = [
    ("Click a bar, point or row", "select that code in every view"),
    ("Shift+drag on the centroid map", "box-select a set of codes (shown in the histogram and dead codes)"),
    ("Wheel / drag on a plot", "zoom / pan"),
    ("Type a number in the dead-codes table", "go to that code"),
]


def shortcut_rows(actions) -> list[tuple[str, str]]:
    """(keys, what they do) for every action with a shortcut, then the pointer gestures."""
    return [(keys, text.rstrip("…")) for _id, text, keys in actions.shortcuts()] + POINTER


class ShortcutsDialog(QDialog):
    def __init__(self, actions, parent=None):
        super().__init__(parent)
        self.setObjectName("shortcuts-dialog")
        self.setWindowTitle("Keyboard shortcuts")
        rows = shortcut_rows(actions)
        self.table = QTableWidget(len(rows), 2)
        self.table.setObjectName("shortcuts-table")
        self.table.setHorizontalHeaderLabels(["Keys", "Does"])
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        for r, (keys, text) in enumerate(rows):
            self.table.setItem(r, 0, QTableWidgetItem(keys))
            self.table.setItem(r, 1, QTableWidgetItem(text))
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.table)
        layout.addWidget(buttons)
        self.resize(560, min(640, 60 + 24 * len(rows)))
        self.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
