"""Choosing what to compare: A (the open audit, by default) and B (another checkpoint and/or features)."""

from __future__ import annotations

import html
from pathlib import Path

from PySide6.QtWidgets import (QDialog, QDialogButtonBox, QFileDialog, QGridLayout, QHBoxLayout, QLabel, QLineEdit,
                               QPushButton, QVBoxLayout)

from ...app.compare_jobs import CompareSpec
from .. import settings
from ..widgets.common import HEALTH_COLORS
from .palette import A_COLOR, B_COLOR
from ..theme import muted

CHECKPOINT_FILTER = "Quantizer checkpoints (*.pt *.pth *.ckpt *.safetensors *.npy *.npz *.bin);;All files (*)"
FEATURE_FILTER = "Feature files (*.npy *.pt *.pth *.npz *.safetensors);;All files (*)"


def parse_paths(text: str) -> list[Path]:
    return [Path(p.strip()) for p in text.split(";") if p.strip()]


def join_paths(paths) -> str:
    return "; ".join(str(p) for p in paths)


class CompareDialog(QDialog):
    """A = the open audit (checkpoint and features), B = another checkpoint and/or another feature set."""

    def __init__(self, parent=None, checkpoint_a=None, features_a=(), checkpoint_b=None, features_b=()):
        super().__init__(parent)
        self.setObjectName("compare-dialog")
        self.setWindowTitle("Compare with…")
        self.setMinimumWidth(640)
        self.ckpt_a = QLineEdit(str(checkpoint_a or ""))
        self.feat_a = QLineEdit(join_paths(features_a))
        self.ckpt_b = QLineEdit(str(checkpoint_b or checkpoint_a or ""))
        self.feat_b = QLineEdit(join_paths(features_b))
        self.feat_b.setPlaceholderText("same features as A")
        for edit, name in ((self.ckpt_a, "ckpt-a"), (self.feat_a, "feat-a"), (self.ckpt_b, "ckpt-b"),
                           (self.feat_b, "feat-b")):
            edit.setObjectName(f"compare-{name}")
            edit.textChanged.connect(self._validate)
        grid = QGridLayout()
        intro = QLabel("Compare two checkpoints (of one run or two runs) on the same features, or one checkpoint "
                       "on two feature sets. Several feature paths are separated by “;”.")
        intro.setWordWrap(True)
        grid.addWidget(intro, 0, 0, 1, 4)
        rows = [("A checkpoint", self.ckpt_a, [("…", lambda: self._pick_checkpoint(self.ckpt_a))]),
                ("A features", self.feat_a, [("Files…", lambda: self._pick_files(self.feat_a)),
                                             ("Folder…", lambda: self._pick_folder(self.feat_a))]),
                ("B checkpoint", self.ckpt_b, [("…", lambda: self._pick_checkpoint(self.ckpt_b))]),
                ("B features", self.feat_b, [("Files…", lambda: self._pick_files(self.feat_b)),
                                             ("Folder…", lambda: self._pick_folder(self.feat_b))])]
        for r, (label, edit, buttons) in enumerate(rows, start=1):
            colour = A_COLOR if label.startswith("A") else B_COLOR
            tag = QLabel(f"<b style='color:{colour}'>{label[0]}</b> {label[2:]}")
            grid.addWidget(tag, r, 0)
            grid.addWidget(edit, r, 1)
            box = QHBoxLayout()
            for text, slot in buttons:
                button = QPushButton(text)
                button.setAutoDefault(False)
                button.clicked.connect(slot)
                box.addWidget(button)
            grid.addLayout(box, r, 2)
        self.hint = QLabel()
        self.hint.setObjectName("compare-hint")
        self.hint.setWordWrap(True)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Compare")
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(grid)
        layout.addWidget(self.hint)
        layout.addWidget(self.buttons)
        self._validate()

    def _start_dir(self, edit: QLineEdit) -> str:
        paths = parse_paths(edit.text())
        if paths:
            return str(paths[0].parent if not paths[0].is_dir() else paths[0])
        return settings.get("last_dir") or ""

    def _pick_checkpoint(self, edit: QLineEdit) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Checkpoint", self._start_dir(edit), CHECKPOINT_FILTER)
        if path:
            edit.setText(path)

    def _pick_files(self, edit: QLineEdit) -> None:
        paths, _ = QFileDialog.getOpenFileNames(self, "Feature files", self._start_dir(edit), FEATURE_FILTER)
        if paths:
            edit.setText(join_paths(paths))

    def _pick_folder(self, edit: QLineEdit) -> None:
        path = QFileDialog.getExistingDirectory(self, "Folder of feature files", self._start_dir(edit))
        if path:
            edit.setText(path)

    def problem(self) -> str:
        """Why the choice cannot be compared ('' when it can)."""
        ckpt_a, ckpt_b = self.ckpt_a.text().strip(), self.ckpt_b.text().strip()
        feats_a, feats_b = parse_paths(self.feat_a.text()), parse_paths(self.feat_b.text())
        if not ckpt_a or not ckpt_b:
            return "Choose a checkpoint for A and for B."
        if not feats_a:
            return "Choose the features A is audited on."
        for path in [Path(ckpt_a), Path(ckpt_b), *feats_a, *feats_b]:
            if not path.exists():
                return f"{path}: no such file or folder."
        spec = self.spec()
        if spec.same_checkpoint and spec.same_features:
            return "B is A: choose another checkpoint for B, or other features for B."
        return ""

    def _validate(self) -> None:
        problem = self.problem()
        self.hint.setText(f"<span style='color:{HEALTH_COLORS['bad']}'>{html.escape(problem)}</span>" if problem
                          else f"<span style='color:{muted()}'>Both are audited in the background; A's audit is "
                               "reused when it is the open one.</span>")
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setEnabled(not problem)

    def spec(self, device: str = "auto") -> CompareSpec:
        return CompareSpec(Path(self.ckpt_a.text().strip()), parse_paths(self.feat_a.text()),
                           Path(self.ckpt_b.text().strip()), parse_paths(self.feat_b.text()), device)
