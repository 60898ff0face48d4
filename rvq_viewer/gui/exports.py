"""File > Export: plots (PNG), tables (CSV), the audit JSON, everything to a folder, and the HTML report.

An export is never written over a file the session reads (the checkpoint, a feature file): the same
check as the command line's outputs.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QFileDialog

from ..analysis.diagnosis import write_json
from ..app.compare_jobs import html_report_job
from ..errors import RvqViewerError
from ..io import check_outputs
from . import settings
from .controller import error_text
from .workers import JobSlot

HTML_FILTER = "HTML (*.html *.htm)"


class Exporter(QObject):
    """The window's exports. `window` gives the panels (`overview`, `dead_codes`, `histogram`, `map`,
    `residuals`), the state, and the compare controller whose comparison the HTML report may include."""

    report_written = Signal(object)      # Path of an HTML report
    report_failed = Signal(str)

    def __init__(self, window):
        super().__init__(window)
        self.window = window
        self.state = window.state
        self.report_slot = JobSlot("html-report", self)

    # --- one file -----------------------------------------------------------------------------------------
    def ask(self, name: str, filter_: str, writer) -> None:
        if self.state.session is None:
            return
        start = str(Path(settings.get("last_dir") or Path.cwd()) / name)
        path, _ = QFileDialog.getSaveFileName(self.window, "Export", start, filter_)
        if path:
            settings.set("last_dir", str(Path(path).parent))
            self.export(writer, path)

    def export(self, writer, path) -> bool:
        try:
            if self.state.session is not None:
                check_outputs([("the export", path)], self.state.session.inputs())
            writer(path)
        except (OSError, RvqViewerError, ValueError) as exc:
            self.state.show_message(f"{path}: cannot export: {getattr(exc, 'strerror', None) or exc}")
            return False
        self.window.statusBar().showMessage(f"Wrote {path}", 5000)
        return True

    def export_json(self, path) -> None:
        """The report `rvq-viewer audit --json` writes (with the verdicts, once the audit is complete)."""
        snapshot = self.state.snapshot
        if snapshot is None:
            raise ValueError("no audit to export yet")
        write_json(path, snapshot.result, snapshot.verdicts if snapshot.final else [])

    def ask_json(self) -> None:
        if self.state.snapshot is not None:
            stem = self.state.session.checkpoint.stem if self.state.session else "audit"
            self.ask(f"{stem}.audit.json", "JSON (*.json)", self.export_json)

    def writers(self) -> list[tuple[object, str]]:
        w, layer = self.window, self.state.selection.layer
        return [(w.overview.export_csv, "overview.csv"), (w.dead_codes.export_csv, f"dead_codes_layer{layer}.csv"),
                (w.histogram.export_png, f"histogram_layer{layer}.png"), (w.map.export_png, "centroid_map.png"),
                (w.residuals.export_png, "residuals.png"), (self.export_json, "audit.json")]

    def export_all(self, folder) -> list[Path]:
        """Every table (CSV), plot (PNG) and the JSON report into `folder`; returns the files."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        written = [folder / name for writer, name in self.writers() if self.export(writer, folder / name)]
        self.window.statusBar().showMessage(f"Wrote {len(written)} files to {folder}", 8000)
        return written

    def ask_all(self) -> None:
        if self.state.snapshot is None:
            return
        folder = QFileDialog.getExistingDirectory(self.window, "Export everything to", settings.get("last_dir"))
        if folder:
            self.export_all(folder)

    # --- the HTML report ----------------------------------------------------------------------------------
    def ask_html(self) -> None:
        state = self.state
        if state.snapshot is None or state.session is None:
            state.show_message("Nothing to report yet: open a checkpoint and features, and let the audit run.", "info")
            return
        if not state.snapshot.final:
            state.show_message("The audit is not complete: export the report when it is (F5 runs it again).",
                               "info")
            return
        start = str(Path(settings.get("last_dir") or Path.cwd()) / f"{state.session.checkpoint.stem}.report.html")
        path, _ = QFileDialog.getSaveFileName(self.window, "Export HTML report", start, HTML_FILTER)
        if path:
            settings.set("last_dir", str(Path(path).parent))
            self.export_html(path)

    def export_html(self, path) -> bool:
        """Write the report of the window's audit (and the open comparison of it) in a worker; False if
        there is no complete audit."""
        state = self.state
        snapshot = state.snapshot
        if state.session is None or snapshot is None or snapshot.outcome is None:
            return False
        try:
            check_outputs([("the report", path)], state.session.inputs())
        except RvqViewerError as exc:
            state.show_message(str(exc))
            return False
        compared = self.window.compare.included_comparison()
        note = " with the comparison" if compared is not None else ""
        self.window.statusBar().showMessage(f"Writing the HTML report{note}…")
        self.report_slot.start(html_report_job, path, snapshot.outcome, compared, returned=self._written,
                               errored=self._failed)
        return True

    def _written(self, path) -> None:
        self.window.statusBar().showMessage(f"Wrote {path}", 8000)
        self.report_written.emit(Path(path))

    def _failed(self, exc: Exception) -> None:
        text = f"cannot write the HTML report: {error_text(exc)}"
        self.state.show_message(text)
        self.report_failed.emit(text)
