"""Colours, header labels, steady axes, CSV and PNG export shared by the panels."""

from __future__ import annotations

import csv
from pathlib import Path

import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QAbstractItemView, QFrame, QLabel, QSizePolicy

from ...io import atomic_path

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


def write_csv(path: str | Path, header: list[str], rows) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(header)
            writer.writerows(rows)


def table_rows(view: QAbstractItemView) -> tuple[list[str], list[list[str]]]:
    """Header and displayed rows of a table view's model, as shown (sorting included)."""
    model = view.model()
    header = [str(model.headerData(c, Qt.Orientation.Horizontal, Qt.ItemDataRole.DisplayRole))
              for c in range(model.columnCount())]
    rows = []
    for r in range(model.rowCount()):
        rows.append([_plain(model.index(r, c).data(Qt.ItemDataRole.DisplayRole)) for c in range(model.columnCount())])
    return header, rows


def _plain(value) -> str:
    return "" if value is None else str(value)


def export_scene_png(item, path: str | Path, width: int = 1600) -> None:
    """A plot (PlotItem / GraphicsLayout) to PNG with pyqtgraph's ImageExporter, written atomically."""
    from pyqtgraph.exporters import ImageExporter
    exporter = ImageExporter(item)
    params = exporter.parameters()
    source_width = max(1, int(item.boundingRect().width()))
    params["width"] = int(max(width, source_width))
    path = Path(path)
    with atomic_path(path) as tmp:
        target = tmp.with_suffix(".png")
        exporter.export(str(target))
        target.replace(tmp)


def configure_pyqtgraph() -> None:
    pg.setConfigOptions(background="w", foreground="#222222", antialias=True, useOpenGL=False)
