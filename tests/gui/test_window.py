"""The real main window, driven offscreen: load, audit, layers, toggles, linked selection, cancel, errors."""

from __future__ import annotations

import time

import numpy as np
import pytest
from PySide6.QtCore import QPointF, Qt
from PySide6.QtTest import QTest

from rvq_viewer.analysis.audit import run_audit
from rvq_viewer.io import FeatureSource, load_quantizer

from .conftest import FakeUmapService, wait_views


def test_demo_fills_every_view_with_the_audit(loaded, demo):
    win = loaded
    snap = win.snapshot
    assert snap.complete and not snap.cancelled
    assert win.session.name == "healthy.pt" and "healthy.pt" in win.windowTitle()

    q = load_quantizer(demo["healthy"])
    expected = run_audit(q, FeatureSource(demo["features"], q.dim))
    assert snap.result.frames == expected.frames
    for got, want in zip(snap.result.layers, expected.layers):
        assert got.counts.tolist() == want.counts.tolist()
        assert got.used == want.used

    table = win.overview.table
    assert table.rowCount() == q.n_q
    assert table.item(0, 1).text() == f"{expected.layers[0].used} / 512"
    assert "healthy" in table.item(0, 10).text()
    assert "EMA cluster size < 2" in win.overview.info.toolTip()

    x, y = win.histogram.curve.getData()
    assert len(x) == 513 and len(y) == 512                      # one step curve for all K codes
    assert win.map.geometry.coords.shape == (512, 2) and win.map.method == "pca"
    assert len(win.residuals.bars.opts["height"]) == q.n_q
    dead = set(expected.layers[0].dead_codes) | set(expected.layers[0].ema_dead_codes)
    assert win.dead_codes.model.rowCount() == len(dead)
    assert not win.banner.isVisible()


def test_collapsed_demo_is_marked_collapsed(window, qtbot, demo):
    window.open(demo["collapsed"], demo["features"])
    wait_views(qtbot, window)
    marks = [window.overview.table.item(r, 10).text() for r in range(window.overview.table.rowCount())]
    assert all("collapsed" in m for m in marks)
    assert "dead" in window.histogram.header.text()


def test_layer_selector_and_shortcuts_move_every_view(loaded, qtbot):
    win = loaded
    win.activateWindow()
    QTest.keyClick(win, Qt.Key.Key_BracketRight)
    qtbot.waitUntil(lambda: win.selection.layer == 1, timeout=2000)
    qtbot.waitUntil(lambda: win.views_ready(), timeout=10_000)
    assert win.layer_box.currentIndex() == 1
    assert win.overview.table.currentRow() == 1
    assert "Layer 1" in win.histogram.header.text()
    np.testing.assert_array_equal(win.histogram.counts, win.snapshot.counts[1])
    assert int(win.map.geometry.layers[0]) == 1
    assert win.dead_codes.table.layer == 1
    assert win.residuals.select_line.value() == 2

    QTest.keyClick(win, Qt.Key.Key_BracketLeft)
    qtbot.waitUntil(lambda: win.selection.layer == 0, timeout=2000)
    win.commands["view.previous_layer"].trigger()                                      # wraps around to the last layer
    assert win.selection.layer == win.session.n_q - 1
    win.overview.table.selectRow(2)
    assert win.selection.layer == 2


def test_histogram_and_map_toggles(loaded, qtbot):
    win, hist = loaded, loaded.histogram
    counts = win.snapshot.counts[0]
    hist.log_box.setChecked(False)
    hist.sorted_box.setChecked(True)
    y = hist.curve.getData()[1]
    assert y[0] == counts.max() and np.all(np.diff(y) <= 0)    # rank-frequency: descending
    hist.log_box.setChecked(True)                               # log-log Zipf view
    x, y = hist.curve.getData()
    assert len(y) == int((counts > 0).sum())
    assert hist.zipf_curve.isVisible()
    assert win.commands["view.histogram_log"].isChecked() and win.commands["view.histogram_sorted"].isChecked()

    win.commands["view.map_all_layers"].trigger()
    qtbot.waitUntil(lambda: win.map.ready, timeout=10_000)
    assert win.map.geometry.coords.shape == (512 * win.session.n_q, 2)
    assert not win.map.colorbar.isVisible()                      # coloured by layer, not by use
    win.commands["view.map_all_layers"].trigger()
    qtbot.waitUntil(lambda: win.map.ready, timeout=10_000)
    assert win.map.geometry.coords.shape == (512, 2)


