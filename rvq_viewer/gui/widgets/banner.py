"""A message strip at the top of the window for load and worker errors: visible, never modal."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QToolButton


class MessageBanner(QFrame):
    """Shows one message (error or info, plain text) until closed or replaced."""

    closed = Signal()

    STYLES = {
        "error": "background:#FDECEA; border:1px solid #E57373; color:#8B1A1A;",
        "info": "background:#E8F1FB; border:1px solid #90B4E0; color:#17406B;",
    }

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("message-banner")
        self.label = QLabel()
        self.label.setObjectName("message-text")
        self.label.setWordWrap(True)
        self.label.setTextFormat(Qt.TextFormat.PlainText)   # messages name files: never read them as HTML
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        close = QToolButton()
        close.setText("✕")
        close.setAutoRaise(True)
        close.setToolTip("Dismiss")
        close.clicked.connect(self.dismiss)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(8, 4, 4, 4)
        layout.addWidget(self.label, 1)
        layout.addWidget(close, 0, Qt.AlignmentFlag.AlignTop)
        self.kind = ""
        self.hide()

    def show_message(self, text: str, kind: str = "error") -> None:
        self.kind = kind
        self.setStyleSheet(f"QFrame#message-banner {{{self.STYLES[kind]}}}")
        self.label.setText(text)
        self.show()

    def text(self) -> str:
        return self.label.text() if self.isVisible() else ""

    def dismiss(self) -> None:
        self.hide()
        self.kind = ""
        self.closed.emit()
