"""The Run dock follows a run a subprocess is writing; its step slider drives the usual views; a checkpoint
folder still being written is followed by the Events dock."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
from PySide6.QtCore import QElapsedTimer, QTimer

from rvq_viewer.io.run_db import RunReader, run_files

from .conftest import DEMO, ROOT

TRAINER = textwrap.dedent("""
    import sys, time, torch
    from rvq_viewer.quant import ResidualVectorQuantization
    from rvq_viewer.monitor import CodebookMonitor
    torch.manual_seed(0)
    rvq = ResidualVectorQuantization(num_quantizers=2, dim=8, codebook_size=64, kmeans_init=True, kmeans_iters=3)
    rvq.train()
    mon = CodebookMonitor(sys.argv[1], every=3, snapshot_every=2).attach(rvq)
    g = torch.Generator().manual_seed(1)
    for step in range(int(sys.argv[2])):
        rvq(torch.randn(2, 8, 64, generator=g))
        time.sleep(0.1)
    mon.close()
""")


def start_trainer(run_dir: Path, steps: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", TRAINER, str(run_dir), str(steps)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def committed(run_dir: Path) -> list:
    files = list(run_dir.glob("*.sqlite"))
    if not files:
        return []
    try:
        reader = RunReader(files[0])
    except Exception:  # noqa: BLE001 - not yet created
        return []
    try:
        return reader.windows()
    finally:
        reader.close()


def test_the_run_dock_follows_a_run_being_written(window, qtbot, tmp_path):
    run_dir = tmp_path / "run"
    proc = start_trainer(run_dir, 150)
    view = window.run_view
    try:
        qtbot.waitUntil(lambda: len(committed(run_dir)) >= 1, timeout=60_000)
        assert not view.plots.isVisibleTo(view)        # no empty axes before there is a run
        window.open_run(run_dir)
        qtbot.waitUntil(lambda: view.arrays is not None and view.shown is not None, timeout=30_000)
        assert view.plots.isVisibleTo(view) and view.reset_button.isVisibleTo(view)
        note = window.residuals.empty[0]          # a run has counts, no residuals: said, not drawn as zeros
        qtbot.waitUntil(lambda: note.shown and "code counts only" in note.item.textItem.toPlainText(),
                        timeout=30_000)
        first = view.arrays.n_windows
        # The event loop keeps turning while the run is followed.
        clock, worst = QElapsedTimer(), [0]
        clock.start()

        def tick():
            worst[0] = max(worst[0], clock.restart())
        timer = QTimer()
        timer.timeout.connect(tick)
        timer.start(20)
        seen: dict[int, float] = {}

        def newest_arrived() -> bool:
            for row in committed(run_dir):
                if row.id < view.arrays.n_windows and row.id not in seen:
                    seen[row.id] = time.time() - row.written
            return view.arrays.n_windows >= first + 3 and view.shown == view.arrays.n_windows - 1
        qtbot.waitUntil(newest_arrived, timeout=60_000)
        timer.stop()
        latencies = [v for k, v in seen.items() if k >= first]
        # New rows appear within ~2 s of their commit (a poll every 0.5 s); the worst case gets slack for a
        # machine whose cores other processes share.
        assert latencies and float(np.median(latencies)) < 2.0 and max(latencies) < 5.0
        assert worst[0] < 1500
        # The usual views show the newest window: its counts are the database's.
        shown = window.snapshot
        reader = RunReader(run_files(run_dir)[0])
        rows = reader.window_layers(view.shown)
        reader.close()
        assert [int(layer.counts.sum()) for layer in shown.result.layers] == [r.frames for r in rows]
        assert np.array_equal(shown.result.layers[1].counts, rows[1].counts)
        assert window.session.name == "rvq-monitor.rank0.sqlite" and shown.verdicts
        # Going back in time stops following and shows that window.
        view.slider.setValue(0)
        qtbot.waitUntil(lambda: view.shown == 0 and not view.window_slot.busy, timeout=20_000)
        assert not view.follow_box.isChecked()
        reader = RunReader(run_files(run_dir)[0])
        assert np.array_equal(window.snapshot.result.layers[0].counts, reader.window_layers(0)[0].counts)
        reader.close()
        qtbot.waitUntil(lambda: window.histogram.ready and window.dead_codes.ready, timeout=20_000)
    finally:
        proc.kill()
        proc.wait(30)


def test_a_bad_run_says_one_line(window, qtbot, tmp_path):
    (tmp_path / "empty").mkdir()
    messages = []
    window.message_shown.connect(messages.append)
    window.open_run(tmp_path / "empty")
    qtbot.waitUntil(lambda: bool(messages), timeout=10_000)
    assert "no run database here" in messages[-1] and len(messages[-1].splitlines()) == 1
    assert window.session is None
    assert not window.run_view.plots.isVisibleTo(window.run_view)   # the header says what is wrong


def test_a_checkpoint_folder_still_written_is_followed(window, qtbot, tmp_path, monkeypatch):
    from rvq_viewer.gui.series import follow
    monkeypatch.setattr(follow, "FOLLOW_MS", 200)
    window.series_follower.timer.setInterval(200)
    folder = tmp_path / "ckpts"
    folder.mkdir()
    series = sorted((DEMO / "series").glob("*.pt"))
    for path in series[:2]:
        shutil.copy(path, folder / path.name)
    view = window.events_view
    view.open_series([folder])
    qtbot.waitUntil(lambda: view.result is not None and not view.slot.busy, timeout=60_000)
    assert view.result.steps == [200, 400]
    shutil.copy(series[2], folder / series[2].name)
    qtbot.waitUntil(lambda: view.result is not None and view.result.steps == [200, 400, 600] and not view.slot.busy,
                    timeout=60_000)
    assert len(view.result.events) > 0 or view.result.ema_dead.shape[0] == 3
