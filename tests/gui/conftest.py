"""GUI test set-up: offscreen Qt, temporary settings and cache, and no thread or process left behind.

The dangling-thread fixtures follow napari's `_dangling_qthreads` / `_dangling_qthread_pool`: they
record where each QThread, thread-pool runnable and subprocess was started, and fail the test if
any is still running at teardown (after pytest-qt has closed the test's widgets).
"""

from __future__ import annotations

import os

os.environ["QT_QPA_PLATFORM"] = "offscreen"  # before anything imports Qt

import subprocess  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PySide6.QtCore import QThread, QThreadPool  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
# The engine's process-wide CPU search pool (rvq_viewer.quant.search.CpuWorkers): started on the first
# audit and kept on purpose for the life of the process, so it is not a leak of the test that started it.
# Dask's offload and callback executors are module-level in `distributed` (one per process, never shut
# down), so the first test that uses a cluster starts them for every later one.
PERSISTENT_THREADS = ("rvq-worker-", "Dask-Offload_", "Dask-Callback-Thread_")
DEMO = ROOT / "assets" / "demo"


def _where() -> str:
    return "".join(traceback.format_stack(limit=8)[:-2])


@pytest.fixture(scope="session", autouse=True)
def _app_setup(qapp):
    """The same application set-up as `rvq-viewer` (style, pyqtgraph options, binding work-around)."""
    from rvq_viewer.gui.app import create_application
    create_application(theme_choice="light")      # not the user's saved theme: that would read their settings
    return qapp


@pytest.fixture(autouse=True)
def _temp_settings(tmp_path, monkeypatch):
    """Settings and caches in the test's temporary folder, never the user's."""
    from rvq_viewer.gui import settings
    monkeypatch.setenv("RVQ_VIEWER_SETTINGS", str(tmp_path / "config" / "rvq-viewer.ini"))
    monkeypatch.setenv("RVQ_VIEWER_CACHE", str(tmp_path / "cache"))
    settings.use_paths(tmp_path / "config" / "rvq-viewer.ini", tmp_path / "cache")
    yield
    settings.use_paths(None, None)


@pytest.fixture(autouse=True)
def _dangling_qthreads(monkeypatch):
    started: list[tuple[QThread, str]] = []
    original = QThread.start

    def start(self, *args, **kwargs):
        started.append((self, _where()))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(QThread, "start", start)
    yield
    running = [where for thread, where in started if thread.isRunning() and not thread.wait(1000)]
    if running:
        pytest.fail("QThread(s) still running after the test, started at:\n" + "\n".join(running))


@pytest.fixture(autouse=True)
def _dangling_qthread_pool(monkeypatch):
    started: list[str] = []
    original = QThreadPool.start

    def start(self, runnable, *args, **kwargs):
        started.append(f"{type(runnable).__name__} started at:\n{_where()}")
        return original(self, runnable, *args, **kwargs)

    monkeypatch.setattr(QThreadPool, "start", start)
    yield
    pool = QThreadPool.globalInstance()
    if not pool.waitForDone(1000):
        pytest.fail(f"{pool.activeThreadCount()} thread-pool worker(s) still running after the test; "
                    "runnables started during it:\n" + "\n".join(started))


@pytest.fixture(autouse=True)
def _dangling_processes(monkeypatch):
    started: list[tuple[subprocess.Popen, str]] = []
    original = subprocess.Popen.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        started.append((self, _where()))

    monkeypatch.setattr(subprocess.Popen, "__init__", init)
    yield
    alive = []
    for proc, where in started:
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            alive.append(f"pid {proc.pid} ({proc.args!r:.120}) started at:\n{where}")
    if alive:
        pytest.fail("subprocess(es) still running after the test (killed now):\n" + "\n".join(alive))


@pytest.fixture(autouse=True)
def _dangling_python_threads():
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 2.0
    while True:
        extra = [t for t in threading.enumerate() if t not in before and t.is_alive()
                 and not t.name.startswith(("Dummy", "QThread", *PERSISTENT_THREADS))]
        if not extra or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    if extra:
        pytest.fail("Python thread(s) still running after the test: " + ", ".join(t.name for t in extra))


# --- helpers ---------------------------------------------------------------------------------------------

@pytest.fixture
def demo():
    healthy, features = DEMO / "healthy.pt", [DEMO / "heldout.npy"]
    if not healthy.is_file() or not features[0].is_file():
        pytest.fail(f"the bundled demo is missing under {DEMO}")
    return {"healthy": healthy, "collapsed": DEMO / "collapsed.pt", "features": features}


class FakeUmapService:
    """Stands in for `projection.UmapService` in GUI tests: a quick, cancellable 'UMAP' (a rotated
    PCA), no child process and no umap import. Counts what it was asked."""

    def __init__(self, delay: float = 0.2, first_delay: float | None = None):
        self.delay = delay
        self.first_delay = delay if first_delay is None else first_delay
        self.calls = 0
        self.cancelled = 0
        self.ready = True
        self.closed = False

    def start(self):
        pass

    def close(self, timeout: float = 0.0):
        self.closed = True

    def embed(self, points, params=None, cancelled=None, timeout=None, init=None):
        from rvq_viewer.analysis.umap_service import Embedding, ProjectionCancelled, pca_2d
        self.calls += 1
        end = time.monotonic() + (self.first_delay if self.calls == 1 else self.delay)
        while time.monotonic() < end:
            if cancelled is not None and cancelled():
                self.cancelled += 1
                raise ProjectionCancelled("cancelled")
            time.sleep(0.01)
        coords = pca_2d(points)
        rot = np.array([[0.0, -1.0], [1.0, 0.0]], dtype=np.float32)
        return Embedding(coords @ rot, "umap", cached=False, seconds=self.delay)


@pytest.fixture
def window(qtbot):
    from rvq_viewer.gui.main_window import MainWindow
    win = MainWindow(umap_service=None)
    # Closing at teardown must not wait on the unsaved-run question (test_trainer_panel asks it itself).
    win._ask_unsaved = lambda unsaved: "discard"
    qtbot.addWidget(win)
    win.resize(1500, 950)          # the offscreen screen is 800 x 600: a desktop-sized window, side by side
    win.reset_layout()
    win.show()
    yield win
    win.close()


def wait_views(qtbot, win, timeout=30_000):
    qtbot.waitUntil(lambda: win.views_ready(), timeout=timeout)


@pytest.fixture
def loaded(window, qtbot, demo):
    window.open(demo["healthy"], demo["features"])
    wait_views(qtbot, window)
    return window
