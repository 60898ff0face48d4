"""The Diagnosis panel: verdicts grouped by severity, details, and navigation to the evidence."""

from __future__ import annotations

import dataclasses

from PySide6.QtCore import Qt
from PySide6.QtTest import QTest

from rvq_viewer.analysis.diagnosis import Verdict, diagnose
from rvq_viewer.gui.panels.diagnosis_panel import (DiagnosisPanel, compact_evidence, ordered_groups, short_title,
                                                   target_of)
from rvq_viewer.gui.state import AppState
from rvq_viewer.io import load_quantizer

from .conftest import wait_views


def _verdicts() -> list[Verdict]:
    return [
        Verdict("summary", None, "collapse", "Collapsed: layers 1", {"collapsed_layers": [1], "warning_layers": [0]},
                "1 of 2 layers meet a collapse rule.", "k-means init.", "histogram", "random init"),
        Verdict("layer_ok", 0, "ok", "Layer 0: healthy", {"utilization": 0.9}, "fine", view="histogram"),
        Verdict("dominant_codes", 0, "warning", "Layer 0: 6 codes take 28% of frames",
                {"top_codes": 6, "top_share": 0.28, "warn_at": 0.23, "codes": [25, 111, 131]},
                "The top 1% of codes take 28%.", "expiry", "histogram", "a few codes absorb frames"),
        Verdict("low_utilization", 1, "collapse", "Layer 1: 446 of 512 codes unused",
                {"used": 66, "codebook_size": 512, "collapse_below": 0.25}, "66 of 512 codes are used.",
                "k-means init", "dead_codes", "codes initialised away from the data"),
        Verdict("duplicate_centroids", 1, "info", "Layer 1: 3 near-duplicate centroids",
                {"pairs": [[7, 9, 0.001], [3, 4, 0.002]], "exact": 0}, "Three pairs.", "", "centroids"),
    ]


def test_helpers_group_target_and_compact_evidence():
    vs = _verdicts()
    groups = ordered_groups(vs)
    assert [s for s, _ in groups] == ["collapse", "warning", "info", "ok"]          # collapse first
    assert all(v.id != "summary" for _, g in groups for v in g)
    assert target_of(vs[0]) == (1, None)          # whole quantizer: its first collapsed layer
    assert target_of(vs[2]) == (0, 25)            # dominant codes: the first code named
    assert target_of(vs[3]) == (1, None)
    assert target_of(vs[4]) == (1, 7)             # near-duplicate pairs: the first code of the first pair
    shown = dict(compact_evidence(vs[2].evidence))
    assert "warn_at" not in shown and shown["top_codes"] == "6" and shown["codes"] == "[25, 111, 131]"
    assert short_title(vs[3]) == "446 of 512 codes unused" and short_title(vs[0]) == vs[0].title


