"""Choosing a checkpoint series: a folder of one run's checkpoints, or several checkpoint files."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QFileDialog

from .. import settings

SERIES_FILTER = "Checkpoints (*.pt *.pth *.ckpt *.th *.bin *.safetensors);;All files (*)"


def ask_series(parent, folder: bool) -> list[str]:
    """The paths chosen (empty: cancelled); the dialog opens where the last one was opened."""
    start = settings.get("last_dir") or ""
    if folder:
        path = QFileDialog.getExistingDirectory(parent, "Open a folder of checkpoints of one quantizer", start)
        paths = [path] if path else []
        remembered = path
    else:
        paths, _ = QFileDialog.getOpenFileNames(parent, "Open checkpoints of one quantizer", start, SERIES_FILTER)
        remembered = str(Path(paths[0]).parent) if paths else ""
    if remembered:
        settings.set("last_dir", remembered)
    return paths
