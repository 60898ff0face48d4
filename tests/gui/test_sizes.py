"""Every size of screen: at 1280x720 and 1920x1080 every plot keeps its useful size, no label sits on
another or on the data, and views with nothing to show say so instead of drawing empty axes."""

from __future__ import annotations

import itertools

import pytest
from PySide6.QtWidgets import QAbstractButton, QComboBox, QLabel, QLineEdit

from rvq_viewer.gui.widgets.common import MIN_PLOT_HEIGHT, MIN_PLOT_WIDTH, MIN_TABLE_HEIGHT

from .conftest import wait_views

SIZES = [(1280, 720), (1920, 1080)]


def _plots(win):
    return {"histogram": (win.histogram.plot, "histogram"), "map": (win.map.canvas, None),
            "residuals": (win.residuals.canvas, "residuals"), "trainer": (win.trainer_panel.plots.canvas, "trainer"),
            "events": (win.events_view.canvas, "events")}


def _window_rect(widget, win):
    top_left = widget.mapTo(win, widget.rect().topLeft())
    return widget.rect().translated(top_left)


def _controls(parent):
    return [w for kind in (QLabel, QAbstractButton, QComboBox, QLineEdit) for w in parent.findChildren(kind)]


def _overlaps(widgets, win):
    """Pairs of visible widgets (labels, buttons, boxes) whose rectangles on the window intersect."""
    shown = [w for w in widgets if w.isVisible() and w.width() > 0 and w.height() > 0
             and (not isinstance(w, QLabel) or w.text().strip())]
    rects = [(w, _window_rect(w, win)) for w in shown]
    return [(a.objectName() or type(a).__name__, b.objectName() or type(b).__name__)
            for (a, ra), (b, rb) in itertools.combinations(rects, 2)
            if ra.intersects(rb) and not a.isAncestorOf(b) and not b.isAncestorOf(a)]


@pytest.fixture(params=SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def sized(window, qtbot, demo, request):
    width, height = request.param
    window.resize(width, height)
    window.reset_layout()
    window.open(demo["healthy"], demo["features"])
    wait_views(qtbot, window)
    qtbot.wait(100)
    return window, width, height


def test_every_plot_keeps_its_useful_size(sized, qtbot):
    win, width, height = sized
    assert win.compact == (width < 1500)
    for name, (plot, dock) in _plots(win).items():
        if dock == "trainer":
            win.show_trainer()                  # as Train > What-if trainer does
        elif dock == "events":
            win._raise_dock("events", 420)
        elif dock is not None:
            win._raise_dock(dock)
        qtbot.wait(30)
        assert plot.isVisible(), name
        assert plot.width() >= MIN_PLOT_WIDTH and plot.height() >= MIN_PLOT_HEIGHT - 40, (name, plot.size())
    for table in (win.overview.table, win.dead_codes.view):
        win._raise_dock("overview" if table is win.overview.table else "dead_codes")
        qtbot.wait(30)
        assert table.height() >= MIN_TABLE_HEIGHT, table.objectName()
    # the dead-codes table shows its columns, not three of them
    win._raise_dock("dead_codes")
    qtbot.wait(30)
    header = win.dead_codes.view.horizontalHeader()
    visible = [c for c in range(header.count()) if header.sectionViewportPosition(c) < header.width()]
    assert len(visible) >= 6
    # the map's colour bar and legend are inside its canvas, not cut off
    canvas = win.map.canvas
    bar = win.map.colorbar.mapRectToScene(win.map.colorbar.boundingRect())
    assert canvas.sceneRect().contains(bar) or canvas.viewport().rect().contains(canvas.mapFromScene(bar).boundingRect())


def test_no_label_sits_on_another_or_on_the_data(sized, qtbot):
    win, _, _ = sized
    for name in ("histogram", "residuals", "overview", "dead_codes"):
        win._raise_dock(name)
    qtbot.wait(50)
    for panel in (win.histogram, win.map, win.residuals, win.overview, win.dead_codes, win.diagnosis):
        assert _overlaps(_controls(panel), win) == [], type(panel).__name__
    assert _overlaps(_controls(win.toolbar), win) == []
    assert all(w.isVisible() for w in (win.goto_box, win.device_box, win.rerun_button))
    # legends sit in rows of their own, not on the plots' data
    res = win.residuals
    legend = res.legend.sceneBoundingRect()
    for plot in (res.norm_plot, res.snr_plot):
        assert not legend.intersects(plot.getViewBox().sceneBoundingRect())
    map_legend = win.map.legend.sceneBoundingRect()
    assert not map_legend.intersects(win.map.plot.getViewBox().sceneBoundingRect())
    # the SNR bar labels do not run into each other
    shown = [t.sceneBoundingRect() for t in res._labels if t.isVisible()]
    assert len(shown) >= 4
    for a, b in itertools.combinations(shown, 2):
        assert not a.intersects(b)


def test_empty_views_say_so(window):
    win = window
    notes = {"histogram": win.histogram.empty, "map": win.map.empty, "residuals": win.residuals.empty[0],
             "events": win.events_view.empty, "trajectory": win.events_view.trajectory.empty}
    for name, note in notes.items():
        assert note.shown and note.item.isVisible() and note.item.toPlainText(), name
        assert not any(note.plot.getAxis(a).isVisible() for a in ("left", "bottom")), name
    assert all(n.shown for n in win.trainer_panel.plots.empty)
    assert win.histogram.empty.item.toPlainText() == "no checkpoint open"
    assert win.trainer_panel.plots.empty[0].item.toPlainText() == "no run yet: press Start"


def test_map_legend_of_every_layer_fits_in_the_canvas(sized, qtbot):
    win, _, _ = sized
    win.commands["view.map_all_layers"].trigger()
    qtbot.waitUntil(lambda: len(win.map.legend.items) >= 5, timeout=20000)   # 4 layers and the dead codes
    canvas = win.map.canvas
    for width in (canvas.width(), 420):                      # as laid out, then a narrower map
        if width != canvas.width():
            win.resize(win.width() - (canvas.width() - width), win.height())
            qtbot.waitUntil(lambda: canvas.width() <= width + 40, timeout=3000)
        qtbot.wait(50)
        legend = win.map.legend.mapRectToScene(win.map.legend.boundingRect())
        assert legend.right() <= canvas.sceneRect().right() + 1 and legend.left() >= -1, (width, legend)
