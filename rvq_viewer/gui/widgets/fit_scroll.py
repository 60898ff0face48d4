"""A dock's content: the panel at the dock's size, scrolled only where the dock is below its minimum."""

from __future__ import annotations

from PySide6.QtCore import QEvent, QSize
from PySide6.QtWidgets import QScrollArea, QWidget


class FitScroll(QScrollArea):
    """Unlike QScrollArea's `widgetResizable`, which sizes a panel holding word-wrapped labels to its
    preferred height (and so scrolls a plot that would fit), the panel gets exactly the viewport, and more
    only up to its minimum size."""

    def __init__(self, panel: QWidget, parent=None):
        super().__init__(parent)
        self.setWidgetResizable(False)
        self.setFrameShape(QScrollArea.Shape.NoFrame)
        self.setWidget(panel)
        panel.installEventFilter(self)

    def _fit(self) -> None:
        panel = self.widget()
        view = self.viewport().size()
        least = panel.minimumSizeHint().expandedTo(panel.minimumSize())
        panel.resize(max(view.width(), least.width()), max(view.height(), least.height()))

    def resizeEvent(self, event) -> None:  # noqa: N802
        super().resizeEvent(event)
        self._fit()

    def eventFilter(self, watched, event) -> bool:  # noqa: N802
        if watched is self.widget() and event.type() == QEvent.Type.LayoutRequest:
            self._fit()
        return False

    def sizeHint(self) -> QSize:  # noqa: N802
        return self.widget().sizeHint()
