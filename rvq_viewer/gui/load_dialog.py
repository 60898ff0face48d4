"""File ▸ Open with options: a checkpoint and the load options its file cannot tell (FSQ levels and stages,
a forced format, heads, the first N layers), the same `LoadOptions` the command line's --levels, --stages,
--format, --heads and --n-q build."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import (QComboBox, QDialog, QDialogButtonBox, QFileDialog, QFormLayout, QHBoxLayout, QLabel,
                               QLineEdit, QPushButton, QSpinBox, QWidget)

from ..io.formats import FORMATS
from ..pipeline import LoadOptions
from . import settings

DETECT = "detect from the keys"


def parse_levels(text: str) -> tuple[int, ...] | str | None:
    """'8,5,5,5' -> (8, 5, 5, 5); a preset name ('2x15625_700bps') as it is; '' -> None. Raises ValueError
    for integers below 2."""
    text = text.strip().replace(" ", "")
    if not text:
        return None
    try:
        levels = tuple(int(v) for v in text.split(",") if v)
    except ValueError:
        return text                  # a Stable Codec preset: the loader checks it
    if not levels or min(levels) < 2:
        raise ValueError("levels are integers >= 2, like 8,5,5,5")
    return levels


class LoadOptionsDialog(QDialog):
    """Asks for a checkpoint and its load options; `options()` gives the `LoadOptions`."""

    def __init__(self, parent: QWidget | None = None, path: str = "", current: LoadOptions | None = None):
        super().__init__(parent)
        self.setObjectName("load-options")
        self.setWindowTitle("Open checkpoint with options")
        current = current or LoadOptions()
        self.path_edit = QLineEdit(path)
        self.path_edit.setObjectName("load-path")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.path_edit, 1)
        row.addWidget(browse)
        self.levels_edit = QLineEdit("" if current.levels is None else
                                     current.levels if isinstance(current.levels, str) else
                                     ",".join(str(v) for v in current.levels))
        self.levels_edit.setObjectName("load-levels")
        self.levels_edit.setPlaceholderText("e.g. 8,5,5,5, or 2x15625_700bps (Stable Codec)")
        self.levels_edit.setToolTip("FSQ levels per dimension (vector-quantize-pytorch stores none)")
        self.stages_spin = self._spin("load-stages", current.stages, 64,
                                      "residual FSQ stages (ResidualFSQ); 0: a plain FSQ")
        self.heads_spin = self._spin("load-heads", current.heads, 4096, "heads sharing one codebook; 0: from the file")
        self.n_q_spin = self._spin("load-n_q", current.n_q, 1024, "use the first N layers; 0: all")
        self.format_box = QComboBox()
        self.format_box.setObjectName("load-format")
        self.format_box.addItem(DETECT, None)
        for fmt in FORMATS:
            self.format_box.addItem(fmt.name, fmt.name)
            self.format_box.setItemData(self.format_box.count() - 1, fmt.description, 3)   # ToolTipRole
        if current.format:
            self.format_box.setCurrentIndex(max(0, self.format_box.findData(current.format)))
        self.error = QLabel("")
        self.error.setObjectName("load-error")
        self.error.setStyleSheet("color: #C62828")
        form = QFormLayout(self)
        form.addRow("Checkpoint", row)
        form.addRow("Levels (FSQ)", self.levels_edit)
        form.addRow("Stages", self.stages_spin)
        form.addRow("Format", self.format_box)
        form.addRow("Heads", self.heads_spin)
        form.addRow("First N layers", self.n_q_spin)
        form.addRow(self.error)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Open | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self._accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def _spin(self, name: str, value: int | None, maximum: int, tip: str) -> QSpinBox:
        spin = QSpinBox()
        spin.setObjectName(name)
        spin.setRange(0, maximum)
        spin.setSpecialValueText("—")
        spin.setValue(value or 0)
        spin.setToolTip(tip)
        return spin

    def _browse(self) -> None:
        from .main_window import CHECKPOINT_FILTER
        path, _ = QFileDialog.getOpenFileName(self, "Open quantizer checkpoint", settings.get("last_dir"),
                                              CHECKPOINT_FILTER)
        if path:
            self.path_edit.setText(path)

    def options(self) -> LoadOptions:
        """The options as entered (ValueError for levels that are not integers >= 2)."""
        return LoadOptions(format=self.format_box.currentData(), n_q=self.n_q_spin.value() or None,
                           heads=self.heads_spin.value() or None, levels=parse_levels(self.levels_edit.text()),
                           stages=self.stages_spin.value() or None)

    def path(self) -> str:
        return self.path_edit.text().strip()

    def _accept(self) -> None:
        try:
            self.options()
        except ValueError as exc:
            self.error.setText(str(exc))
            return
        if not self.path() or not Path(self.path()).is_file():
            self.error.setText("choose a checkpoint file")
            return
        self.accept()


def ask_open_with_options(window) -> None:
    """Show the dialog for `window` and open what it gives (with the open session's options to start from)."""
    session = window.state.session
    current = session.spec.load if session is not None else None
    start = str(session.checkpoint) if session is not None else ""
    dialog = LoadOptionsDialog(window, start, current)
    if dialog.exec() == QDialog.DialogCode.Accepted:
        settings.set("last_dir", str(Path(dialog.path()).parent))
        window.open(dialog.path(), load=dialog.options())
