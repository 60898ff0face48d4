"""Hostile files through the desktop app's entry points: File ▸ Open (`MainWindow.open`) and drag and
drop (`MainWindow.dropEvent`). Nothing from a file runs, the user sees a refusal, and the window stays
usable (it opens the demo and moves between layers afterwards)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("PySide6")
pytest.importorskip("rvq_viewer.gui.main_window")

from PySide6.QtCore import QMimeData, QPoint, Qt, QUrl  # noqa: E402
from PySide6.QtGui import QDropEvent  # noqa: E402

# The GUI suite's set-up: offscreen app, temporary settings, no thread or process left behind.
from gui.conftest import (_app_setup, _dangling_processes, _dangling_python_threads,  # noqa: E402,F401
                          _dangling_qthread_pool, _dangling_qthreads, _temp_settings, demo, wait_views, window)
from test_hostile import evil_files  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def _search_pool_started():
    """Start any long-lived worker threads of the nearest-code search before the per-test thread check
    takes its snapshot: they belong to the process, not to a test."""
    import torch
    from rvq_viewer.quant.search import nearest_codes
    codebook = torch.randn(1024, 64)
    nearest_codes(torch.randn(50_000, 64), codebook)


def drop(window, paths):
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    event = QDropEvent(QPoint(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                       Qt.KeyboardModifier.NoModifier)
    window.dropEvent(event)


def wait_message(qtbot, window, *needles, timeout=15_000):
    qtbot.waitUntil(lambda: window.banner.isVisible() and all(n in window.banner.text() for n in needles),
                    timeout=timeout)
    qtbot.waitUntil(lambda: not window.load_slot.busy, timeout=timeout)


def still_usable(window, qtbot, demo):
    window.open(demo["healthy"], demo["features"])
    wait_views(qtbot, window)
    assert not window.banner.isVisible()
    window.commands["view.next_layer"].trigger()
    assert window.selection.layer == 1


def test_open_refuses_code_running_checkpoints(window, qtbot, demo, tmp_path):
    marker = tmp_path / "PWNED"
    files = evil_files(tmp_path, marker)
    for name in ("zip.pt", "legacy.pth", "sovits03.pth", "objects.npy"):
        window.open(files[name], demo["features"])
        wait_message(qtbot, window, "refused", files[name].name)
        assert window.session is None, name
        assert not marker.exists(), f"{name} ran code"
    still_usable(window, qtbot, demo)


def test_drag_and_drop_refuses_code_running_files(window, qtbot, demo, tmp_path):
    marker = tmp_path / "PWNED"
    files = evil_files(tmp_path, marker)
    drop(window, [files["raw.ckpt"], files["legacy.pth"]])          # nothing loaded yet: a refusal
    wait_message(qtbot, window, "refused")
    assert window.session is None and not marker.exists()
    still_usable(window, qtbot, demo)
    drop(window, [files["zip.pt"]])                                # as features for the open checkpoint
    wait_message(qtbot, window, "refused", "zip.pt")
    assert not marker.exists()
    window.commands["view.next_layer"].trigger()                                      # the window answers
    assert window.selection.layer in (0, 1, 2)


def test_nesting_and_expansion_bombs_through_the_window(window, qtbot, demo, tmp_path):
    """Opened as checkpoint and dropped as features: a refusal in the banner, quickly; the window
    then works as before."""
    from rvq_viewer.io import limits
    from test_hostile_pickles import deep_key, in_torch_zip, tensor_laughs

    deep = in_torch_zip(deep_key(limits.MAX_NESTING + 1), tmp_path / "deep.pt")
    laughs = tensor_laughs(tmp_path / "laughs.pt")
    for bomb, needle in ((deep, "nests"), (laughs, "expansion bomb")):
        window.open(bomb, demo["features"])
        wait_message(qtbot, window, bomb.name, needle, timeout=20_000)
        assert window.session is None
    still_usable(window, qtbot, demo)
    drop(window, [deep])
    wait_message(qtbot, window, "deep.pt", "nests", timeout=20_000)
    window.commands["view.next_layer"].trigger()
    assert window.selection.layer in (0, 1, 2)


def test_broken_files_through_the_window(window, qtbot, demo, tmp_path):
    (tmp_path / "empty.pt").write_bytes(b"")
    window.open(tmp_path / "empty.pt", demo["features"])
    wait_message(qtbot, window, "empty.pt", "empty")
    truncated = tmp_path / "cut.pt"
    truncated.write_bytes(demo["healthy"].read_bytes()[:300])
    window.open(truncated, demo["features"])
    wait_message(qtbot, window, "cut.pt")
    window.open(tmp_path, demo["features"])                        # a folder given as the checkpoint
    wait_message(qtbot, window, "folder")
    wide = tmp_path / "wide.npy"
    np.save(wide, np.zeros((20, 3), np.float32))
    window.open(demo["healthy"], [wide])
    wait_message(qtbot, window, "wide.npy")
    still_usable(window, qtbot, demo)


# --- jobs whose window is gone ---------------------------------------------------------------------------
def _slot_on_deleted_owner(qtbot, fn, **callbacks):
    """Start `fn` in a JobSlot, delete the slot's owner (a window closed mid-job), let the job end."""
    import threading

    import shiboken6
    from PySide6.QtWidgets import QWidget

    from rvq_viewer.gui.workers import JobSlot, live_workers

    owner = QWidget()
    slot = JobSlot("doomed", owner)
    release = threading.Event()
    slot.start(fn, release, **callbacks)
    shiboken6.delete(owner)                 # the C++ side of the window and its slot is gone
    assert not shiboken6.isValid(slot)
    release.set()
    qtbot.waitUntil(lambda: live_workers() == 0, timeout=10_000)
    qtbot.wait(50)                          # queued signals of the finished worker are delivered


def test_a_job_whose_window_is_deleted_ends_quietly(qtbot):
    """Its late `returned`/`finished` signals reach neither the deleted slot (no `Signal source has
    been deleted`) nor the callbacks of the deleted window; pytest-qt fails the test on any exception
    raised in a Qt callback."""
    calls = []

    def job(cancel, release):
        release.wait(10)
        return "late"

    _slot_on_deleted_owner(qtbot, job, returned=calls.append, errored=calls.append)

    def steps(cancel, release):
        release.wait(10)
        yield "late"
        return "done"

    _slot_on_deleted_owner(qtbot, steps, yielded=calls.append, returned=calls.append)
    assert calls == []


def test_a_callback_whose_receiver_was_deleted_ends_quietly(qtbot):
    """The slot lives on, the widget its callback updates is gone: the job ends without a traceback."""
    import threading

    import shiboken6
    from PySide6.QtWidgets import QLabel

    from rvq_viewer.gui.workers import JobSlot, live_workers

    label = QLabel()
    slot = JobSlot("survivor")
    release = threading.Event()
    slot.start(lambda cancel: release.wait(10) and "late", returned=label.setText)
    shiboken6.delete(label)
    release.set()
    qtbot.waitUntil(lambda: live_workers() == 0 and not slot.busy, timeout=10_000)
