"""The Trainer dock: train in a worker with live plots, pause, save, reopen, and compare two runs."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from rvq_viewer.training.trainer import TrainSettings
from rvq_viewer.io import load_quantizer, read_checkpoint
from rvq_viewer.analysis.series import stored_step

from .conftest import wait_views

TINY = TrainSettings(n_q=2, codebook_size=32, kmeans_init=False, kmeans_iters=5, threshold_ema_dead_code=2.0,
                     batch_size=256, steps=100_000, seed=1)


def _points(item) -> int:
    x = item.getData()[0]
    return 0 if x is None else len(x)


@pytest.fixture
def trainer(window, qtbot, demo):
    panel = window.trainer_panel
    window.open(demo["healthy"], demo["features"])
    wait_views(qtbot, window)
    return window, panel


def test_menu_dock_and_form_follow_the_checkpoint(trainer):
    win, panel = trainer
    titles = [a.text() for a in win.menuBar().actions()]
    assert titles.index("&Train") == titles.index("&Help") - 1
    assert panel in win.views and win.docks["trainer"].widget().widget() is panel
    win.commands["train.show"].trigger()
    assert win.docks["trainer"].isVisible()
    assert panel.form.n_q_spin.value() == 4 and panel.form.k_spin.value() == 512     # the open checkpoint's shape
    assert panel.start_button.isEnabled() and not panel.pause_button.isEnabled()
    assert "heldout.npy" in panel.form.source_label.text()
    panel.set_settings(TINY)
    assert panel.settings() == TINY
    # the two subtleties are explicit choices with their meaning spelled out
    assert panel.form.order_box.currentText() == "EnCodec: expire, then EMA update"
    assert "stale EMA" in panel.form.order_note.text()
    panel.form.order_box.setCurrentIndex(1)
    assert panel.form.order_box.currentText() == "GPT-SoVITS: EMA update, then expire"
    assert not panel.settings().expire_before_ema
    assert "0.25× the uniform share" in panel.form.threshold_note.text()       # 2 / (256 / 32)
    panel.form.threshold_mode.setCurrentIndex(1)
    assert panel.settings().threshold_relative and "Σ EMA sizes / K" in panel.form.threshold_note.text()
    # starting from the loaded codebooks pins K (and the init) to the checkpoint's
    panel.form.from_loaded_box.setChecked(True)
    assert panel.form.k_spin.value() == 512 and not panel.form.k_spin.isEnabled() and not panel.form.kmeans_box.isEnabled()


def test_train_pause_save_reopen(trainer, qtbot, tmp_path):
    win, panel = trainer
    panel.set_settings(TINY)
    run = panel.start()
    assert run is not None and panel.running
    assert not panel.start_button.isEnabled() and not panel.form.k_spin.isEnabled()
    qtbot.waitUntil(lambda: len(run) >= 5, timeout=30_000)
    # live plots are drawn from the history by the 10 Hz timer
    key = ("A", "perplexity", 0)
    qtbot.waitUntil(lambda: key in panel.plots.curves and _points(panel.plots.curves[key]) > 0, timeout=5000)
    panel.pause()
    qtbot.waitUntil(lambda: run.state == "paused", timeout=10_000)
    assert panel.resume_button.isEnabled() and not panel.pause_button.isEnabled()
    step = run.last_step
    qtbot.wait(300)
    assert run.last_step == step                       # paused means paused
    panel.redraw(force=True)
    x, y = panel.plots.curves[("A", "perplexity", 1)].getData()
    assert len(x) == step and np.all((y >= 1) & (y <= 32))
    assert run.total_events > 0 and int(run.raster.sum()) == run.total_events

    path = tmp_path / "what_if.pt"
    panel.save_run(path)
    qtbot.waitUntil(lambda: run.saved_path is not None, timeout=10_000)
    q = load_quantizer(path)
    assert q.n_q == 2 and q.codebook_size == 32
    ckpt = read_checkpoint(path)
    assert stored_step(ckpt.meta) == (step, "step")
    assert TrainSettings.from_dict(ckpt.meta["config"]) == TINY

    panel.resume()
    qtbot.waitUntil(lambda: run.last_step > step + 3, timeout=30_000)
    panel.stop()
    qtbot.waitUntil(lambda: not panel.running, timeout=30_000)
    assert run.state == "stopped" and run.evaluation is not None
    assert "On 12,550 training frames" in panel.status.text()
    assert panel.runs_table.item(0, 4).text() == "stopped"

    # the saved run opens in the viewer like any checkpoint, with the open features
    assert panel.open_button.isEnabled()
    panel.open_saved()
    qtbot.waitUntil(lambda: win.session is not None and win.session.name == "what_if.pt", timeout=30_000)
    wait_views(qtbot, win)
    assert win.snapshot.result.layers[0].codebook_size == 32


def test_two_runs_are_compared(trainer, qtbot):
    win, panel = trainer
    a = dataclasses.replace(TINY, steps=25)
    panel.set_settings(a)
    first = panel.start()
    qtbot.waitUntil(lambda: not panel.running, timeout=60_000)
    assert first.state == "finished" and len(first) == 25
    panel.form.order_box.setCurrentIndex(1)                  # GPT-SoVITS order, all else equal
    second = panel.start()
    qtbot.waitUntil(lambda: not panel.running, timeout=60_000)
    assert panel.current_a() is second and panel.current_b() is first
    assert "EnCodec order → GPT-SoVITS order" in panel.compare_label.text()
    assert "codes used: A" in panel.compare_label.text()
    panel.redraw(force=True)
    xa, _ = panel.plots.curves[("A", "dead", 0)].getData()
    xb, _ = panel.plots.curves[("B", "dead", 0)].getData()
    assert len(xa) == len(xb) == 25
    assert panel.runs_table.rowCount() == 2
    described = panel.runs_table.item(1, 1).text()
    assert described.endswith("batch 256") and "GPT-SoVITS" in described
    # B can be switched off, and a run's settings can be put back in the form
    panel.run_b_box.setCurrentIndex(0)
    panel.redraw(force=True)
    assert _points(panel.plots.curves[("B", "dead", 0)]) == 0
    panel.use_settings_of(0)
    assert panel.settings() == a


def test_start_from_loaded_codebooks(trainer, qtbot):
    win, panel = trainer
    panel.set_settings(dataclasses.replace(TINY, n_q=2, codebook_size=512, batch_size=512, steps=3))
    panel.form.from_loaded_box.setChecked(True)
    run = panel.start()
    qtbot.waitUntil(lambda: not panel.running, timeout=60_000)
    assert run.state == "finished" and run.start == "from healthy.pt"
    assert run.evaluation.utilization[0] > 0.5          # trained codebooks, not a fresh random init


def test_closing_the_window_stops_a_run(trainer, qtbot):
    win, panel = trainer
    panel.set_settings(TINY)
    run = panel.start()
    qtbot.waitUntil(lambda: len(run) >= 1, timeout=30_000)
    win.close()                                         # the conftest fails the test on a leftover thread
    assert not panel.running


def test_quitting_with_an_unsaved_run_asks_first(trainer, qtbot, tmp_path):
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication, QMessageBox

    from rvq_viewer.gui.main_window import MainWindow
    win, panel = trainer
    panel.set_settings(TINY)
    run = panel.start()
    qtbot.waitUntil(lambda: len(run) >= 3, timeout=30_000)
    panel.stop()
    qtbot.waitUntil(lambda: not panel.running, timeout=30_000)
    assert panel.unsaved_runs() == [run]
    # the real question: its buttons say what they do; Cancel keeps the window open
    seen = {}

    def answer(button_text):
        def click():
            box = next(w for w in QApplication.topLevelWidgets()
                       if isinstance(w, QMessageBox) and w.objectName() == "unsaved-dialog" and w.isVisible())
            seen["text"] = box.text()
            seen["buttons"] = [b.text() for b in box.buttons()]
            next(b for b in box.buttons() if b.text() == button_text).click()
        QTimer.singleShot(200, click)
    win._ask_unsaved = lambda unsaved: MainWindow._ask_unsaved(win, unsaved)
    answer("Cancel")
    win.close()
    assert win.isVisible() and "1 unsaved run: run 1 (step" in seen["text"]
    assert {"Save…", "Quit without saving", "Cancel"} <= set(seen["buttons"])
    # Save… opens the save dialog for that run; once saved, quitting asks nothing
    asked = []
    panel.ask_save = lambda: (asked.append(panel.current_a()), panel.save_run(tmp_path / "kept.pt"))
    answer("Save…")
    win.close()
    assert win.isVisible() and asked == [run]
    qtbot.waitUntil(lambda: run.saved_path is not None, timeout=10_000)
    assert panel.unsaved_runs() == []
    win._ask_unsaved = lambda unsaved: pytest.fail("nothing unsaved: no question")
    win.close()
    assert not win.isVisible()


def test_pausing_during_kmeans_init_says_when_it_will_pause(trainer, qtbot):
    win, panel = trainer
    panel.set_settings(dataclasses.replace(TINY, kmeans_init=True, kmeans_iters=400, codebook_size=512,
                                           batch_size=8192))
    run = panel.start()
    qtbot.waitUntil(lambda: run.state == "initialising", timeout=30_000)
    panel.pause()
    assert "pausing when the k-means init ends" in panel.status.text()
    qtbot.waitUntil(lambda: run.state == "paused", timeout=60_000)
    assert "pausing when" not in panel.status.text() and "paused" in panel.status.text()
    panel.stop()
    qtbot.waitUntil(lambda: not panel.running, timeout=30_000)


def test_no_features_no_start(window, qtbot, demo):
    panel = window.trainer_panel
    window.open(demo["healthy"])
    qtbot.waitUntil(lambda: window.session is not None, timeout=30_000)
    assert not panel.start_button.isEnabled()
    assert panel.start() is None
    assert "No features open" in panel.form.source_label.text()
