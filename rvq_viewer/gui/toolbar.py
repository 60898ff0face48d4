"""The main window's toolbar: open, the layer every view follows, go to a code, the device, re-run."""

from __future__ import annotations

from PySide6.QtWidgets import QComboBox, QLabel, QLineEdit, QPushButton, QToolBar

from ..app.code_ref import parse_code_ref
from ..runtime import available_devices

GOTO_ERROR_STYLE = "QLineEdit { border: 1px solid #C62828; }"


def build_toolbar(w) -> None:
    """Toolbar of main window `w`; its widgets become the window's attributes (`w.layer_box`, ...)."""
    bar = QToolBar("Main")
    bar.setObjectName("toolbar-main")
    bar.setMovable(False)
    w.addToolBar(bar)
    w.toolbar = bar
    w.open_button = QPushButton("Open…")
    w.open_button.setToolTip("Open a quantizer checkpoint (Ctrl+O)")
    w.open_button.clicked.connect(w.ask_open_checkpoint)
    bar.addWidget(w.open_button)
    bar.addSeparator()
    bar.addWidget(QLabel(" Layer "))
    w.layer_box = QComboBox()
    w.layer_box.setObjectName("layer-box")
    w.layer_box.setMinimumWidth(150)
    w.layer_box.currentIndexChanged.connect(lambda i: w.selection.set_layer(i) if i >= 0 else None)
    bar.addWidget(w.layer_box)
    for text, step, tip in (("◀", -1, "Previous layer ([)"), ("▶", 1, "Next layer (])")):
        button = QPushButton(text)
        button.setToolTip(tip)
        button.setFixedWidth(32)
        button.clicked.connect(lambda checked=False, s=step: w.selection.step_layer(s))
        bar.addWidget(button)
        setattr(w, "prev_button" if step < 0 else "next_button", button)
    w.goto_box = GotoBox(w)
    bar.addWidget(w.goto_box)
    bar.addSeparator()
    bar.addWidget(QLabel(" Device "))
    w.device_box = QComboBox()
    w.device_box.setObjectName("device-box")
    for name in available_devices():
        w.device_box.addItem(name, name)
    w.device_box.currentIndexChanged.connect(w._device_changed)
    bar.addWidget(w.device_box)
    w.rerun_button = QPushButton("Re-run audit")
    w.rerun_button.setToolTip("Audit the features again (F5)")
    w.rerun_button.clicked.connect(w.start_audit)
    bar.addWidget(w.rerun_button)


class GotoBox(QLineEdit):
    """Type `256` (a code of the selected layer) or `3:256` (layer 3, code 256) and Enter: every view
    goes to that code. A wrong entry turns red and the status bar says why."""

    def __init__(self, window):
        super().__init__()
        self.window = window
        self.setObjectName("goto-code")
        self.setPlaceholderText("go to code (3:256)")
        self.setToolTip("Go to a code (Ctrl+G): 256 in the selected layer, or layer:code such as 3:256")
        self.setClearButtonEnabled(True)
        self.setFixedWidth(self.fontMetrics().horizontalAdvance("go to code (3:256)") + 40)
        self.returnPressed.connect(self.go)
        self.textEdited.connect(lambda _: self.setStyleSheet(""))

    def go(self) -> bool:
        w = self.window
        session = w.session
        sizes = [len(cb) for cb in session.codebooks] if session is not None else []
        try:
            layer, code = parse_code_ref(self.text(), w.selection.layer, sizes)
        except ValueError as exc:
            self.setStyleSheet(GOTO_ERROR_STYLE)
            w.statusBar().showMessage(f"Go to code: {exc}", 8000)
            return False
        self.setStyleSheet("")
        w.selection.set_code(layer, code)
        w.statusBar().showMessage(f"Layer {layer}, code {code}", 4000)
        self.selectAll()
        return True