def test_panel_lists_by_severity_and_clicking_goes_to_the_evidence(qtbot):
    state = AppState()
    selection = state.selection
    selection.reset(2)
    asked = []
    state.view_requested.connect(asked.append)
    panel = DiagnosisPanel(state)
    qtbot.addWidget(panel)
    panel.resize(380, 600)
    panel.show()
    titles = []
    panel.headline_changed.connect(titles.append)
    vs = _verdicts()
    panel.set_verdicts(vs)

    heads = [panel.tree.topLevelItem(i).text(0) for i in range(panel.tree.topLevelItemCount())]
    assert heads == ["✖  Collapse (1)", "▲  Warning (1)", "●  Info (1)", "✔  OK (1)"]
    assert not panel.tree.topLevelItem(3).isExpanded() and panel.tree.topLevelItem(0).isExpanded()
    rows = panel.verdict_items()
    assert [r.text(0) for r in rows][:3] == ["446 of 512 codes unused", "6 codes take 28% of frames",
                                            "3 near-duplicate centroids"]
    assert [r.text(1) for r in rows] == ["1", "0", "1", "0"]
    assert "Collapsed: layers 1" in panel.summary.text() and "1 collapse" in panel.summary.text()
    assert titles[-1] == "Diagnosis · ✖ 1 collapse"
    assert "Collapsed: layers 1" in panel.details.toPlainText()       # the summary until one is chosen

    # A real click on the dominant-codes row: layer 0, its first code, the histogram asked for.
    item = panel.item_for(vs[2])
    rect = panel.tree.visualItemRect(item)
    QTest.mouseClick(panel.tree.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert (selection.layer, selection.code) == (0, 25)
    assert asked == ["histogram"]
    text = panel.details.toPlainText()
    for part in ("The top 1% of codes take 28%.", "Likely cause: A few codes absorb frames", "Try: Expiry",
                 "top_share = 0.28", "Usage histogram, layer 0, code 25"):
        assert part in text, part
    assert item.font(0).bold()                                       # verdicts of the selected layer

    # Keyboard: moving shows details only; Enter takes the user there.
    panel.tree.setFocus()
    panel.tree.setCurrentItem(panel.item_for(vs[3]))
    assert "66 of 512 codes are used." in panel.details.toPlainText() and asked == ["histogram"]
    QTest.keyClick(panel.tree, Qt.Key.Key_Return)
    assert (selection.layer, selection.code) == (1, -1) and asked[-1] == "dead_codes"
    # The details' link does the same.
    panel.details.anchorClicked.emit(panel.details.source())
    assert asked[-1] == "dead_codes"

    panel.set_verdicts(None, "Auditing…")
    assert panel.tree.topLevelItemCount() == 0 and "Auditing" in panel.summary.text()
    assert titles[-1] == "Diagnosis"


def test_panel_in_the_window_follows_the_audit_and_raises_docks(window, qtbot, demo):
    panel, dock = window.diagnosis, window.docks["diagnosis"]
    assert window.docks["diagnosis"] is dock and dock.isVisible()
    assert window.dockWidgetArea(dock) == Qt.DockWidgetArea.LeftDockWidgetArea
    view_menu = next(a.menu() for a in window.menuBar().actions() if a.text() == "&View")
    assert dock.toggleViewAction() in view_menu.actions()

    window.open(demo["collapsed"], demo["features"])
    wait_views(qtbot, window)
    qtbot.waitUntil(lambda: panel.verdicts is not None, timeout=5000)
    snap = window.snapshot
    assert panel.verdicts == snap.verdicts
    expected = diagnose(snap.result, window.session.quantizer)
    assert [v.key for v in panel.verdicts] == [v.key for v in expected]
    assert "Collapsed" in panel.summary.text() and dock.windowTitle().startswith("Diagnosis · ✖")
    assert panel.verdict_items()[0].data(0, Qt.ItemDataRole.UserRole + 1).severity == "collapse"

    # The dead-codes dock hidden, then a verdict that points at it brings it back.
    window.docks["dead_codes"].hide()
    unused = next(v for v in panel.verdicts if v.id == "low_utilization" and v.layer == 2)
    panel.activate(unused)
    assert window.selection.layer == 2 and window.docks["dead_codes"].isVisible()
    dominant = next(v for v in panel.verdicts if v.id == "dominant_codes" and v.layer == 3)
    window.docks["histogram"].hide()
    panel.activate(dominant)
    assert (window.selection.layer, window.selection.code) == (3, dominant.evidence["codes"][0])
    assert window.docks["histogram"].isVisible()
    qtbot.waitUntil(lambda: window.views_ready(), timeout=10_000)
    assert window.dead_codes.table.layer == 3

    # A re-run clears the verdicts while it streams (none stale), and brings them back when complete.
    cancelled = dataclasses.replace(snap, complete=False, cancelled=True, final=False)
    panel.set_snapshot(cancelled)
    assert panel.verdicts is None and "cancelled" in panel.summary.text()
    window.start_audit()
    qtbot.waitUntil(lambda: panel.verdicts is not None and window.snapshot is not snap, timeout=20_000)
    assert panel.ready


def test_a_failed_diagnosis_is_a_note_not_a_crash(window, qtbot, demo):
    window.open(demo["healthy"], demo["features"])
    wait_views(qtbot, window)
    panel = window.diagnosis
    broken = dataclasses.replace(window.snapshot, verdicts=None, final=False, diagnosis_error="diagnosis failed: boom")
    panel.set_snapshot(broken)
    assert "diagnosis failed: boom" in panel.summary.text()
    assert panel.tree.topLevelItemCount() == 0
    quantizer = load_quantizer(demo["healthy"])
    healthy = diagnose(window.snapshot.result, quantizer)
    panel.set_verdicts(healthy)
    assert "Healthy" in panel.summary.text()
    assert window.docks["diagnosis"].windowTitle() == "Diagnosis · ✔ healthy"


def test_the_dock_keeps_its_place_and_visibility_across_sessions(qtbot):
    from rvq_viewer.gui.main_window import MainWindow

    first = MainWindow(umap_service=None)
    qtbot.addWidget(first)
    first.show()
    dock = first.docks["diagnosis"]
    first.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)
    first.close()                                   # saves the window state

    second = MainWindow(umap_service=None)
    qtbot.addWidget(second)
    second.show()
    dock = second.docks["diagnosis"]
    assert second.dockWidgetArea(dock) == Qt.DockWidgetArea.RightDockWidgetArea and dock.isVisible()
    dock.hide()
    second.close()

    third = MainWindow(umap_service=None)
    qtbot.addWidget(third)
    third.show()
    assert not third.docks["diagnosis"].isVisible()
    third.reset_layout()
    assert third.docks["diagnosis"].isVisible()
    third.close()
