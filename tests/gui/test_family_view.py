"""FSQ and LFQ quantizers in the main window: opened with their load options, audited, and drawn by the
Levels and bits panel from the same result the CLI and the report use; File ▸ Open with options."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from rvq_viewer.gui.load_dialog import LoadOptionsDialog, parse_levels
from rvq_viewer.pipeline import AuditSpec, LoadOptions, run_audit_spec

from .conftest import ROOT, wait_views


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    spec = importlib.util.spec_from_file_location("make_family_demos", ROOT / "scripts" / "make_family_demos.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build(tmp_path_factory.mktemp("family_demos"))


def test_an_fsq_quantizer_shows_its_level_histograms(window, qtbot, demos):
    load = LoadOptions(levels=(8, 5, 5, 5))
    window.open(demos["fsq"], [demos["features"]], load=load)
    wait_views(qtbot, window)
    view = window.family_view
    assert view.drawn == "fsq" and view.isVisible()            # the family's own view comes forward
    expected = run_audit_spec(AuditSpec(demos["fsq"], (demos["features"],), load=load, device="cpu"))
    grid = expected.result.layers[0].family["grids"][0]
    heights = view.bars.opts["height"]
    assert len(heights) == 8 + 5 + 5 + 5
    assert np.allclose(heights, [s for d in grid["dims"] for s in d["shares"]])
    assert f"{grid['cells_used']:,} of 1,000 grid cells" in view.header.text()
    narrow = [v for v in window.snapshot.verdicts if v.id == "fsq_narrow_dimension"]
    assert narrow and narrow[0].evidence["dims"] == [3] and narrow[0].view == "family"
    window.show_view("family")
    assert window.docks["family"].isVisible()


def test_an_lfq_quantizer_shows_its_bits_and_their_correlations(window, qtbot, demos):
    window.open(demos["lfq"], [demos["features"]])
    wait_views(qtbot, window)
    view = window.family_view
    assert view.drawn == "lfq" and view.corr_plot.isVisible() and view.corr_plot.scene() is not None
    stats = window.snapshot.result.layers[0].family["bit_stats"][0]
    assert np.allclose(view.bars.opts["height"], stats["ones"]) and stats["dead"] == [13]
    assert view.image.image.shape == (14, 14)
    assert "dead bits: 13" in view.header.text()
    ids = {v.id: v for v in window.snapshot.verdicts}
    assert ids["lfq_dead_bit"].severity == "collapse" and ids["lfq_correlated_bits"].evidence["pairs"] == [[11, 12]]


def test_missing_levels_say_which_option_then_another_file_opens_without_them(window, qtbot, demos, demo):
    window.open(demos["fsq"], [demos["features"]])
    qtbot.waitUntil(lambda: window.banner.isVisible(), timeout=20_000)
    assert "--levels" in window.banner.text() and "Open with options" in window.banner.text()
    window.open(demos["fsq"], [demos["features"]], load=LoadOptions(levels=(8, 5, 5, 5)))
    wait_views(qtbot, window)
    window.open(demo["healthy"], demo["features"])                # the FSQ's levels are not carried over
    wait_views(qtbot, window)
    assert window.session.spec.load == LoadOptions() and window.family_view.drawn == ""


def test_open_with_options_dialog(qtbot, demos):
    dialog = LoadOptionsDialog(None, str(demos["fsq"]))
    qtbot.addWidget(dialog)
    dialog.levels_edit.setText("8, 5,5,5")
    dialog.stages_spin.setValue(2)
    assert dialog.options() == LoadOptions(levels=(8, 5, 5, 5), stages=2)
    dialog.levels_edit.setText("8,1,5")
    dialog._accept()
    assert "integers >= 2" in dialog.error.text() and dialog.result() == 0
    assert parse_levels("2x15625_700bps") == "2x15625_700bps" and parse_levels(" ") is None
    dialog.levels_edit.setText("8,5,5,5")
    dialog.format_box.setCurrentIndex(dialog.format_box.findData("fsq"))
    assert dialog.options().format == "fsq"
