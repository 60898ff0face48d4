"""Finding and pointing: go to a code, type a code in the dead-codes table, bar tooltips, hover that
clears, a box of codes on the map shown as a set everywhere, a reset-view button per plot, F1."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QEvent, QPointF, QRectF, Qt
from PySide6.QtWidgets import QApplication

from rvq_viewer.app.code_ref import parse_code_ref


def test_go_to_code_box_drives_every_view(loaded, qtbot):
    win = loaded
    box = win.goto_box
    win.commands["view.goto"].trigger()
    assert box.hasFocus() or QApplication.focusWidget() is box
    box.clear()
    qtbot.keyClicks(box, "2:300")
    qtbot.keyClick(box, Qt.Key.Key_Return)
    assert (win.selection.layer, win.selection.code) == (2, 300)
    qtbot.waitUntil(lambda: win.histogram.select_line.isVisible(), timeout=3000)
    assert "code <b>300</b>" in win.histogram.header.text()
    assert win.layer_box.currentIndex() == 2
    # a wrong entry says why and moves nothing
    box.clear()
    qtbot.keyClicks(box, "7:1")
    qtbot.keyClick(box, Qt.Key.Key_Return)
    assert (win.selection.layer, win.selection.code) == (2, 300)
    assert "layer 7: this quantizer has layers 0-3" in win.statusBar().currentMessage()
    assert "C62828" in box.styleSheet()
    qtbot.keyClicks(box, "x")
    assert box.styleSheet() == ""


def test_typing_a_number_in_the_dead_codes_table_goes_to_that_code(loaded, qtbot):
    win = loaded
    win.dead_codes.set_filter("either")
    qtbot.waitUntil(lambda: win.dead_codes.ready, timeout=5000)
    table = win.dead_codes.table
    listed = [int(c) for c in table.codes]
    # a three-digit listed code whose two-digit prefix would have stopped Qt's own type-ahead
    code = next(c for c in listed if c >= 100)
    win.dead_codes.view.setFocus()
    qtbot.keyClicks(win.dead_codes.view, str(code))
    assert win.selection.code == code
    assert win.dead_codes.selected_code() == code
    # a live code is not in the list: the selection still goes there, and the header says so
    counts = win.snapshot.counts[0]
    live = next(c for c in range(100, 512) if counts[c] > 0 and c not in listed)
    qtbot.wait(QApplication.keyboardInputInterval() + 50)
    qtbot.keyClicks(win.dead_codes.view, str(live))
    assert win.selection.code == live
    assert win.dead_codes.selected_code() is None
    assert f"Code <b>{live}</b> is not in this list: {int(counts[live]):,} uses" in win.dead_codes.header.text()


def test_histogram_bar_tooltip_describes_the_code(loaded):
    win = loaded
    counts = win.snapshot.counts[0]
    dead = int(np.flatnonzero(counts == 0)[0])
    live = int(np.argmax(counts))
    text = win.histogram.describe_code(live)
    assert f"code {live}\n{int(counts[live]):,} uses" in text and "rank 1 of 512" in text
    assert "EMA size" in text and "dead" not in text
    assert "dead: unused on these features" in win.histogram.describe_code(dead)


def test_map_hover_clears_when_the_pointer_leaves(loaded, qtbot):
    win = loaded
    live = int(np.flatnonzero(win.snapshot.counts[0] > 0)[3])
    pos = win.map.plot.getViewBox().mapViewToScene(QPointF(*win.map.view_position(0, live)))
    win.map.pointer.hovered((pos,))
    assert f"code {live}" in win.map.hover_label.text() and win.map.pointer.ring.isVisible()
    QApplication.sendEvent(win.map.canvas.viewport(), QEvent(QEvent.Type.Leave))
    assert win.map.hover_label.text().strip() == ""
    assert not win.map.pointer.ring.isVisible() and not win.map.pointer.note.isVisible()
    # and a hover on one layer's map is not carried to another layer's
    win.map.pointer.hovered((pos,))
    win.selection.set_layer(1)
    qtbot.waitUntil(lambda: win.map.ready, timeout=5000)
    assert win.map.hover_label.text().strip() == ""


def test_shift_drag_on_the_map_selects_a_set_shown_everywhere(loaded, qtbot):
    win = loaded
    geo = win.map.geometry
    lo, hi = geo.coords.min(axis=0), geo.coords.max(axis=0)
    mid = (lo + hi) / 2
    start, end = (float(lo[0]) - 1, float(lo[1]) - 1), (float(mid[0]), float(mid[1]))
    vb = win.map.plot.getViewBox()
    x_range = vb.viewRange()[0]
    a = win.map.canvas.mapFromScene(vb.mapViewToScene(QPointF(*start)))
    b = win.map.canvas.mapFromScene(vb.mapViewToScene(QPointF(*end)))
    shift = Qt.KeyboardModifier.ShiftModifier
    viewport = win.map.canvas.viewport()
    qtbot.mousePress(viewport, Qt.MouseButton.LeftButton, shift, a)
    from PySide6.QtGui import QMouseEvent
    for t in np.linspace(0.1, 1.0, 8):
        p = QPointF(a) + (QPointF(b) - QPointF(a)) * float(t)
        QApplication.sendEvent(viewport, QMouseEvent(QEvent.Type.MouseMove, p, viewport.mapToGlobal(p),
                                                     Qt.MouseButton.NoButton, Qt.MouseButton.LeftButton, shift))
    qtbot.mouseRelease(viewport, Qt.MouseButton.LeftButton, shift, b)
    codes = win.selection.codes
    # the box, in view coordinates, as the view box mapped the pointer
    p0, p1 = vb.mapSceneToView(win.map.canvas.mapToScene(a)), vb.mapSceneToView(win.map.canvas.mapToScene(b))
    box = QRectF(p0, p1).normalized()
    x, y = geo.coords[:, 0], geo.coords[:, 1]
    inside = np.flatnonzero((x >= box.left()) & (x <= box.right()) & (y >= box.top()) & (y <= box.bottom()))
    assert codes.size > 5 and np.array_equal(codes, geo.codes[inside])
    assert vb.viewRange()[0] == pytest.approx(x_range)             # a Shift+drag selects, it does not pan
    # the map marks them, the histogram outlines their bars, the dead-codes view filters on them
    assert len(win.map.set_marks.data) == codes.size
    xs, _ = win.histogram.set_bars.getData()
    assert win.histogram.set_bars.isVisible() and len(xs) == 2 * codes.size
    assert f"{codes.size:,} codes boxed on the map" in win.histogram.header.text()
    win.dead_codes.set_filter("boxed")
    qtbot.waitUntil(lambda: win.dead_codes.ready, timeout=5000)
    listed = {win.dead_codes.model.code_at(r) for r in range(win.dead_codes.model.rowCount())}
    counts = win.snapshot.counts[0]
    ema_dead = set(int(c) for c in win.session.ema_dead[0])
    assert listed == {int(c) for c in codes if counts[c] == 0 or int(c) in ema_dead}
    assert f"{codes.size} codes of layer 0 boxed on the map" in win.statusBar().currentMessage()
    # Ctrl+D clears the set everywhere; so does another layer
    win.commands["view.clear_code"].trigger()
    assert win.selection.codes.size == 0 and not win.histogram.set_bars.isVisible()
    assert len(win.map.set_marks.data) == 0
    win.selection.set_codes(0, codes)
    win.selection.set_layer(1)
    assert win.selection.codes.size == 0


def test_every_plot_has_a_reset_view_button_and_key(loaded, qtbot):
    win = loaded
    hist_vb = win.histogram.plot.getPlotItem().getViewBox()
    full = hist_vb.viewRange()[0]
    hist_vb.setXRange(100, 120, padding=0)
    map_vb = win.map.plot.getViewBox()
    map_full = map_vb.viewRange()
    map_vb.scaleBy((0.2, 0.2))
    win.histogram.reset_button.click()
    assert hist_vb.viewRange()[0] == pytest.approx(full, abs=1e-6)
    assert map_vb.viewRange()[0] != pytest.approx(map_full[0])
    win.map.reset_button.click()
    assert map_vb.viewRange()[0] == pytest.approx(map_full[0], rel=1e-3)
    # the key resets every plot at once
    hist_vb.setXRange(10, 20, padding=0)
    map_vb.scaleBy((0.3, 0.3))
    res_vb = win.residuals.norm_plot.getViewBox()
    res_full = res_vb.viewRange()[1]
    res_vb.scaleBy((1.0, 0.5))
    win.commands["view.reset_views"].trigger()
    assert hist_vb.viewRange()[0] == pytest.approx(full, abs=1e-6)
    assert map_vb.viewRange()[0] == pytest.approx(map_full[0], rel=1e-3)
    assert res_vb.viewRange()[1] == pytest.approx(res_full, rel=1e-3)
    for view in (win.histogram, win.map, win.residuals, win.events_view):
        assert view.reset_button.isVisibleTo(view)


def test_f1_lists_the_keyboard_shortcuts(loaded, qtbot):
    win = loaded
    action = win.commands["help.shortcuts"]
    assert action.shortcut().toString() == "F1"
    action.trigger()
    dialog = win.shortcuts_dialog
    qtbot.waitUntil(dialog.isVisible, timeout=2000)
    table = dialog.table
    rows = {table.item(r, 0).text(): table.item(r, 1).text() for r in range(table.rowCount())}
    assert rows["Ctrl+G"].startswith("Go to code") and rows["F1"] == "Keyboard shortcuts"
    assert rows["F5"] == "Re-run" and "Shift+drag on the centroid map" in rows
    # every action with a key is listed
    assert len([r for r in rows if r]) >= len(win.commands.shortcuts())
    dialog.close()


def test_parse_is_what_the_box_uses(loaded):
    sizes = [len(cb) for cb in loaded.session.codebooks]
    assert parse_code_ref("3:511", 0, sizes) == (3, 511)


def test_reset_key_covers_the_run_view(loaded, qtbot):
    win = loaded
    run_views = [view for view in win.views if type(view).__name__ == "RunView"]
    assert run_views, "the run view takes part in View > Reset plot views"
    for view in run_views:
        assert hasattr(view, "reset_button")
    win.commands["view.reset_views"].trigger()     # must not raise for any view
