"""Audit > Run on: the window's audit on a Dask cluster gives the local audit's numbers; a bad address
is one line in the Diagnosis and the banner, and the last good audit stays."""

from __future__ import annotations

import numpy as np
import pytest

from .conftest import wait_views

pytest.importorskip("distributed")


def test_the_window_audits_on_a_local_dask_cluster(loaded, qtbot):
    win = loaded
    local = [c.copy() for c in win.snapshot.counts]
    local_verdicts = sorted((v.id, v.layer, v.severity) for v in win.snapshot.verdicts)
    assert win.commands["audit.run_local"].isChecked()
    win.set_cluster("local:1")
    assert win.commands["audit.run_dask"].isChecked() and "local:1" in win.commands["audit.run_dask"].text()
    qtbot.waitUntil(lambda: win.snapshot is not None and win.snapshot.complete
                    and win.snapshot.device == "dask local:1", timeout=180_000)
    wait_views(qtbot, win, timeout=60_000)
    assert all(np.array_equal(a, b) for a, b in zip(local, win.snapshot.counts))
    assert sorted((v.id, v.layer, v.severity) for v in win.snapshot.verdicts) == local_verdicts
    assert "audit on dask local:1: complete" in win.overview.info.text()
    assert win.snapshot.outcome.shards is not None
    win.set_cluster("")
    qtbot.waitUntil(lambda: win.snapshot.complete and win.snapshot.device != "dask local:1", timeout=60_000)


def test_a_bad_cluster_address_is_one_line_and_keeps_the_last_good_audit(loaded, qtbot):
    win = loaded
    good = win.snapshot
    win.set_cluster("local:zero")
    qtbot.waitUntil(lambda: bool(win.state.failure), timeout=30_000)
    assert win.state.failure.startswith("Dask cluster local:zero: expected local, local:N")
    assert "\n" not in win.state.failure and "--dask" not in win.state.failure
    assert win.snapshot is good
    assert "Audit failed: Dask cluster local:zero" in win.diagnosis.summary.text()
    win.set_cluster("")
