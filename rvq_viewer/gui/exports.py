"""File > Export: plots (PNG, titled), tables (CSV, typed), the audit JSON, the HTML report, and
everything to a folder (every layer's tables and histogram, the JSON, the report and the plots).

The HTML report and the folder's files are written in workers, with progress and Cancel in the status
bar; the plots are drawn in the window afterwards (they need its views). An export is never written
over a file the session reads (the checkpoint, a feature file): the command line's outputs check.
Dialogs open in the folder of the last export (default: the user's documents), not the demo's.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QEventLoop, QObject, Qt, Signal
from PySide6.QtWidgets import QApplication, QFileDialog

from ..app.compare_jobs import html_report_job
from ..app.export_jobs import export_folder_job
from ..analysis.diagnosis import write_json
from ..errors import CancelledError, RvqViewerError
from ..io import check_outputs
from . import settings
from .controller import error_text
from .state import AppState
from .widgets.task_strip import TaskStrip
from .workers import JobSlot

HTML_FILTER = "HTML (*.html *.htm)"


class Exporter(QObject):
    """The window's exports. `window` gives the panels (`overview`, `dead_codes`, `histogram`, `map`,
    `residuals`), the state, and the compare controller whose comparison the HTML report may include."""

    report_written = Signal(object)      # Path of an HTML report
    report_failed = Signal(str)
    folder_written = Signal(object)      # [Path] of an export to a folder

    def __init__(self, window):
        super().__init__(window)
        self.window = window
        self.state = window.state
        self.report_slot = JobSlot("html-report", self)
        self.folder_slot = JobSlot("export-folder", self)
        self.task = TaskStrip("export")
        self.task.cancel_requested.connect(self.cancel)
        window.statusBar().addPermanentWidget(self.task)

    @property
    def slots(self) -> list[JobSlot]:
        return [self.report_slot, self.folder_slot]

    def cancel(self) -> None:
        busy = any(slot.busy for slot in self.slots)
        for slot in self.slots:
            slot.cancel()
        self.task.end()
        if busy:
            self.window.statusBar().showMessage("Export cancelled: no file was left half-written", 6000)

    # --- one file -----------------------------------------------------------------------------------------
    def ask(self, name: str, filter_: str, writer) -> None:
        if self.state.session is None:
            return
        path, _ = QFileDialog.getSaveFileName(self.window, "Export", str(settings.export_dir() / name), filter_)
        if path:
            settings.set("export_dir", str(Path(path).parent))
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

    # --- everything to a folder -----------------------------------------------------------------------------
    def ask_all(self) -> None:
        if self.state.snapshot is None:
            return
        folder = QFileDialog.getExistingDirectory(self.window, "Export everything to", str(settings.export_dir()))
        if folder:
            settings.set("export_dir", folder)
            self.export_all(folder)

    def export_all(self, folder) -> bool:
        """Start writing everything into `folder`; `folder_written` gives the files when done."""
        state = self.state
        if state.session is None or state.snapshot is None:
            return False
        folder = Path(folder)
        self.task.begin(f"Exporting to {folder.name}…")
        died_at = self.window.dead_codes.model.died_at
        self.folder_slot.start(export_folder_job, folder, state.session, state.snapshot,
                               self.window.compare.included_comparison(), died_at,
                               yielded=lambda step: self.task.step(step.done, step.total, f"Exporting {step.what}…"),
                               returned=lambda files: self._folder_done(folder, files),
                               errored=lambda exc: self._failed(exc, f"cannot export to {folder}"))
        return True

    def _folder_done(self, folder: Path, files: list[Path]) -> None:
        """The worker's files are written: now the plots, drawn by views in this thread."""
        w, layer = self.window, self.state.selection.layer
        self.task.step(9, 10, "Drawing the plots…")
        plots = [(w.map.export_png, "centroid_map.png"), (w.residuals.export_png, "residuals.png")]
        try:
            check_outputs([("the export", folder / name) for _, name in plots], self.state.session.inputs())
            files = files + self._layer_histograms(folder)
            for writer, name in plots:
                writer(folder / name)
                files.append(folder / name)
        except Exception as exc:  # noqa: BLE001 (whatever went wrong, the strip goes and the user is told)
            self._failed(exc, f"cannot export to {folder}")
            return
        self.task.end()
        w.statusBar().showMessage(f"Wrote {len(files)} files to {folder} (layer {layer} selected)", 8000)
        self.folder_written.emit(files)

    def _layer_histograms(self, folder: Path) -> list[Path]:
        """histogram_layer{i}.png for every layer, from a view of its own (the window's selection stays)."""
        from .panels import HistogramView
        state = AppState()
        view = HistogramView(state)
        view.setAttribute(Qt.WidgetAttribute.WA_DontShowOnScreen)
        view.resize(1000, 560)
        view.log_box.setChecked(self.window.histogram.log_box.isChecked())
        view.sorted_box.setChecked(self.window.histogram.sorted_box.isChecked())
        view.show()
        try:
            view.set_session(self.state.session)
            state.selection.reset(self.state.session.n_q)
            view.set_snapshot(self.state.snapshot)
            written = []
            for layer in range(self.state.session.n_q):
                state.selection.set_layer(layer)
                # The layouts and axes of a view never shown settle in posted events: run those (not input).
                QApplication.processEvents(QEventLoop.ProcessEventsFlag.ExcludeUserInputEvents)
                path = folder / f"histogram_layer{layer}.png"
                check_outputs([("the export", path)], self.state.session.inputs())
                view.export_png(path)
                written.append(path)
            return written
        finally:
            view.cleanup()
            view.close()
            view.deleteLater()
            state.deleteLater()

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
        start = str(settings.export_dir() / f"{state.session.checkpoint.stem}.report.html")
        path, _ = QFileDialog.getSaveFileName(self.window, "Export HTML report", start, HTML_FILTER)
        if path:
            settings.set("export_dir", str(Path(path).parent))
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
        self.task.begin(f"Writing the HTML report{note}…")
        self.report_slot.start(html_report_job, path, snapshot.outcome, compared,
                               yielded=lambda step: self.task.step(step.done, step.total,
                                                                   f"HTML report: {step.what} done…"),
                               returned=self._written, errored=self._failed)
        return True

    def _written(self, path) -> None:
        self.task.end()
        self.window.statusBar().showMessage(f"Wrote {path}", 8000)
        self.report_written.emit(Path(path))

    def _failed(self, exc: Exception, what: str = "cannot write the HTML report") -> None:
        self.task.end()
        if isinstance(exc, CancelledError):
            return
        text = f"{what}: {error_text(exc)}"
        self.state.show_message(text)
        self.report_failed.emit(text)
