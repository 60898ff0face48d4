"""What keeps the window fluid while an audit streams in (benchmarks/ui.py measures the result):
plots that keep their size when data arrives, and views that take turns drawing snapshots."""

from __future__ import annotations

import dataclasses

from .conftest import wait_views


def _plot_sizes(win) -> dict:
    widgets = {"histogram": win.histogram.plot, "residuals": win.residuals.canvas, "map": win.map.canvas}
    return {name: w.size().toTuple() for name, w in widgets.items()}


def test_plots_keep_their_size_when_the_audit_arrives(window, qtbot, demo):
    # A plot that changes size is relaid out and repainted whole; when every header, axis and status
    # label grew as the first numbers came in, the whole window was repainted several times over.
    window.resize(1400, 900)
    qtbot.waitExposed(window)
    qtbot.wait(100)
    before = _plot_sizes(window)
    central = window.centralWidget().geometry().getRect()
    window.open(demo["healthy"], demo["features"])
    wait_views(qtbot, window)
    window.selection.set_code(0, 3)         # the headers' second line (the selected code)
    qtbot.wait(100)
    assert _plot_sizes(window) == before
    assert window.centralWidget().geometry().getRect() == central


def test_views_take_turns_while_snapshots_come_faster_than_a_round(loaded, qtbot, monkeypatch):
    from rvq_viewer.gui import main_window
    win = loaded
    drawn: dict = {view: [] for view in win.views}
    for view in win.views:
        original = view.set_snapshot

        def record(snapshot, _view=view, _original=original):
            drawn[_view].append(snapshot.frames_done)
            _original(snapshot)
        monkeypatch.setattr(view, "set_snapshot", record)
    final = win.snapshot
    partial = [dataclasses.replace(final, frames_done=i, complete=False) for i in range(1, 21)]
    # One new snapshot every half stagger: faster than the views can take them one by one.
    for snapshot in partial:
        win._apply(snapshot)
        qtbot.wait(main_window.STAGGER_MS // 2)
    win._apply(final)
    qtbot.waitUntil(lambda: not win._stale, timeout=5000)
    for view, frames in drawn.items():
        assert frames[-1] == final.frames_done, view.objectName()
        assert any(0 < f < final.frames_done for f in frames), f"{view.objectName()} drew no partial snapshot"
    # The views drew one at a time, so not every view drew each of the 21 snapshots.
    assert sum(len(frames) for frames in drawn.values()) < 21 * len(win.views)
