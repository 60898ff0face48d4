"""A task's progress in the status bar: what it does, how far it is, and a Cancel button."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QWidget

from .progress import ProgressStrip


class TaskStrip(QWidget):
    """Hidden until `begin`; `step` moves it on; `end` hides it. Cancel emits `cancel_requested`."""

    cancel_requested = Signal()

    def __init__(self, name: str, parent=None):
        super().__init__(parent)
        self.setObjectName(f"{name}-task")
        self.label = QLabel("")
        self.label.setObjectName(f"{name}-task-label")
        self.bar = ProgressStrip()
        self.bar.setFixedWidth(140)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setObjectName(f"{name}-task-cancel")
        self.cancel_button.clicked.connect(self.cancel_requested)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.label)
        layout.addWidget(self.bar)
        layout.addWidget(self.cancel_button)
        self.hide()

    def begin(self, text: str) -> None:
        self.label.setText(text)
        self.bar.setRange(0, 1000)
        self.bar.setValue(0)
        self.show()

    def step(self, done: int, total: int, text: str) -> None:
        self.label.setText(text)
        self.bar.setValue(int(1000 * done / max(1, total)))

    def end(self) -> None:
        self.hide()
