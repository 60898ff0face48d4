"""Colours, header labels, steady axes, CSV and PNG export shared by the panels."""

from __future__ import annotations

import math
from pathlib import Path

import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QFont, QFontMetrics, QImage, QPainter, QPixmap
from PySide6.QtWidgets import QApplication, QFrame, QLabel, QSizePolicy, QToolButton, QWidget

from ...app.tables import write_csv  # noqa: F401  (the panels' CSV exports)
from ...io import atomic_path
from .. import theme

# Layer colours (Okabe-Ito, colour-blind safe), cycled beyond eight layers.
LAYER_COLORS = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"]
DEAD_COLOR = "#E0245E"          # dead codes everywhere: not in viridis, not a layer colour
SELECT_COLOR = "#FF7F0E"
HEALTH_COLORS = {"ok": "#1B7F3B", "warn": "#B26A00", "bad": "#C62828", "unknown": "#666666"}
HEALTH_BACKGROUNDS = {"ok": "#E3F4E8", "warn": "#FFF1D6", "bad": "#FDE2E1", "unknown": "#EEEEEE"}
USAGE_COLORMAP = "viridis"


def layer_color(layer: int) -> QColor:
    return QColor(LAYER_COLORS[layer % len(LAYER_COLORS)])


def header_label(lines: int = 1) -> QLabel:
    """A rich-text header above a view, `lines` lines tall from the start.

    Reserving the lines its text takes once data arrives keeps the plot below it from shrinking then: a
    plot that changes size is repainted whole, and with every view's header growing in the same second
    the whole window was relaid out and repainted again and again while the first audit streamed in."""
    label = QLabel()
    label.setTextFormat(Qt.TextFormat.RichText)
    label.setWordWrap(True)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    label.setFrameShape(QFrame.Shape.NoFrame)
    label.setContentsMargins(4, 2, 4, 2)
    label.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
    reserve_lines(label, lines)
    return label


def reserve_lines(label: QLabel, lines: int) -> None:
    """Make `label` at least `lines` lines of its font tall (it may still grow past that)."""
    margins = label.contentsMargins()
    label.setMinimumHeight(lines * label.fontMetrics().lineSpacing() + margins.top() + margins.bottom() + 2)


def mark_muted(widget) -> None:
    """Secondary text, in the theme's muted colour (the style sheet's `*[muted="true"]` rule)."""
    widget.setProperty("muted", True)


def elastic_label(text: str = "") -> QLabel:
    """A one-line label whose text never widens its layout: long text is cut at the right edge (a label
    that asks for its text's width pushes the window's docks around each time the text changes)."""
    label = QLabel(text)
    label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
    label.setMinimumWidth(40)
    return label


# The least a plot may shrink to (px): below this its axes and labels crowd its data.
MIN_PLOT_WIDTH, MIN_PLOT_HEIGHT = 240, 170
MIN_TABLE_HEIGHT = 110

# Width of a plot's value axis (tick labels and title). Fixed: an axis sized to its labels changes width when
# the numbers do, and that relays out and repaints the whole plot again on most updates while data streams.
VALUE_AXIS_WIDTH = 56


def steady_axis(axis, width: int = VALUE_AXIS_WIDTH) -> None:
    """Fix a pyqtgraph AxisItem's width so new tick labels never resize its plot."""
    axis.setWidth(width)


RESET_VIEW_KEY = "Ctrl+0"


def reset_button(slot, name: str) -> QToolButton:
    """The button that puts a plot's view back to all its data (View > Reset plot views does every plot)."""
    button = QToolButton()
    button.setObjectName(f"{name}-reset-view")
    button.setText("⟲ Reset view")
    button.setToolTip(f"Show all the data again after zooming or panning ({RESET_VIEW_KEY}: every plot)")
    button.setAutoRaise(True)
    button.clicked.connect(lambda checked=False: slot())
    return button


def reset_plots(widget) -> None:
    """Every visible plot inside `widget` back to the bounds of its data."""
    for view in widget.findChildren(pg.GraphicsView):
        for item in view.scene().items():
            if isinstance(item, pg.PlotItem) and item.isVisible():
                item.getViewBox().autoRange()


def export_plot_png(view, path: str | Path, title: str = "", min_width: int = 1200) -> None:
    """A plot widget to PNG as it is drawn on screen, at 2x (or more, to be at least `min_width` pixels
    wide) so that every text keeps its size relative to the plot, under a title line (what, which
    checkpoint, layer and frames: a PNG pasted into an issue says what it shows); written atomically."""
    scale = max(2, math.ceil(min_width / max(1, view.width())))
    pixmap = QPixmap(view.size() * scale)
    pixmap.setDevicePixelRatio(scale)
    pixmap.fill(QColor(theme.current().paper))
    QWidget.render(view, pixmap)          # a QGraphicsView's own render() draws the scene, not the widget
    image = pixmap.toImage()
    image.setDevicePixelRatio(1)
    if title:
        image = titled(image, title, scale)
    with atomic_path(path) as tmp:
        if not image.save(str(tmp), "PNG"):
            raise OSError(f"cannot write the PNG {path}")


def titled(image: QImage, title: str, scale: float = 1.0) -> QImage:
    """`image` under a band with `title` in it, in the application's font (a little larger), at `scale`."""
    font = QFont(QApplication.font())
    font.setPixelSize(max(12, round(QFontMetrics(font).height() * 0.95 * scale)))
    band = int(font.pixelSize() * 2.2)
    out = QImage(image.width(), image.height() + band, QImage.Format.Format_ARGB32)
    out.fill(QColor(theme.current().paper))
    painter = QPainter(out)
    painter.setRenderHint(QPainter.RenderHint.TextAntialiasing)
    painter.setFont(font)
    painter.setPen(QColor(theme.ink()))
    margin = font.pixelSize()
    text = QFontMetrics(font).elidedText(title, Qt.TextElideMode.ElideRight, image.width() - 2 * margin)
    painter.drawText(margin, 0, image.width() - 2 * margin, band, int(Qt.AlignmentFlag.AlignVCenter), text)
    painter.drawImage(0, band, image)
    painter.end()
    return out


def configure_pyqtgraph() -> None:
    """Options for every plot; the colours are the theme's (gui/theme.py sets them)."""
    pg.setConfigOptions(antialias=True, useOpenGL=False)
