"""The Events dock: open a checkpoint series, the timeline fills, selecting an event selects its code."""

from __future__ import annotations

import time

import numpy as np
import pytest
from PySide6.QtCore import QPointF, Qt

from rvq_viewer.analysis.series import EVENT_KINDS, EventTable, find_events, open_series
from rvq_viewer.app.series_jobs import series_job
from rvq_viewer.gui.panels.map_overlay import OverlayPath

from .conftest import DEMO, wait_views

SERIES = DEMO / "series"


@pytest.fixture
def events(window):
    return window, window.events_view


def _open(qtbot, view, paths=None):
    view.open_series(paths or [SERIES])
    qtbot.waitUntil(lambda: view.result is not None and not view.slot.busy, timeout=60_000)


def _click(qtbot, view, x, y):
    vb = view.plot.getViewBox()
    pos = view.canvas.mapFromScene(vb.mapViewToScene(QPointF(x, y)))
    qtbot.mouseClick(view.canvas.viewport(), Qt.MouseButton.LeftButton, pos=pos)


def test_series_job_matches_the_engine(demo):
    """The worker job gives what series.find_events gives (it only adds progress and cancel points)."""
    import threading
    out = list(series_job(threading.Event(), [SERIES]))
    result = out[-1]
    report = find_events(open_series([SERIES]))
    want = EventTable.from_events(report.events)
    assert len(result.events) == len(want) > 0
    for name in ("steps", "layers", "codes", "kinds"):
        np.testing.assert_array_equal(getattr(result.events, name), getattr(want, name))
    for s in report.summaries:
        assert result.ema_dead[result.steps.index(s.step), s.layer] == s.ema_dead
    assert result.dead_masks[0].shape == (5, 512)


def test_open_series_fills_the_timeline_and_an_event_selects_its_code(events, qtbot, demo):
    win, view = events
    win.open(demo["healthy"], demo["features"])
    wait_views(qtbot, win)
    win.resize(1500, 1000)
    win.docks["events"].setFloating(True)
    win.docks["events"].resize(1300, 520)
    _open(qtbot, view)
    r = view.result
    assert r.steps == [200, 400, 600, 800, 1000]
    assert "training step stored in the files" in view.header.text()
    assert view.mode == "events"
    drawn = sum(len(item.getData()[0]) for item in view.scatters)
    assert drawn == len(r.events) > 100
    assert view.strips.dead_image.image.shape == (4, 5)                # layers x checkpoints
    assert np.isfinite(r.perplexity).all()                       # the session's features were used
    assert view.reference == 4 and view.linked                   # healthy.pt is step 1000 of the series

    # click a "replaced" event with the mouse (one with no other mark within 4 px): its code is
    # selected in every view
    qtbot.waitUntil(lambda: view.plot.getViewBox().viewPixelSize()[0] > 0, timeout=5000)
    px, py = view.plot.getViewBox().viewPixelSize()
    xs, ys = view._mx / px, view._my / py
    rows = np.flatnonzero(r.events.kinds == EVENT_KINDS.index("replaced"))
    gaps = [np.sort(np.hypot(xs - xs[i], ys - ys[i]))[1] for i in rows]
    row = int(rows[int(np.argmax(gaps))])
    assert max(gaps) > 4
    layer, code = int(r.events.layers[row]), int(r.events.codes[row])
    x, y = view.mark_position(row)
    assert view.mark_at(x, y) == row
    _click(qtbot, view, x, y)
    qtbot.waitUntil(lambda: win.selection.code == code, timeout=5000)
    assert win.selection.layer == layer
    assert view.selected == (layer, code)
    assert f"code {code}" in view.history_label.text()
    assert view.code_list.count() == r.events.codes_at(int(r.events.steps[row]), layer, "replaced").size
    assert view.highlight.getData()[0].size == r.events.of_code(layer, code).size
    # trajectory: one point per checkpoint, drawn in the dock and on the centroid map (same PCA)
    assert len(view.trajectory.line.getData()[0]) == 5
    qtbot.waitUntil(lambda: win.map.ready, timeout=10_000)
    assert OverlayPath.fits(win.state.overlay, win.map.geometry) and win.map.overlay.line.isVisible()
    assert "Also drawn (dashed) on the centroid map" in view.trajectory.note.text()
    mx, my = win.map.overlay.line.getData()
    end = win.map.view_position(layer, code)                   # the open checkpoint is the last step
    assert (mx[-1], my[-1]) == pytest.approx(end, abs=1e-3)

    # selecting a code elsewhere moves the timeline's highlight
    other = int(r.events.codes[r.events.layers == layer][0])
    win.selection.set_code(layer, other)
    assert view.selected == (layer, other)


