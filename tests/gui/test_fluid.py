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


def test_subscribers_take_turns_while_snapshots_come_faster_than_a_round(loaded, qtbot):
    from rvq_viewer.gui import state as state_module
    from rvq_viewer.gui.state import AppState
    state = AppState()
    drawn: dict = {name: [] for name in ("overview", "histogram", "map", "residuals", "dead_codes")}
    for name, frames in drawn.items():
        state.subscribe_snapshots(lambda snapshot, _frames=frames: _frames.append(snapshot.frames_done))
    final = loaded.snapshot
    partial = [dataclasses.replace(final, frames_done=i, complete=False) for i in range(1, 21)]
    # One new snapshot every half stagger: faster than the subscribers can take them one by one.
    with qtbot.waitSignal(state.audit_finished, timeout=10_000):
        for snapshot in partial:
            state.set_snapshot(snapshot)
            qtbot.wait(state_module.STAGGER_MS // 2)
        state.set_snapshot(final)
    assert not state.delivering
    for name, frames in drawn.items():
        assert frames[-1] == final.frames_done, name
        assert any(0 < f < final.frames_done for f in frames), f"{name} drew no partial snapshot"
    # They drew one at a time, so not every subscriber drew each of the 21 snapshots.
    assert sum(len(frames) for frames in drawn.values()) < 21 * len(drawn)


def test_every_panel_of_the_window_gets_the_snapshot(loaded):
    for view in loaded.views:
        assert view.ready, view.objectName()
    assert loaded.diagnosis.verdicts and loaded.histogram.counts is not None
