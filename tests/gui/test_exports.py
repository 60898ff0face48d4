"""Exports worth sharing: the HTML report shows progress and can be cancelled without leaving a file,
PNG exports carry a title, dialogs open where the last export went."""

from __future__ import annotations

import time

from PySide6.QtGui import QImage

from rvq_viewer.gui import settings
from rvq_viewer.locations import demo_paths


def test_html_export_shows_progress_and_cancels_leaving_no_file(loaded, qtbot, tmp_path, monkeypatch):
    from rvq_viewer.report import charts
    slow = charts.centroid_chart

    def centroid_chart(*args, **kwargs):           # a big codebook's chart takes a while
        time.sleep(0.4)
        return slow(*args, **kwargs)
    monkeypatch.setattr(charts, "centroid_chart", centroid_chart)
    ex = loaded.exporter
    steps = []
    (tmp_path / "out").mkdir()
    target = tmp_path / "out" / "r.html"
    assert ex.export_html(target)
    assert ex.task.isVisible() and ex.task.cancel_button.isVisible()
    qtbot.waitUntil(lambda: "layer 0 done" in ex.task.label.text(), timeout=20_000)
    steps.append(ex.task.bar.value())
    assert 0 < steps[0] < 1000
    ex.task.cancel_button.click()
    qtbot.wait(1500)                                   # the worker stops at its next part
    assert not ex.task.isVisible() and not ex.report_slot.busy
    assert "Export cancelled" in loaded.statusBar().currentMessage()
    assert list((tmp_path / "out").iterdir()) == []    # no report, no temporary file
    # and a report that is let run is written whole
    monkeypatch.setattr(charts, "centroid_chart", slow)
    with qtbot.waitSignal(ex.report_written, timeout=30_000):
        ex.export_html(target)
    assert target.read_text().rstrip().endswith("</html>")


def test_png_exports_are_titled(loaded, tmp_path):
    for view, name in ((loaded.histogram, "h.png"), (loaded.map, "m.png"), (loaded.residuals, "r.png")):
        view.export_png(tmp_path / name)
        image = QImage(str(tmp_path / name))
        assert not image.isNull() and image.width() >= 1000
    title = loaded.histogram.export_title("Uses per code", 0)
    assert title == f"Uses per code · healthy.pt · layer 0 · {loaded.snapshot.result.frames:,} frames"


def test_export_dialogs_open_where_the_last_export_went(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    first = settings.export_dir()
    assert first.is_dir() and demo_paths()[0].parent != first
    settings.set("export_dir", str(tmp_path))
    assert settings.export_dir() == tmp_path
    settings.set("export_dir", str(tmp_path / "gone"))     # a folder since removed: back to the default
    assert settings.export_dir() == first
