"""The two sides' colours (Okabe-Ito, colour-blind safe) wherever A and B are drawn or named."""

from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtGui import QColor

A_COLOR = "#0072B2"      # blue
B_COLOR = "#D55E00"      # vermillion


def brush(color: str, alpha: int):
    c = QColor(color)
    return pg.mkBrush(c.red(), c.green(), c.blue(), alpha)


def tag(side: str, text: str = "") -> str:
    """'A'/'B' in bold in its colour, then `text` (rich text)."""
    color = A_COLOR if side == "A" else B_COLOR
    return f"<b style='color:{color}'>{side}</b>" + (f" {text}" if text else "")
