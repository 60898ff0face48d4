"""The Compare window, File ▸ Compare with…, and File ▸ Export ▸ HTML report…"""

from __future__ import annotations

import re
import threading

import numpy as np
import pytest
from PySide6.QtCore import QPointF, Qt
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QFileDialog
from PySide6.QtTest import QTest

from rvq_viewer import cli
from rvq_viewer.analysis.compare import compare, rank_frequency
from rvq_viewer.app.compare_jobs import CompareSpec, compare_job, html_path
from rvq_viewer.gui.compare import CompareDialog
from rvq_viewer.gui.compare.window import HTML_FILTER

from .conftest import wait_views


def _run(job):
    try:
        while True:
            next(job)
    except StopIteration as stop:
        return stop.value


def test_spec_labels_and_the_job_without_qt(demo, tmp_path):
    two = CompareSpec(demo["healthy"], demo["features"], demo["collapsed"])
    assert two.labels() == ("healthy.pt", "collapsed.pt") and two.same_features and not two.same_checkpoint
    one = CompareSpec(demo["healthy"], demo["features"], demo["healthy"], [demo["healthy"].parent / "features"])
    assert one.labels() == ("healthy.pt on heldout.npy", "healthy.pt on features")
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "healthy.pt").write_bytes(demo["healthy"].read_bytes())
    clash = CompareSpec(demo["healthy"], demo["features"], tmp_path / "x" / "healthy.pt")
    assert clash.labels() == ("demo/healthy.pt", "x/healthy.pt")
    assert html_path(tmp_path / "r") == tmp_path / "r.html" and html_path("a.HTM").name == "a.HTM"

    outcome = _run(compare_job(threading.Event(), one))
    assert outcome.comparison.kind == "features"             # one quantizer on two feature sets
    assert outcome.b.quantizer is outcome.a.quantizer
    assert outcome.comparison.frames_a != outcome.comparison.frames_b
    stop = threading.Event()
    stop.set()
    with pytest.raises(Exception, match="cancelled"):
        _run(compare_job(stop, two))


def test_dialog_checks_what_can_be_compared(qtbot, demo, tmp_path):
    dialog = CompareDialog(None, demo["healthy"], demo["features"])
    qtbot.addWidget(dialog)
    ok = dialog.buttons.button(QDialogButtonBox.StandardButton.Ok)
    assert not ok.isEnabled() and "B is A" in dialog.hint.text()
    dialog.ckpt_b.setText(str(demo["collapsed"]))
    assert ok.isEnabled()
    spec = dialog.spec("cpu")
    assert spec.checkpoint_b == demo["collapsed"] and spec.effective_features_b == demo["features"]
    assert spec.device == "cpu"
    dialog.feat_b.setText(str(tmp_path / "missing.npy"))
    assert not ok.isEnabled() and "no such file" in dialog.hint.text()
    dialog.ckpt_b.setText(str(demo["healthy"]))
    dialog.feat_b.setText(f"{demo['healthy'].parent / 'features'}")
    assert ok.isEnabled()
    dialog.feat_a.setText("")
    assert not ok.isEnabled() and "features A" in dialog.hint.text()