def _click_plot(qtbot, graphics_view, view_box, x, y):
    scene_pos = view_box.mapViewToScene(QPointF(x, y))
    pos = graphics_view.mapFromScene(scene_pos)
    qtbot.mouseClick(graphics_view.viewport(), Qt.MouseButton.LeftButton, pos=pos)


def test_selecting_a_code_links_map_histogram_and_dead_codes(loaded, qtbot):
    win = loaded
    sel = win.selection
    snap_counts = win.snapshot.counts[0]
    live = int(np.flatnonzero(snap_counts > 0)[5])

    # click a point on the map -> histogram marker follows
    x, y = win.map.view_position(0, live)
    _click_plot(qtbot, win.map.canvas, win.map.plot.getViewBox(), x, y)
    qtbot.waitUntil(lambda: sel.code >= 0, timeout=2000)
    picked = sel.code
    assert picked == win.map.point_at(x, y)
    assert win.histogram.select_line.isVisible()
    assert win.histogram.select_line.value() == pytest.approx(picked + 0.5)
    assert f"code <b>{picked}</b>" in win.histogram.header.text()

    # click a bar of the histogram -> the map highlights that point (one well inside the plot: the last
    # code's bar ends on the view box's edge)
    live_codes = np.flatnonzero(snap_counts > 0)
    target = int(live_codes[len(live_codes) * 3 // 4])
    hist_vb = win.histogram.plot.getPlotItem().getViewBox()
    _click_plot(qtbot, win.histogram.plot, hist_vb, target + 0.5, 1.0)
    qtbot.waitUntil(lambda: sel.code == target, timeout=2000)
    hx, hy = win.map.highlight.getData()
    assert (hx[0], hy[0]) == pytest.approx(win.map.view_position(0, target))

    # a dead code picked in the list is selected everywhere
    win.dead_codes.set_filter("unused")
    win.dead_codes.select_row(0)
    dead_code = win.dead_codes.selected_code()
    assert snap_counts[dead_code] == 0 and sel.code == dead_code
    assert win.histogram.select_line.value() == pytest.approx(dead_code + 0.5)
    assert win.map.highlight.isVisible()
    # and selecting a dead code elsewhere selects its row
    other = int(np.flatnonzero(snap_counts == 0)[-1])
    sel.set_code(0, other)
    assert win.dead_codes.selected_code() == other

    # hover describes the point under the cursor
    win.map.pointer.hovered((win.map.plot.getViewBox().mapViewToScene(QPointF(*win.map.view_position(0, live))),))
    assert f"code {live}" in win.map.hover_label.text() and "count" in win.map.hover_label.text()


def test_cancel_a_running_audit_keeps_partial_results(window, qtbot, demo, monkeypatch):
    from rvq_viewer.app import open_jobs
    from rvq_viewer.pipeline import audit as pipeline_audit
    original, open_features = pipeline_audit.iter_audit, open_jobs.open_features

    def slow(*args, **kwargs):
        for progress in original(*args, **kwargs):
            time.sleep(0.03)
            yield progress

    monkeypatch.setattr(pipeline_audit, "iter_audit", slow)
    # Small chunks, so that there is time to cancel between them.
    monkeypatch.setattr(open_jobs, "open_features", lambda spec, q: open_features(spec.replace(chunk_frames=256), q))
    window.open(demo["healthy"], demo["features"])
    qtbot.waitUntil(lambda: "frames/s" in window.rate_label.text() and window.audit_slot.busy, timeout=20_000)
    assert window.cancel_button.isVisible() and window.progress.isVisible()
    with qtbot.waitSignal(window.state.audit_finished, timeout=5000) as blocker:
        qtbot.mouseClick(window.cancel_button, Qt.MouseButton.LeftButton)
    snap = blocker.args[0]
    assert snap.cancelled and not snap.complete and 0 < snap.frames_done < snap.frames_total
    assert not window.audit_slot.busy and not window.cancel_button.isVisible()
    assert "cancelled" in window.overview.info.text()
    assert "partial" in window.histogram.header.text()
    # the pool drains: the worker really stopped
    qtbot.waitUntil(lambda: window.audit_slot.busy is False, timeout=2000)
    # and the audit can run again to the end
    monkeypatch.setattr(pipeline_audit, "iter_audit", original)
    window.commands["audit.rerun"].trigger()
    qtbot.waitUntil(lambda: window.views_ready(), timeout=20_000)


def test_broken_files_show_a_message_and_the_window_still_works(window, qtbot, demo, tmp_path):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"this is not a checkpoint")
    window.open(broken, demo["features"])
    qtbot.waitUntil(lambda: window.banner.isVisible(), timeout=10_000)
    assert "broken.pt" in window.banner.text() and window.session is None
    qtbot.waitUntil(lambda: not window.load_slot.busy, timeout=5000)   # `finished` follows `errored`

    # a feature file that fails mid-audit (NaN frames): the worker's error becomes a message
    bad = np.load(demo["features"][0])[:3000].copy()
    bad[2500] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    window.open(demo["healthy"], [tmp_path / "nan.npy"])
    qtbot.waitUntil(lambda: window.banner.isVisible() and "NaN" in window.banner.text(), timeout=20_000)
    assert "nan.npy" in window.banner.text()
    qtbot.waitUntil(lambda: not window.audit_slot.busy, timeout=5000)

    # still usable: open the demo, switch layers
    window.open(demo["healthy"], demo["features"])
    wait_views(qtbot, window)
    assert not window.banner.isVisible()
    window.commands["view.next_layer"].trigger()
    assert window.selection.layer == 1


def test_new_request_replaces_the_running_one(window, qtbot, demo):
    window.open(demo["healthy"], demo["features"])
    window.open(demo["collapsed"], demo["features"])          # replaces the load in flight
    wait_views(qtbot, window)
    assert window.session.name == "collapsed.pt"
    assert window.snapshot.result.layers[0].used < 200          # the collapsed quantizer's numbers


def test_umap_replaces_pca_and_a_layer_switch_cancels_it(qtbot, demo):
    from rvq_viewer.gui.main_window import MainWindow
    fake = FakeUmapService(delay=0.3, first_delay=60.0)   # layer 0's UMAP only ends by being cancelled
    win = MainWindow(umap_service=fake)
    qtbot.addWidget(win)
    win.show()
    win.open(demo["healthy"], demo["features"])
    qtbot.waitUntil(lambda: win.views_ready() and win.map.method == "pca", timeout=20_000)
    assert "UMAP computing" in win.map.status.text()
    win.commands["view.next_layer"].trigger()                                      # cancels layer 0's UMAP
    qtbot.waitUntil(lambda: win.views_ready(wait_umap=True), timeout=20_000)
    assert fake.cancelled >= 1
    assert win.map.method == "umap" and int(win.map.geometry.layers[0]) == 1
    assert "UMAP of 512 codes of layer 1" in win.map.status.text()
    win.commands["view.previous_layer"].trigger()                                      # layer 0 again: PCA at once, UMAP again
    assert win.map.geometry is not None and int(win.map.geometry.layers[0]) == 0
    qtbot.waitUntil(lambda: win.map.method == "umap", timeout=20_000)
    win.close()
    assert fake.closed


def test_device_selector(loaded, qtbot):
    win = loaded
    devices = [win.device_box.itemData(i) for i in range(win.device_box.count())]
    assert devices[:2] == ["auto", "cpu"]
    with qtbot.waitSignal(win.state.audit_finished, timeout=20_000) as blocker:
        win.set_device("cpu")
    assert blocker.args[0].device == "cpu" and blocker.args[0].complete


def test_an_export_over_the_open_checkpoint_is_refused(window, qtbot, demo, tmp_path):
    import shutil
    checkpoint = tmp_path / "healthy.pt"
    shutil.copy(demo["healthy"], checkpoint)
    window.open(checkpoint, demo["features"])
    wait_views(qtbot, window)
    before = checkpoint.read_bytes()
    assert window.exporter.export(window.exporter.export_json, checkpoint) is False
    assert checkpoint.read_bytes() == before
    assert window.banner.isVisible() and "input" in window.banner.text()


def test_a_failed_audit_leaves_every_view_on_the_last_good_one(window, qtbot, demo, tmp_path):
    frames = np.load(demo["features"][0])
    bad = np.concatenate([frames, frames])    # 25,100 frames: two chunks
    bad[20_000] = np.nan                      # fails after the first chunk has been drawn
    np.save(tmp_path / "nan.npy", bad)

    # Nothing good yet: every view goes back to empty, the Diagnosis says why.
    window.open(demo["healthy"], [tmp_path / "nan.npy"])
    qtbot.waitUntil(lambda: bool(window.state.failure), timeout=20_000)
    assert window.session is None and window.snapshot is None
    assert "Audit failed" in window.diagnosis.summary.text() and "NaN" in window.diagnosis.summary.text()
    assert "no checkpoint open" in window.histogram.header.text()
    assert window.dead_codes.model.rowCount() == 0 and window.overview.table.rowCount() == 0

    # A good audit, then a failing one: every view shows the good one again.
    window.open(demo["collapsed"], demo["features"])
    wait_views(qtbot, window)
    good = window.snapshot
    assert not window.state.failure and "Audit failed" not in window.diagnosis.summary.text()
    window.open(demo["healthy"], [tmp_path / "nan.npy"])
    qtbot.waitUntil(lambda: bool(window.state.failure), timeout=20_000)
    qtbot.waitUntil(lambda: window.views_ready(), timeout=10_000)
    assert window.session.name == "collapsed.pt" and window.snapshot is good
    assert "Audit failed" in window.diagnosis.summary.text() and window.diagnosis.verdicts == good.verdicts
    assert "partial" not in window.dead_codes.header.text() and "partial" not in window.histogram.header.text()
    assert "heldout.npy" in window.trainer_panel.form.source_label.text()
    assert "collapsed.pt" in window.windowTitle() and "last good audit" in window.banner.text()
    assert "&#x27;" not in window.banner.text() and "&amp;" not in window.banner.text()


def test_jobs_and_the_threads_they_start_run_at_the_windows_priority(loaded, qtbot):
    """A niced job made every thread it started (the CPU search workers, the feature reader) niced too:
    the window's audit ran at a third of the command line's speed on a shared machine."""
    import os
    import threading

    from rvq_viewer.gui.workers import JobSlot

    def own_nice(cancel):
        started = {}
        t = threading.Thread(target=lambda: started.update(nice=os.getpriority(os.PRIO_PROCESS,
                                                                                threading.get_native_id())))
        t.start()
        t.join()
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id()), started["nice"]

    main = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    slot = JobSlot("nice-check")
    with qtbot.waitSignal(slot.busy_changed, timeout=5000, check_params_cb=lambda busy: not busy):
        seen = []
        slot.start(own_nice, returned=seen.append)
    assert seen == [(main, main)]
    workers = [t for t in threading.enumerate() if t.name.startswith("rvq-worker-")]
    assert workers and all(os.getpriority(os.PRIO_PROCESS, t.native_id) == main for t in workers)


def test_empty_residuals_show_no_legend_or_layer_line(window, qtbot, demo):
    view = window.residuals
    assert view.empty[0].shown and not view.legend.isVisible() and not view.select_line.isVisible()
    window.open(demo["healthy"], demo["features"])
    qtbot.waitUntil(lambda: view.ready, timeout=60_000)
    assert view.legend.isVisible() and view.select_line.isVisible()
