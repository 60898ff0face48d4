"""What every panel of the main window shares: it follows the app state's session and snapshots, and
lays out a row of controls, a header and its body."""

from __future__ import annotations

from PySide6.QtWidgets import QHBoxLayout, QVBoxLayout, QWidget

from ..state import AppState
from ..widgets.common import reset_plots


class Panel(QWidget):
    """A panel: `set_session` and `set_snapshot` are called by the state it subscribes to."""

    title = ""

    def __init__(self, state: AppState, name: str, parent=None):
        super().__init__(parent)
        self.setObjectName(name)
        self.state = state
        self.selection = state.selection
        self.session = None
        self.snapshot = None
        state.session_changed.connect(self.set_session)
        state.subscribe_snapshots(self.set_snapshot)

    def set_session(self, session) -> None:
        self.session = session
        self.snapshot = None

    def set_snapshot(self, snapshot) -> None:
        self.snapshot = snapshot

    @property
    def ready(self) -> bool:
        return True

    def export_title(self, what: str, layer: int | None = None) -> str:
        """The title line of an exported plot: what it is, the checkpoint, the layer and the frames."""
        parts = [what]
        if self.session is not None:
            parts.append(self.session.name)
        if layer is not None:
            parts.append(f"layer {layer}")
        snap = self.snapshot
        if snap is not None:
            parts.append(f"{snap.result.frames:,} frames" + ("" if snap.complete else " (partial audit)"))
        return " · ".join(parts)

    def reset_view(self) -> None:
        """Every plot of the panel back to all its data (panels with their own ranges override this)."""
        reset_plots(self)

    def cleanup(self) -> None:
        """Stop what the panel runs (workers, timers) before the window closes."""

    def lay_out(self, controls: list[QWidget], header: QWidget | None, body: QWidget,
                footer: QWidget | None = None, stretch_last: bool = False) -> None:
        """Controls in a row on top (left-aligned; or the last one taking the free width), then the header,
        the body taking the free height, and a footer."""
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.setSpacing(2)
        if controls:
            top = QHBoxLayout()
            top.setContentsMargins(4, 0, 4, 0)
            for widget in controls:
                top.addWidget(widget, 1 if stretch_last and widget is controls[-1] else 0)
            if not stretch_last:
                top.addStretch(1)
            layout.addLayout(top)
        if header is not None:
            layout.addWidget(header)
        layout.addWidget(body, 1)
        if footer is not None:
            layout.addWidget(footer)
