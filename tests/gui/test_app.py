"""Settings, recent files, layout, drag and drop, export, and `main()` run as a real process."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PySide6.QtCore import QMimeData, QPoint, Qt, QUrl
from PySide6.QtGui import QDropEvent, QImage

from rvq_viewer import cli
from rvq_viewer.gui import settings
from rvq_viewer.gui.main_window import MainWindow
from rvq_viewer.gui.menus import fill_recent

from .conftest import ROOT, wait_views


def test_settings_defaults_types_and_recent():
    assert settings.get("histogram/log") is True
    assert settings.get("device") == "auto"
    settings.set("device", "cpu")
    assert settings.get("device") == "cpu"
    try:
        settings.get("no/such/key")
    except KeyError:
        pass
    else:
        raise AssertionError("unknown keys must raise")
    for i in range(settings.MAX_RECENT + 3):
        settings.add_recent(f"/tmp/ckpt{i}.pt", [f"/tmp/f{i}.npy"])
    entries = settings.recent()
    assert len(entries) == settings.MAX_RECENT and entries[0]["checkpoint"].endswith("ckpt12.pt")
    assert "rvq-viewer.ini" in str(settings.settings_file())   # the test's temporary file


def test_layout_toggles_and_recent_files_are_restored(qtbot, demo):
    first = MainWindow()
    qtbot.addWidget(first)
    first.show()
    first.open(demo["healthy"], demo["features"])
    wait_views(qtbot, first)
    first.docks["dead_codes"].hide()
    first.histogram.sorted_box.setChecked(True)
    first.close()
    assert settings.recent()[0]["checkpoint"] == str(demo["healthy"].resolve())

    second = MainWindow()
    qtbot.addWidget(second)
    second.show()
    assert second.docks["dead_codes"].isHidden() and not second.docks["histogram"].isHidden()
    assert second.histogram.sorted_box.isChecked()
    second.reset_layout()
    assert not second.docks["dead_codes"].isHidden()
    fill_recent(second)
    labels = [a.text() for a in second.commands.menu("file.recent").actions()]
    assert any("healthy.pt" in label for label in labels)
    second.close()


def _drop(window, paths):
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    event = QDropEvent(QPoint(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                       Qt.KeyboardModifier.NoModifier)
    window.dropEvent(event)


def test_drag_and_drop_checkpoint_and_features(window, qtbot, demo):
    _drop(window, [demo["features"][0], demo["collapsed"]])     # order does not matter
    wait_views(qtbot, window)
    assert window.session.name == "collapsed.pt"
    assert window.session.features == demo["features"]
    features_dir = demo["features"][0].parent / "features"
    _drop(window, [features_dir])                               # a folder: features for the open checkpoint
    wait_views(qtbot, window)
    assert window.session.name == "collapsed.pt" and window.session.features == [features_dir]
    assert window.snapshot.result.frames == window.session.total_frames


def test_exports_match_the_cli(loaded, tmp_path, demo, qtbot):
    with qtbot.waitSignal(loaded.exporter.folder_written, timeout=60_000) as written:
        assert loaded.exporter.export_all(tmp_path / "out")
        assert loaded.exporter.task.isVisible()           # progress and Cancel while it writes
    files = written.args[0]
    assert not loaded.exporter.task.isVisible()
    n = loaded.session.n_q
    names = sorted(p.name for p in files)
    assert names == sorted(["overview.csv", "audit.json", "report.html", "centroid_map.png", "residuals.png",
                            *(f"{kind}_layer{i}.{ext}" for i in range(n)
                              for kind, ext in (("usage", "csv"), ("dead_codes", "csv"), ("histogram", "png")))])
    for png in ("histogram_layer0.png", "histogram_layer3.png", "centroid_map.png", "residuals.png"):
        image = QImage(str(tmp_path / "out" / png))
        assert not image.isNull() and image.width() >= 1000
        # a title band on top: dark text pixels on white, above the plot
        band = [image.pixelColor(x, y).lightness() for x in range(10, 600, 2) for y in range(0, 60, 2)]
        assert min(band) < 120 and max(band) > 250
    rows = list(csv.reader((tmp_path / "out" / "overview.csv").open()))
    assert rows[0][:4] == ["layer", "codebook_size", "used", "utilization"] and len(rows) == 1 + n
    for row, rep in zip(rows[1:], loaded.snapshot.result.layers):
        assert int(row[2]) == rep.used and float(row[3]) == pytest.approx(rep.utilization)
        assert row[11] in ("ok", "warn", "bad") and not row[12].startswith(("✔", "✖", "▲"))
    for layer in range(n):
        usage = list(csv.reader((tmp_path / "out" / f"usage_layer{layer}.csv").open()))
        counts = loaded.snapshot.counts[layer]
        assert [int(r[2]) for r in usage[1:]] == counts.tolist()
        dead = list(csv.reader((tmp_path / "out" / f"dead_codes_layer{layer}.csv").open()))
        assert dead[0][:3] == ["layer", "code", "uses"]
        unused = {int(r[1]) for r in dead[1:] if r[3] == "True"}
        assert unused == set(np.flatnonzero(counts == 0).tolist())
    # the histogram of the selected layer in the window is the one shown there: the export left it alone
    assert loaded.selection.layer == 0
    report = (tmp_path / "out" / "report.html").read_text()
    assert report.startswith("<!DOCTYPE html>") and "Layer 3" in report

    cli_json = tmp_path / "cli.json"
    assert cli.main(["audit", str(demo["healthy"]), *map(str, demo["features"]), "--json", str(cli_json),
                     "--quiet"]) == 0
    ours, theirs = (json.loads((p).read_text()) for p in (tmp_path / "out" / "audit.json", cli_json))
    assert ours.keys() == theirs.keys()
    assert [v["id"] for v in ours.get("verdicts", [])] == [v["id"] for v in theirs.get("verdicts", [])]
    assert ours["frames"] == theirs["frames"] and ours["quantizer"] == theirs["quantizer"]
    for a, b in zip(ours["layers"], theirs["layers"]):
        assert a["counts"] == b["counts"] and a["dead_codes"] == b["dead_codes"]
        assert abs(a["rel_error"] - b["rel_error"]) < 1e-9


def test_export_to_an_unwritable_place_is_a_message(loaded, tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    assert not loaded.exporter.export(loaded.overview.export_csv, target / "sub" / "overview.csv")
    assert loaded.banner.isVisible() and "cannot export" in loaded.banner.text()


def test_main_in_a_subprocess_writes_a_screenshot(tmp_path):
    out = tmp_path / "shot.png"
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", RVQ_VIEWER_SETTINGS=str(tmp_path / "s.ini"),
               RVQ_VIEWER_CACHE=str(tmp_path / "cache"))
    proc = subprocess.run([sys.executable, "-m", "rvq_viewer", "--screenshot", str(out), "--no-umap",
                           "--view", "histogram", "--layer", "1", "--timeout", "60"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    image = QImage(str(out))
    assert not image.isNull() and image.width() > 300

    bad = subprocess.run([sys.executable, "-m", "rvq_viewer", "--screenshot", str(tmp_path / "x.png"),
                          "--no-umap", str(tmp_path / "missing.pt"), str(ROOT / "assets/demo/heldout.npy"),
                          "--timeout", "30"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "missing.pt" in bad.stderr


def test_a_dropped_save_pretrained_folder_is_the_checkpoint(window, qtbot, tmp_path, monkeypatch):
    import warnings

    import tqdm
    monkeypatch.setattr(tqdm.tqdm, "monitor_interval", 0)    # no monitor thread left behind by its bars

    from fixtures_transformers import frames, randomise_codebooks, small, their_codes, transformers
    model = randomise_codebooks(transformers.EncodecModel(small("encodec")), 11)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save_pretrained(tmp_path / "encodec-small")
    x = frames(16, n=400)
    np.save(tmp_path / "feats.npy", x.numpy())
    _drop(window, [tmp_path / "feats.npy", tmp_path / "encodec-small"])   # a folder of weights, not features
    wait_views(qtbot, window)
    assert window.session.checkpoint == tmp_path / "encodec-small"
    assert window.session.features == [tmp_path / "feats.npy"]
    codes = their_codes(lambda h: model.quantizer.encode(h), x)
    for layer, counts in enumerate(window.snapshot.counts):
        assert counts.tolist() == np.bincount(codes[layer].numpy(), minlength=64).tolist()
