"""Following a checkpoint folder that training is still writing: a new checkpoint in an open series is
added to the timeline.

When the Events view holds a series that is a whole folder's checkpoints, the folder is listed every
`FOLLOW_MS`; a new checkpoint file whose size and time stay the same over two listings (the trainer has
finished writing it) makes the view open the folder's series again, in its worker, with the same
features and options. Listing a folder is all this does on the GUI thread.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, QTimer

from ...analysis.series.ordering import CHECKPOINT_EXTENSIONS

FOLLOW_MS = 2000


def listing(folder: Path) -> dict[Path, tuple[int, int]]:
    """Checkpoint files of `folder` with (size, mtime in ns); {} when it cannot be read."""
    try:
        return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()
                if p.is_file() and p.suffix in CHECKPOINT_EXTENSIONS}
    except OSError:
        return {}


class SeriesFollower(QObject):
    def __init__(self, view, parent=None):
        super().__init__(parent or view)
        self.view = view
        self.folder: Path | None = None
        self.known: set[Path] = set()
        self.pending: dict[Path, tuple[int, int]] = {}
        self.timer = QTimer(self)
        self.timer.setInterval(FOLLOW_MS)
        self.timer.timeout.connect(self.check)
        view.slot.busy_changed.connect(self._busy_changed)

    def _busy_changed(self, busy: bool) -> None:
        if busy:
            return
        result = self.view.result
        if result is None:
            self.stop()
            return
        paths = {Path(p) for p in result.paths}
        folders = {p.parent for p in paths}
        if len(folders) != 1:
            self.stop()                      # files picked one by one: nothing to follow
            return
        folder = folders.pop()
        if not paths >= set(listing(folder)):
            self.stop()                      # a selection of the folder's files, not the folder
            return
        self.folder, self.known, self.pending = folder, paths, {}
        self.timer.start()

    def stop(self) -> None:
        self.timer.stop()
        self.folder = None

    def check(self) -> None:
        """List the folder; reopen the series once a new checkpoint has stopped changing."""
        if self.folder is None or self.view.slot.busy:
            return
        now = {p: stamp for p, stamp in listing(self.folder).items() if p not in self.known}
        settled = [p for p, stamp in now.items() if self.pending.get(p) == stamp and stamp[0] > 0]
        self.pending = now
        if settled:
            self.timer.stop()
            self.view.open_series([self.folder])
