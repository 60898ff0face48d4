"""File > Compare with…: the Compare window of a main window, fed from its state.

A is the open audit by default (its complete audit is reused, not run again). While the comparison's A
is the checkpoint open in the main window, a code selected in one window is selected in the other.
"""

from __future__ import annotations

from PySide6.QtCore import QObject
from PySide6.QtWidgets import QDialog

from ...app.compare_jobs import CompareOutcome, CompareSpec
from ...pipeline import AuditOutcome, same_path, same_paths
from ..state import AppState
from .dialog import CompareDialog
from .window import CompareWindow


class CompareController(QObject):
    def __init__(self, state: AppState, parent_window):
        super().__init__(parent_window)
        self.state = state
        self.parent_window = parent_window
        self.window: CompareWindow | None = None

    def _template(self):
        session = self.state.session
        return session.spec.replace(device=self.state.device) if session is not None else None

    def reusable_a(self, spec: CompareSpec) -> AuditOutcome | None:
        """The main window's complete audit as side A, when A is what it has open."""
        snapshot = self.state.snapshot
        if snapshot is None or snapshot.outcome is None or not snapshot.complete:
            return None
        outcome = snapshot.outcome
        if same_path(outcome.spec.checkpoint, spec.checkpoint_a) and same_paths(outcome.spec.features,
                                                                                spec.features_a):
            return outcome
        return None

    def ask(self) -> None:
        session = self.state.session
        if session is None:
            self.state.show_message("Open a checkpoint (and features) first: it is A of the comparison.", "info")
            return
        dialog = CompareDialog(self.parent_window, session.checkpoint, session.features)
        if dialog.exec() == QDialog.DialogCode.Accepted:
            self.start(dialog.spec(self.state.device))

    def start(self, spec: CompareSpec) -> CompareWindow:
        if self.window is None:
            self.window = CompareWindow(self.parent_window, device=lambda: self.state.device,
                                        template=self._template)
            self.window.selection.code_changed.connect(self._compare_code_changed)
            self.state.selection.code_changed.connect(self._window_code_changed)
        cw = self.window
        cw.start(spec, self.reusable_a(spec))
        cw.show()
        cw.raise_()
        cw.activateWindow()
        return cw

    # --- one selected code in both windows ------------------------------------------------------------------
    def codes_linked(self) -> bool:
        """The comparison's A is the checkpoint open in the main window: a code of A is a code there too."""
        cw, session = self.window, self.state.session
        return (cw is not None and cw.outcome is not None and session is not None
                and same_path(cw.outcome.a.checkpoint, session.checkpoint))

    def _compare_code_changed(self, layer: int, code: int) -> None:
        # Selection emits only on a change, so the echo from the other window ends here.
        if code >= 0 and self.codes_linked() and layer < self.state.selection.n_layers:
            self.state.selection.set_code(layer, code)

    def _window_code_changed(self, layer: int, code: int) -> None:
        cw = self.window
        if code >= 0 and self.codes_linked() and layer < cw.selection.n_layers:
            cw.selection.set_code(layer, code)

    def included_comparison(self) -> CompareOutcome | None:
        """The open comparison, when its A is the main window's audit (the report is about that audit)."""
        cw, session = self.window, self.state.session
        if cw is None or not cw.isVisible() or cw.outcome is None or session is None:
            return None
        return cw.outcome if cw.outcome.a.matches(session.checkpoint, session.features) else None

    def shutdown(self) -> None:
        if self.window is not None:
            self.window.shutdown()
            self.window.close()
