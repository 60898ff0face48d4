"""The pointer on the centroid map: hover (a ring, a note beside the point and a line below the plot,
cleared when the pointer leaves), a click selects a code, Shift+drag a box selects the codes in it.

Hit-testing goes through a KD-tree over the 2-D positions (`KdPicker`), never per-point items.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, QObject, QRectF, Qt, Signal
from PySide6.QtWidgets import QGraphicsRectItem

from ..widgets.common import SELECT_COLOR
from ..widgets.picking import KdPicker, view_point
from ..theme import ink, paper_brush

HOVER_RADIUS_PX = 8
BOX_PEN = pg.mkPen(SELECT_COLOR, width=1, style=Qt.PenStyle.DashLine)


class BoxSelectViewBox(pg.ViewBox):
    """A ViewBox where Shift+drag draws a box and emits it (view coordinates) instead of panning."""

    box_selected = Signal(object)      # QRectF

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.box = QGraphicsRectItem()
        self.box.setPen(BOX_PEN)
        self.box.setBrush(pg.mkBrush(255, 127, 14, 40))
        self.box.setZValue(1e9)
        self.box.hide()
        self.addItem(self.box, ignoreBounds=True)

    def mouseDragEvent(self, ev, axis=None):  # noqa: N802
        if ev.button() != Qt.MouseButton.LeftButton or not ev.modifiers() & Qt.KeyboardModifier.ShiftModifier:
            super().mouseDragEvent(ev, axis)
            return
        ev.accept()
        rect = QRectF(self.mapToView(ev.buttonDownPos()), self.mapToView(ev.pos())).normalized()
        if ev.isFinish():
            self.box.hide()
            self.box_selected.emit(rect)
        else:
            self.box.setRect(rect)
            self.box.show()


class _LeaveWatcher(QObject):
    """Calls `on_leave` when the pointer leaves a widget (pyqtgraph sends no move event then)."""

    def __init__(self, widget, on_leave):
        super().__init__(widget)
        self.on_leave = on_leave
        widget.installEventFilter(self)

    def eventFilter(self, obj, event):  # noqa: N802
        if event.type() == QEvent.Type.Leave:
            self.on_leave()
        return False


class MapPointer:
    """Hover, click and box selection on `view` (a CentroidMapView): reads its geometry, session and
    snapshot, writes the shared selection."""

    def __init__(self, view, hover_label):
        self.view = view
        plot = view.plot
        self.label = hover_label
        self.index = -1
        self.ring = pg.ScatterPlotItem(size=13, pen=pg.mkPen(ink(), width=1.5), brush=None)
        self.ring.setZValue(19)
        self.note = pg.TextItem(color=ink(), fill=paper_brush(225),
                                border=pg.mkPen("#999999"), anchor=(0, 1))
        self.note.setZValue(30)
        for thing in (self.ring, self.note):
            plot.addItem(thing, ignoreBounds=True)
            thing.hide()
        self._proxy = pg.SignalProxy(plot.scene().sigMouseMoved, rateLimit=30, slot=self.hovered)
        plot.scene().sigMouseClicked.connect(self.clicked)
        plot.getViewBox().box_selected.connect(self.box_selected)
        self._leave = _LeaveWatcher(view.canvas.viewport(), self.left)

    # --- hit-testing ----------------------------------------------------------------------------------
    def point_at(self, x: float, y: float, radius_px: float = HOVER_RADIUS_PX) -> int | None:
        """Index of the point nearest to view position (x, y) within `radius_px` pixels, or None."""
        geo = self.view.geometry
        if geo is None:
            return None
        return KdPicker(geo.coords, geo.tree).at(self.view.plot.getViewBox(), x, y, radius_px)

    def _scene_to_point(self, scene_pos) -> int | None:
        p = view_point(self.view.plot.getViewBox(), scene_pos)
        return None if p is None else self.point_at(p.x(), p.y())

    # --- hover ----------------------------------------------------------------------------------------
    def hovered(self, args) -> None:
        index = self._scene_to_point(args[0])
        self.index = -1 if index is None else index
        self.update()

    def left(self) -> None:
        self.index = -1
        self.update()

    def forget(self) -> None:
        """A new map: the point under the pointer belonged to the old one."""
        self.index = -1
        self.update()

    def describe(self, index: int) -> str:
        view = self.view
        geo = view.geometry
        layer, code = int(geo.layers[index]), int(geo.codes[index])
        count = None
        if view.snapshot is not None and layer < len(view.snapshot.counts):
            count = int(view.snapshot.counts[layer][code])
        text = f"layer {layer} · code {code} · count {'–' if count is None else f'{count:,}'}"
        text += f" · norm {view.session.norms[layer][code]:.3g}"
        if view.session.ema_sizes is not None:
            text += f" · EMA size {view.session.ema_sizes[layer][code]:.3g}"
        if count == 0:
            text += " · dead"
        return text

    def update(self) -> None:
        geo = self.view.geometry
        index = self.index
        if geo is None or not 0 <= index < len(geo.coords):
            self.ring.hide()
            self.note.hide()
            self.label.setText(" ")
            return
        text = self.describe(index)
        x, y = (float(v) for v in geo.coords[index])
        self.ring.setData([x], [y])
        self.ring.show()
        self.note.setText(text.replace(" · ", "\n"))
        self.note.setPos(x, y)
        self.note.show()
        self.label.setText(text)

    # --- selection ------------------------------------------------------------------------------------
    def clicked(self, event) -> None:
        if event.button() != Qt.MouseButton.LeftButton or event.modifiers() & Qt.KeyboardModifier.ShiftModifier:
            return
        index = self._scene_to_point(event.scenePos())
        if index is not None:
            self.select_index(index)

    def select_index(self, index: int) -> None:
        geo = self.view.geometry
        self.view.selection.set_code(int(geo.layers[index]), int(geo.codes[index]))

    def box_selected(self, rect: QRectF) -> None:
        """The codes of the selected layer inside `rect` become the shared set (an empty box clears it)."""
        view = self.view
        geo = view.geometry
        if geo is None:
            return
        layer = view.selection.layer
        x, y = geo.coords[:, 0], geo.coords[:, 1]
        inside = (x >= rect.left()) & (x <= rect.right()) & (y >= rect.top()) & (y <= rect.bottom())
        inside &= geo.layers == layer
        view.selection.set_codes(layer, geo.codes[inside])

    def close(self) -> None:
        self._proxy.disconnect()


def set_positions(geo, layer: int, codes: np.ndarray, offsets: dict[int, int], all_layers: bool) -> np.ndarray:
    """Map positions [n, 2] of `codes` of `layer` in geometry `geo` (one layer's, or all layers')."""
    if geo is None or codes.size == 0:
        return np.zeros((0, 2))
    if all_layers:
        index = offsets.get(layer, 0) + codes
    elif int(geo.layers[0]) != layer:
        return np.zeros((0, 2))
    else:
        index = codes
    index = index[index < len(geo.coords)]
    return geo.coords[index].astype(np.float64)