def test_compare_healthy_with_collapsed_side_by_side(window, qtbot, demo, monkeypatch):
    installed = window.compare
    act_compare = window.commands["file.compare"]
    file_menu = window.commands.menu("file")
    texts = [a.text() for a in file_menu.actions()]
    assert texts.index("Co&mpare with…") < texts.index("&Export")
    assert window.commands.menu("file.export").actions()[0] is window.commands["export.html"]
    assert not act_compare.isEnabled()

    window.open(demo["healthy"], demo["features"])
    wait_views(qtbot, window)
    assert act_compare.isEnabled()

    # File ▸ Compare with…: the dialog comes up with A filled in; B = the collapsed checkpoint.
    def fake_exec(dialog):
        assert dialog.ckpt_a.text() == str(demo["healthy"])
        dialog.ckpt_b.setText(str(demo["collapsed"]))
        return QDialog.DialogCode.Accepted
    monkeypatch.setattr(CompareDialog, "exec", fake_exec)
    act_compare.trigger()
    cw = installed.window
    with qtbot.waitSignal(cw.comparison_ready, timeout=30_000) as blocker:
        pass
    outcome = blocker.args[0]
    assert outcome.a.result is window.snapshot.result          # A's audit reused, not run again
    c = outcome.comparison
    assert c.kind == "quantizers" and (c.label_a, c.label_b) == ("healthy.pt", "collapsed.pt")
    expected = compare(outcome.a.result, outcome.b.result, outcome.a.quantizer, outcome.b.quantizer)
    qtbot.waitUntil(lambda: cw.ready, timeout=5000)
    assert cw.isVisible()
    assert "Two checkpoints on the same features" in cw.header.text() and "Collapsed" in cw.header.text()

    # Deltas: A, B and Δ rows per layer.
    table = cw.deltas
    assert table.rowCount() == 3 * 4
    for layer in range(4):
        d = expected.layers[layer]
        assert table.item(3 * layer, 2).text() == f"{d.a['used']:,} / 512"
        assert table.item(3 * layer + 1, 2).text() == f"{d.b['used']:,} / 512"
        assert table.item(3 * layer + 2, 2).text() == f"{d.delta['used']:+,d}"
        assert table.item(3 * layer + 2, 3).text() == f"{100 * d.delta['utilization']:+.1f} pp"
    assert table.item(2, 3).foreground().color().name().lower() == "#c62828"    # B is worse: red

    # Histograms on one axis: two step curves; two checkpoints start rank-frequency sorted.
    assert cw.sorted_box.isChecked()
    cw.log_box.setChecked(False)
    xa, ya = cw.usage.usage_a.curve.getData()
    np.testing.assert_allclose(ya, rank_frequency(c.usage_a[0]))
    assert len(xa) == len(ya) + 1                                      # stepMode="center"
    cw.sorted_box.setChecked(False)
    _, ya = cw.usage.usage_a.curve.getData()
    _, yb = cw.usage.usage_b.curve.getData()
    np.testing.assert_array_equal(ya, c.usage_a[0])
    np.testing.assert_array_equal(yb, c.usage_b[0])

    # Joint projection: both sets, used and unused apart, on the PCA fitted once on both.
    p = expected.projections[0]
    assert len(cw.projection.points_a.data) + len(cw.projection.points_a_unused.data) == 512
    assert len(cw.projection.points_b.data) == int((np.asarray(c.usage_b[0]) > 0).sum())
    np.testing.assert_allclose(np.sort(cw.projection.points_b.data["x"]), np.sort(p.b[np.asarray(c.usage_b[0]) > 0, 0]),
                               rtol=1e-6)

    # Matching table <-> selection: a row rings A's code and its nearest B code.
    match = expected.matches[0]
    model, view = cw.match_model, cw.match_view
    assert model.rowCount() == 512
    row = model.row_of(25)
    view.selectRow(row)
    assert (cw.selection.layer, cw.selection.code) == (0, 25)
    b = int(match.index[25])
    assert model.index(row, 2).data() == str(b)
    np.testing.assert_allclose([cw.projection.ring_a.data["x"][0], cw.projection.ring_a.data["y"][0]], p.a[25], rtol=1e-6)
    np.testing.assert_allclose([cw.projection.ring_b.data["x"][0], cw.projection.ring_b.data["y"][0]], p.b[b], rtol=1e-6)
    assert f"B code {b}" in cw.projection.code_label.text()
    assert cw.usage.code_line_a.value() == pytest.approx(25.5)

    # Sorting by distance keeps the selection on the same code.
    view.sortByColumn(3, Qt.SortOrder.DescendingOrder)
    top = model.code_at(0)
    assert match.distance[top] == pytest.approx(match.distance.max())
    cw.selection.set_code(0, 25)
    assert view.currentIndex().row() == model.row_of(25)

    # A click on a row after scrolling selects that row's code, and the row stays the one highlighted.
    view.scrollToTop()
    view.verticalScrollBar().setValue(view.verticalScrollBar().maximum() // 2)
    qtbot.wait(50)
    clicked_row = view.rowAt(view.viewport().height() // 2)
    rect = view.visualRect(model.index(clicked_row, 0))
    QTest.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert cw.selection.code == model.code_at(clicked_row)
    assert view.currentIndex().row() == clicked_row and view.selectionModel().isRowSelected(clicked_row)
    assert view.rowAt(rect.center().y()) == clicked_row                 # the table did not scroll under it
    assert model.headerData(4, Qt.Orientation.Horizontal) == "Dist. / spacing"

    # A click on a point of A selects it.
    target = 300
    vb = cw.projection.plot.getPlotItem().getViewBox()
    cw.selection.set_code(0, -1)
    scene = vb.mapViewToScene(QPointF(*p.a[target]))
    viewport = cw.projection.plot.mapFromScene(scene)
    QTest.mouseClick(cw.projection.plot.viewport(), Qt.MouseButton.LeftButton, pos=viewport)
    qtbot.waitUntil(lambda: cw.selection.code >= 0, timeout=2000)
    picked = cw.selection.code
    assert np.linalg.norm(p.a[picked] - p.a[target]) < 0.5

    # Another layer redraws everything for it.
    cw.layer_box.setCurrentIndex(2)
    assert cw.selection.layer == 2 and model.rowCount() == 512 and "Layer 2" in cw.usage.label.text()
    assert table.selectionModel().isRowSelected(7)

    # A is the checkpoint open in the main window: one selected code in both windows, either way.
    assert installed.codes_linked()
    view.selectRow(model.row_of(44))
    assert (window.selection.layer, window.selection.code) == (2, 44)
    window.selection.set_code(1, 40)
    assert (cw.selection.layer, cw.selection.code) == (1, 40)
    assert window.histogram.select_line.isVisible() and cw.projection.ring_a.isVisible()
    # Another checkpoint in the main window: its codes are not A's, the selections go their own ways.
    window.open(demo["collapsed"], demo["features"])
    wait_views(qtbot, window)
    assert not installed.codes_linked()
    cw.selection.set_code(0, 7)
    assert window.selection.code == -1
    # Ctrl+W closes the compare window
    cw.activateWindow()
    QTest.keyClick(cw, Qt.Key.Key_W, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: not cw.isVisible(), timeout=2000)


def test_cancel_fail_and_close_leave_no_thread(window, qtbot, demo, tmp_path):
    installed = window.compare
    window.open(demo["healthy"], demo["features"])
    wait_views(qtbot, window)
    spec = CompareSpec(demo["healthy"], demo["features"], demo["healthy"], [demo["healthy"].parent / "features"],
                       "cpu")
    cw = installed.start(spec)
    assert cw.busy and cw.cancel_button.isVisible()
    fired = []
    cw.comparison_ready.connect(fired.append)
    cw.cancel()
    assert not cw.busy and not cw.cancel_button.isVisible()
    qtbot.wait(300)
    assert fired == [] and cw.outcome is None

    broken = tmp_path / "broken.pt"
    broken.write_text("not a checkpoint")
    with qtbot.waitSignal(cw.failed, timeout=20_000) as failure:
        installed.start(CompareSpec(demo["healthy"], demo["features"], broken))
    assert "broken.pt" in failure.args[0] and "broken.pt" in cw.banner.text() and cw.outcome is None

    installed.start(spec)
    assert cw.busy
    window.close()                             # closing the main window stops the comparison too
    assert not cw.busy and not cw.isVisible()


def _strip_stamp(text: str) -> str:
    """The report without its time stamp and the SVG clip-path ids (made from object addresses)."""
    text = re.sub(r"rvq-viewer [^ ]+ &middot; [0-9-]+ [0-9:]+ [^<]*</p>", "STAMP</p>", text)
    return re.sub(r"\bc[0-9a-f]{6,}\b", "CLIP", text)


def test_html_reports_match_the_cli(window, qtbot, demo, tmp_path, monkeypatch):
    installed, exporter, act_html = window.compare, window.exporter, window.commands["export.html"]
    assert not act_html.isEnabled()
    window.open(demo["healthy"], demo["features"])
    wait_views(qtbot, window)
    assert act_html.isEnabled()

    # Export ▸ HTML report… (the save dialog answered): what `rvq-viewer report` writes.
    ours = tmp_path / "ours"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(ours), HTML))
    with qtbot.waitSignal(exporter.report_written, timeout=30_000) as blocker:
        act_html.trigger()
    assert blocker.args[0] == tmp_path / "ours.html"
    theirs = tmp_path / "cli.html"
    assert cli.main(["report", str(demo["healthy"]), *map(str, demo["features"]), "--html", str(theirs),
                     "--quiet", "--device", "cpu"]) == 0
    assert _strip_stamp((tmp_path / "ours.html").read_text()) == _strip_stamp(theirs.read_text())

    # With the comparison open, the main window's report carries it; and the compare window's own.
    cw = installed.start(CompareSpec(demo["healthy"], demo["features"], demo["collapsed"]))
    qtbot.waitUntil(lambda: cw.ready, timeout=30_000)
    with qtbot.waitSignal(exporter.report_written, timeout=30_000):
        assert exporter.export_html(tmp_path / "with.html")
    text = (tmp_path / "with.html").read_text()
    assert "Comparison: two quantizers" in text and "collapsed.pt" in text
    cli_cmp = tmp_path / "cli_cmp.html"
    assert cli.main(["report", str(demo["healthy"]), *map(str, demo["features"]), "--compare",
                     str(demo["collapsed"]), "--html", str(cli_cmp), "--quiet", "--device", "cpu"]) == 0
    body = lambda t: _strip_stamp(t).split("<h2>Comparison")[1]  # noqa: E731 - labels differ (names vs paths)
    assert re.sub(r"<b>[AB]</b> = [^(]*\(", "", body(text)) == re.sub(r"<b>[AB]</b> = [^(]*\(", "", body(
        cli_cmp.read_text()))
    with qtbot.waitSignal(cw.report_written, timeout=30_000):
        assert cw.export_html(tmp_path / "cmp.html")
    assert "Comparison: two quantizers" in (tmp_path / "cmp.html").read_text()

    # A place that cannot be written is a message, not a crash.
    blocker_file = tmp_path / "file"
    blocker_file.write_text("x")
    with qtbot.waitSignal(exporter.report_failed, timeout=30_000):
        exporter.export_html(blocker_file / "sub" / "r.html")
    assert "cannot write the HTML report" in window.banner.text()


HTML = HTML_FILTER
