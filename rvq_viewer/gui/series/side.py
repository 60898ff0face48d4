"""The Events view's side panel: the clicked mark's codes, the selected code's history, and its
centroid's trajectory over the checkpoints."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QListWidget, QSplitter, QVBoxLayout, QWidget

from ..widgets.common import header_label
from .trajectory import TrajectoryPane


class EventSide(QSplitter):
    def __init__(self, parent=None):
        super().__init__(Qt.Orientation.Horizontal, parent)
        self.mark_label = header_label()
        self.mark_label.setObjectName("events-mark")
        self.code_list = QListWidget()
        self.code_list.setObjectName("events-codes")
        self.code_list.setMinimumHeight(50)
        self.history_label = header_label()
        self.history_label.setObjectName("events-history")
        self.trajectory = TrajectoryPane()
        marks = QWidget()
        layout = QVBoxLayout(marks)
        layout.setContentsMargins(2, 0, 2, 0)
        layout.setSpacing(2)
        layout.addWidget(self.mark_label)
        layout.addWidget(self.code_list, 1)
        layout.addWidget(self.history_label)
        self.addWidget(marks)
        self.addWidget(self.trajectory)
        self.setSizes([260, 300])
