"""A progress bar for the status bar that never repaints synchronously.

`QProgressBar.setValue` calls `repaint()`, and a synchronous repaint flushes every pending update of
the window at once (all five plots), turning the audit's small 10 Hz redraws into one long stall.
This one only schedules an `update()`.
"""

from __future__ import annotations

from PySide6.QtCore import QRectF, QSize, Qt
from PySide6.QtGui import QColor, QPainter, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget


class ProgressStrip(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self._value = 0
        self._maximum = 1000
        self.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)

    def sizeHint(self) -> QSize:  # noqa: N802
        return QSize(220, self.fontMetrics().height() + 6)

    def setRange(self, minimum: int, maximum: int) -> None:  # noqa: N802
        self._maximum = max(1, maximum - minimum)

    def setValue(self, value: int) -> None:  # noqa: N802
        value = max(0, min(int(value), self._maximum))
        if value != self._value:
            self._value = value
            self.update()

    def value(self) -> int:
        return self._value

    def text(self) -> str:
        return f"{round(100 * self._value / self._maximum)}%"

    def paintEvent(self, event):  # noqa: N802
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        r = QRectF(self.rect()).adjusted(1, 2, -1, -2)
        p.setPen(QPen(QColor("#9AA5B1"), 1))
        p.setBrush(QColor("#F4F6F8"))
        p.drawRoundedRect(r, 3, 3)
        done = QRectF(r.x(), r.y(), r.width() * self._value / self._maximum, r.height())
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(QColor("#3B75AF"))
        p.drawRoundedRect(done, 3, 3)
        p.setPen(self.palette().color(self.foregroundRole()))
        p.drawText(r, Qt.AlignmentFlag.AlignCenter, self.text())
        p.end()