def test_aggregated_marks_list_their_codes(events, qtbot, demo):
    win, view = events
    win.open(demo["healthy"], demo["features"])
    wait_views(qtbot, win)
    _open(qtbot, view)
    view.mode_box.setCurrentIndex(view.mode_box.findData("aggregate"))
    assert view.mode == "aggregate"
    agg = view.result.events.aggregate()
    assert sum(len(item.getData()[0]) for item in view.scatters) == len(agg)
    big = int(np.argmax(agg.counts))
    view.click_mark(big)
    assert view.code_list.count() == int(agg.distinct[big])
    item = view.code_list.item(1)
    view.code_list.setCurrentItem(item)
    layer, code = item.data(Qt.ItemDataRole.UserRole)
    assert (win.selection.layer, win.selection.code) == (layer, code)
    assert "aggregate" not in view.header.text() or "marks" in view.header.text()


def test_series_alone_opens_its_last_checkpoint(events, qtbot):
    win, view = events
    _open(qtbot, view)
    qtbot.waitUntil(lambda: win.session is not None, timeout=30_000)
    assert win.session.name == "step_001000.pt"
    qtbot.waitUntil(lambda: view.linked, timeout=5000)
    assert np.isnan(view.result.perplexity).all()               # no features were open
    assert "no features open" in view.header.text()


def test_died_at_reaches_the_dead_code_view(events, qtbot, demo):
    win, view = events
    received = {}
    view.died_at_changed.connect(lambda mapping, note: received.update(mapping=mapping, note=note))
    win.open(demo["healthy"], demo["features"])
    wait_views(qtbot, win)
    _open(qtbot, view)
    mapping = received["mapping"]
    dead_last = view.result.dead_masks[0][-1]
    assert {c for (layer, c) in mapping if layer == 0} == set(np.flatnonzero(dead_last).tolist())
    died = [e for e in zip(view.result.events.steps, view.result.events.layers, view.result.events.codes,
                           view.result.events.kinds) if e[3] == 0 and e[1] == 0]
    step, _, code, _ = died[-1]
    if dead_last[code]:
        assert mapping[(0, int(code))] >= int(step)
    assert "first checkpoint" in received["note"]
    assert win.dead_codes.model.died_at == mapping            # the window wires it to the dead-code table
    # another checkpoint of the same shape but not of the series: no "died at" column
    win.open(demo["collapsed"])
    qtbot.waitUntil(lambda: win.session is not None and win.session.name == "collapsed.pt", timeout=30_000)
    assert received["mapping"] is None and view.linked and view.reference is None
    assert "not one of these files" in view.header.text()


def test_file_menu_and_bad_folder(events, qtbot, tmp_path):
    win, view = events
    texts = [a.text() for a in win.commands.menu("file").actions()]
    assert "Open checkpoint &series…" in texts
    assert texts.index("Open checkpoint &series…") == texts.index("Open feature f&older…") + 1
    messages = []
    win.message_shown.connect(messages.append)
    view.open_series([tmp_path])
    qtbot.waitUntil(lambda: not view.slot.busy and bool(messages), timeout=10_000)
    assert "no checkpoint files" in view.header.text() and "no checkpoint files" in messages[-1]


def test_hundreds_of_thousands_of_events_stay_fluid(events, qtbot, demo):
    """300k events: drawn as aggregated marks at once, clicks and hovers stay cheap."""
    import threading
    win, view = events
    result = list(series_job(threading.Event(), [SERIES]))[-1]
    rng = np.random.default_rng(0)
    n = 300_000
    result.events = EventTable(rng.choice(result.steps[1:], n), rng.integers(0, 4, n).astype(np.int32),
                               rng.integers(0, 512, n), rng.integers(0, 3, n).astype(np.int8),
                               *(np.full(n, np.nan, np.float32) for _ in range(3))).sorted()
    t0 = time.perf_counter()
    view.set_result(result)
    assert time.perf_counter() - t0 < 3.0
    assert view.mode == "aggregate" and sum(len(i.getData()[0]) for i in view.scatters) <= 4 * 4 * 3
    t0 = time.perf_counter()
    for i in range(10):
        view.click_mark(i)
    assert time.perf_counter() - t0 < 3.0
    assert "300,000 events drawn as" in view.header.text()
    qtbot.waitUntil(lambda: win.session is not None, timeout=30_000)   # the window opened step 1000
