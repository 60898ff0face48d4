"""The main window: its panels in docks, the toolbar, the audit's progress, and the menus.

The window builds every panel explicitly and gives each the one `AppState`; the panels subscribe to it
and never reach into the window or into each other. Opening and auditing run in `AuditController`'s
workers; exports in `Exporter`; File > Compare with… in `CompareController`; the menus are `menus.py`,
each action under an id (`window.commands["audit.rerun"]`).
"""

from __future__ import annotations

import html
from pathlib import Path

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtWidgets import (QDockWidget, QFileDialog, QLabel, QMainWindow, QMessageBox, QPushButton, QVBoxLayout,
                               QWidget)

from ..io.run_db import is_run_path
from ..version import __version__
from . import run_on, settings, theme, unsaved, window_settings
from .actions import Actions
from .compare import CompareController
from .controller import AuditController
from .exports import Exporter
from .menus import build_menus
from .toolbar import build_toolbar
from .panels import (CentroidMapView, DeadCodesView, DiagnosisPanel, FamilyView, HistogramView, OverviewView,
                     ResidualsView)
from .runs import RunView
from .series import EventsView, SeriesFollower
from .state import AppState
from .trainer import TrainerPanel
from .widgets.banner import MessageBanner
from .widgets.fit_scroll import FitScroll
from .widgets.progress import ProgressStrip
from .workers import cancel_and_wait

CHECKPOINT_FILTER = "Quantizer checkpoints (*.pt *.pth *.ckpt *.safetensors *.npy *.npz *.bin);;All files (*)"
FEATURE_FILTER = "Feature files (*.npy *.pt *.pth *.npz *.safetensors);;All files (*)"
DIAGNOSIS_DOCK_WIDTH = 360
# The central map is not a dock; a verdict that points at it names it so.
VIEW_DOCKS = {"overview": "overview", "histogram": "histogram", "residuals": "residuals",
              "dead_codes": "dead_codes", "centroids": None, "family": "family"}
VIEW_LABELS = {"overview": "Overview", "histogram": "Usage histogram", "residuals": "Residual norms",
               "dead_codes": "Dead codes", "centroids": "Centroid map", "family": "Levels and bits"}


def default_size(screen: QSize) -> tuple[int, int]:
    """The first window: most of the screen, never more than is useful."""
    return (max(960, min(int(screen.width() * 0.94), 1800)), max(600, min(int(screen.height() * 0.94), 1120)))


def compact_for(size: QSize) -> bool:
    """Tabbed docks below this size: side by side, a plot would get under ~200 px."""
    return size.width() < 1500 or size.height() < 900


class MainWindow(QMainWindow):
    message_shown = Signal(str)

    def __init__(self, umap_service=None, parent=None):
        super().__init__(parent)
        self.setObjectName("rvq-viewer-main")
        self.setWindowTitle("rvq-viewer")
        self.setAcceptDrops(True)
        self.service = umap_service
        self.state = AppState(self)
        self.controller = AuditController(self.state, self)
        self.reference = None
        self._closing = False

        self.overview = OverviewView(self.state)
        self.histogram = HistogramView(self.state)
        self.map = CentroidMapView(self.state, umap_service)
        self.residuals = ResidualsView(self.state)
        self.dead_codes = DeadCodesView(self.state)
        self.diagnosis = DiagnosisPanel(self.state)
        self.events_view = EventsView(self.state)
        self.trainer_panel = TrainerPanel(self.state)
        self.family_view = FamilyView(self.state)
        self.run_view = RunView(self.state)
        self.series_follower = SeriesFollower(self.events_view)
        self.views = [self.overview, self.histogram, self.map, self.residuals, self.dead_codes, self.diagnosis,
                      self.events_view, self.trainer_panel, self.family_view, self.run_view]
        self.events_view.checkpoint_wanted.connect(lambda path: self.open(path))
        self.events_view.died_at_changed.connect(self.dead_codes.set_died_at)
        self.events_view.slot.busy_changed.connect(self._series_busy)
        self.trainer_panel.open_wanted.connect(lambda path: self.open(path))
        self.compare = CompareController(self.state, self)
        self.exporter = Exporter(self)

        self.banner = MessageBanner()
        central = QWidget()
        layout = QVBoxLayout(central)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self.banner)
        layout.addWidget(self.map, 1)
        self.setCentralWidget(central)
        self.docks: dict[str, QDockWidget] = {}
        self._build_docks()
        build_toolbar(self)
        self._build_statusbar()
        self.commands = Actions(self)
        build_menus(self)

        state = self.state
        state.session_changed.connect(self._session_changed)
        state.audit_finished.connect(lambda snapshot: self._update_actions())
        state.message.connect(self.show_message)
        state.view_requested.connect(self.show_view)
        state.selection.layer_changed.connect(self._layer_changed)
        state.selection.codes_changed.connect(self._codes_changed)
        self.controller.status.connect(self._status)
        self.controller.progress.connect(self._progress)
        self.controller.busy_changed.connect(self._busy_changed)
        self.diagnosis.headline_changed.connect(self.docks["diagnosis"].setWindowTitle)
        # Brought forward in a short bottom dock (a tab clicked at 1280x720), the trainer's plots get room.
        self.docks["trainer"].visibilityChanged.connect(lambda shown: shown and self.show_trainer())
        self._restore_settings()
        self._update_actions()

    # --- the state, for callers ---------------------------------------------------------------------------
    @property
    def selection(self):
        return self.state.selection

    @property
    def session(self):
        return self.state.session

    @property
    def snapshot(self):
        return self.state.snapshot

    @property
    def audit_slot(self):
        return self.controller.audit_slot

    @property
    def load_slot(self):
        return self.controller.load_slot

    # --- layout -------------------------------------------------------------------------------------------
    def _dock(self, widget, area, name: str, title: str) -> QDockWidget:
        """A dock for a panel. The panel scrolls inside it when the dock is smaller than the panel's minimum,
        so no dock forces the window past the screen and no plot is crushed below its useful size."""
        dock = QDockWidget(title, self)
        dock.setObjectName(f"dock-{name}")
        scroll = FitScroll(widget)
        scroll.setObjectName(f"scroll-{name}")
        dock.setWidget(scroll)
        dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable
                         | QDockWidget.DockWidgetFeature.DockWidgetFloatable
                         | QDockWidget.DockWidgetFeature.DockWidgetClosable)
        self.addDockWidget(area, dock)
        self.docks[name] = dock
        return dock

    def _build_docks(self) -> None:
        self.setDockOptions(QMainWindow.DockOption.AnimatedDocks | QMainWindow.DockOption.AllowTabbedDocks
                            | QMainWindow.DockOption.AllowNestedDocks)
        self.setCorner(Qt.Corner.BottomRightCorner, Qt.DockWidgetArea.BottomDockWidgetArea)
        self.setCorner(Qt.Corner.BottomLeftCorner, Qt.DockWidgetArea.BottomDockWidgetArea)
        self.setCorner(Qt.Corner.TopRightCorner, Qt.DockWidgetArea.RightDockWidgetArea)
        right, bottom = Qt.DockWidgetArea.RightDockWidgetArea, Qt.DockWidgetArea.BottomDockWidgetArea
        self._dock(self.histogram, right, "histogram", self.histogram.title)
        self._dock(self.residuals, right, "residuals", self.residuals.title)
        self._dock(self.overview, bottom, "overview", self.overview.title)
        self._dock(self.dead_codes, bottom, "dead_codes", self.dead_codes.title)
        self._dock(self.diagnosis, Qt.DockWidgetArea.LeftDockWidgetArea, "diagnosis", self.diagnosis.title)
        self._dock(self.events_view, bottom, "events", "Events (checkpoint series)")
        self._dock(self.trainer_panel, bottom, "trainer", "Trainer (what-if)")
        self._dock(self.family_view, bottom, "family", self.family_view.title)
        self._dock(self.run_view, bottom, "run", "Run (live)")
        self.resize(*default_size(self.screen().availableGeometry().size()))
        self.arrange(compact_for(self.size()))

    def arrange(self, compact: bool) -> None:
        """Place the docks: side by side on a large screen; on a small one (1280x720) the right and the
        bottom docks go into tabs, so that every plot keeps a useful size instead of shrinking to a sliver."""
        d = self.docks
        right, bottom = Qt.DockWidgetArea.RightDockWidgetArea, Qt.DockWidgetArea.BottomDockWidgetArea
        for name in ("histogram", "residuals"):
            self.addDockWidget(right, d[name])
        for name in ("overview", "dead_codes", "events", "trainer", "family", "run"):
            self.addDockWidget(bottom, d[name])
        self.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, d["diagnosis"])
        if compact:
            self.tabifyDockWidget(d["histogram"], d["residuals"])
            for name in ("dead_codes", "events", "trainer", "family", "run"):
                self.tabifyDockWidget(d["overview"], d[name])
        else:
            self.splitDockWidget(d["histogram"], d["residuals"], Qt.Orientation.Vertical)
            self.splitDockWidget(d["overview"], d["dead_codes"], Qt.Orientation.Horizontal)
            for name in ("events", "trainer", "family", "run"):
                self.tabifyDockWidget(d["overview"], d[name])
        width, height = self.width(), self.height()
        self.resizeDocks([d["diagnosis"]], [int(0.22 * width) if compact else DIAGNOSIS_DOCK_WIDTH],
                         Qt.Orientation.Horizontal)
        self.resizeDocks([d["histogram"]], [int(0.36 * width)], Qt.Orientation.Horizontal)
        self.resizeDocks([d["overview"]], [int(0.30 * height)], Qt.Orientation.Vertical)
        if not compact:
            self.resizeDocks([d["histogram"], d["residuals"]], [int(0.3 * height), int(0.32 * height)],
                             Qt.Orientation.Vertical)
            self.resizeDocks([d["overview"], d["dead_codes"]], [int(0.53 * width), int(0.47 * width)],
                             Qt.Orientation.Horizontal)
        d["histogram"].raise_()
        d["overview"].raise_()            # the first tab of the bottom group
        self.compact = compact

    def _build_statusbar(self) -> None:
        status = self.statusBar()
        self.progress = ProgressStrip()
        self.progress.setObjectName("audit-progress")
        self.progress.setRange(0, 1000)
        self.progress.setFixedWidth(220)
        self.rate_label = QLabel("")
        self.rate_label.setObjectName("audit-rate")
        # As wide as its longest text from the start: a status bar widget that widens relays out the window.
        self.rate_label.setMinimumWidth(self.rate_label.fontMetrics().horizontalAdvance(
            "99,999,999 / 99,999,999 frames · 9,999,999 frames/s") + 12)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setObjectName("audit-cancel")
        self.cancel_button.setToolTip("Stop the audit and keep the partial results (Esc)")
        self.cancel_button.clicked.connect(self.cancel_audit)
        status.addPermanentWidget(self.rate_label)
        status.addPermanentWidget(self.progress)
        status.addPermanentWidget(self.cancel_button)
        self.progress.hide()
        self.cancel_button.hide()

    # --- opening ------------------------------------------------------------------------------------------
    def open(self, checkpoint: str | Path | None = None, features: list | None = None,
             paths: list | None = None, load=None) -> None:
        self.banner.dismiss()
        self.controller.open(checkpoint, features, paths, load)

    def ask_open_checkpoint(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open quantizer checkpoint", settings.get("last_dir"),
                                              CHECKPOINT_FILTER)
        if path:
            settings.set("last_dir", str(Path(path).parent))
            self.open(path)

    def ask_open_model_folder(self) -> None:
        """A transformers save_pretrained folder or a Hugging Face cache folder, as the checkpoint."""
        path = QFileDialog.getExistingDirectory(self, "Open a model folder (save_pretrained or Hugging Face cache)",
                                                settings.get("last_dir"))
        if path:
            settings.set("last_dir", str(Path(path).parent))
            self.open(path)

    def ask_open_features(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(self, "Open feature files", settings.get("last_dir"), FEATURE_FILTER)
        if paths:
            settings.set("last_dir", str(Path(paths[0]).parent))
            self.open(None, paths)

    def ask_open_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open a folder of feature files", settings.get("last_dir"))
        if path:
            settings.set("last_dir", path)
            self.open(None, [path])

    def open_series(self) -> None:
        self._raise_dock("events")
        self.events_view.ask_open_folder()

    def open_run(self, path: str | Path | None = None) -> None:
        """Follow a monitored training run (a run directory or its database; None: ask for one)."""
        self._raise_dock("run", 420)
        self.run_view.open(path) if path else self.run_view.ask_open()

    def _session_changed(self, session) -> None:
        self.layer_box.blockSignals(True)
        self.layer_box.clear()
        for i in range(session.n_q if session is not None else 0):
            self.layer_box.addItem(f"Layer {i}  (K {len(session.codebooks[i]):,})", i)
        self.layer_box.blockSignals(False)
        if self.reference is not None:
            self.residuals.set_reference(*self.reference)
        self.setWindowTitle(f"rvq-viewer — {session.name}" if session is not None else "rvq-viewer")
        if session is not None and (not session.quantizer.family.learned or session.quantizer.n_tables > 1):
            self.docks["family"].raise_()      # FSQ levels, LFQ bits, per-table usage: this family's own view
        self._update_actions()

    def dragEnterEvent(self, event):  # noqa: N802
        if event.mimeData().hasUrls() and all(u.isLocalFile() for u in event.mimeData().urls()):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dropEvent(self, event):  # noqa: N802
        paths = [Path(u.toLocalFile()) for u in event.mimeData().urls() if u.isLocalFile()]
        if paths:
            event.acceptProposedAction()
            self.open_run(paths[0]) if len(paths) == 1 and is_run_path(paths[0]) else self.open(paths=paths)

    # --- audit ---------------------------------------------------------------------------------------------
    @property
    def device(self) -> str:
        return self.device_box.currentData() or "auto"

    def set_device(self, name: str) -> None:
        index = self.device_box.findData(name)
        if index >= 0:
            self.device_box.setCurrentIndex(index)

    def _device_changed(self, _index: int) -> None:
        self.state.set_device(self.device)
        settings.set("device", self.device)
        for act in self.device_group.actions() if hasattr(self, "device_group") else []:
            act.setChecked(act.text() == self.device)
        if self.session is not None and self.session.source is not None:
            self.start_audit()

    def start_audit(self) -> None:
        self.progress.setValue(0)
        self.rate_label.setText("")
        self.controller.start_audit()

    def cancel_audit(self) -> None:
        self.controller.cancel_audit()

    def _progress(self, snapshot) -> None:
        self.progress.setValue(int(snapshot.fraction * 1000))
        self.rate_label.setText(f"{snapshot.frames_done:,} / {snapshot.frames_total or 0:,} frames · "
                                f"{snapshot.frames_per_second:,.0f} frames/s")

    def _busy_changed(self) -> None:
        busy = self.audit_slot.busy
        self.progress.setVisible(busy)
        self.cancel_button.setVisible(busy)
        self._update_actions()

    def _status(self, text: str, msecs: int) -> None:
        self.statusBar().showMessage(text, msecs)

    def _layer_changed(self, layer: int) -> None:
        if self.layer_box.currentIndex() != layer:
            self.layer_box.blockSignals(True)
            self.layer_box.setCurrentIndex(layer)
            self.layer_box.blockSignals(False)

    # --- comparison reference -------------------------------------------------------------------------------
    def pin_reference(self) -> None:
        if self.session is not None and self.snapshot is not None:
            self.set_reference((self.session.name, self.snapshot))

    def set_reference(self, reference) -> None:
        self.reference = reference
        if reference is None:
            self.residuals.set_reference(None, None)
        else:
            self.residuals.set_reference(*reference)
            self.statusBar().showMessage(f"Pinned {reference[0]} as the reference: open another checkpoint "
                                         "to compare.", 8000)

    # --- views ------------------------------------------------------------------------------------------------
    def show_message(self, text: str, kind: str = "error") -> None:
        self.banner.show_message(text, kind)
        self.statusBar().showMessage(text, 10000)
        self.message_shown.emit(text)

    def _raise_dock(self, name: str, height: int | None = None) -> None:
        dock = self.docks[name]
        dock.show()
        dock.raise_()
        if height is not None and not dock.isFloating() and dock.height() < height:
            self.resizeDocks([dock], [height + 20], Qt.Orientation.Vertical)

    def show_trainer(self) -> None:
        self._raise_dock("trainer", 440)

    def _series_busy(self, busy: bool) -> None:
        if not busy and self.events_view.result is not None:
            self._raise_dock("events", 420)

    def show_view(self, name: str) -> None:
        """Bring forward the view of `name` (a verdict's evidence); one tabbed with the Diagnosis dock is
        left where it is, so the verdict stays in sight."""
        label = VIEW_LABELS.get(name, name)
        dock = self.docks.get(VIEW_DOCKS.get(name, name) or "")
        if dock is None:
            self.map.setFocus(Qt.FocusReason.OtherFocusReason)
        elif dock in self.tabifiedDockWidgets(self.docks["diagnosis"]):
            self.statusBar().showMessage(f"Evidence: the {label} tab beside the Diagnosis", 6000)
            return
        else:
            dock.show()
            dock.raise_()
        self.statusBar().showMessage(f"Evidence: {label}", 5000)

    def set_cluster(self, address: str) -> None:
        """Where the next audits run: a Dask address, or "" for this machine (gui/run_on.py)."""
        run_on.set_cluster(self, address)

    def set_theme(self, choice: str) -> None:
        """Light, dark or the desktop's: the window and the plots already drawn restyle at once."""
        from PySide6.QtWidgets import QApplication
        old = theme.current()
        new = theme.apply(QApplication.instance(), choice)
        settings.set("theme", choice)
        for act in self.theme_group.actions():
            act.setChecked(act.data() == choice)
        theme.restyle([self], old, new)          # the compare window is a child: restyled with it
        for view in self.views:                     # texts with the theme's colours in them
            if hasattr(view, "_show_header"):
                view._show_header()
        if self.state.snapshot is not None:
            self.state.set_snapshot(self.state.snapshot)

    def focus_goto(self) -> None:
        self.goto_box.setFocus(Qt.FocusReason.ShortcutFocusReason)
        self.goto_box.selectAll()

    def reset_views(self) -> None:
        for view in self.views:
            view.reset_view()

    def show_shortcuts(self) -> None:
        from .shortcuts import ShortcutsDialog
        self.shortcuts_dialog = ShortcutsDialog(self.commands, self)
        self.shortcuts_dialog.show()

    def _codes_changed(self, layer: int, codes) -> None:
        if len(codes):
            self.statusBar().showMessage(f"{len(codes):,} codes of layer {layer} boxed on the map "
                                         "(Ctrl+D clears)", 8000)

    def views_ready(self, wait_umap: bool = False) -> bool:
        """Every view shows data for the newest complete audit (and UMAP, if asked to wait for it)."""
        snap = self.snapshot
        if self.session is None or snap is None or not snap.complete:
            return False
        if self.load_slot.busy or self.controller.pending or self.state.delivering:
            return False
        if not all(view.ready for view in self.views):
            return False
        return not (wait_umap and self.map.umap_pending)

    def _update_actions(self) -> None:
        if not hasattr(self, "commands"):
            return
        has_session = self.session is not None
        has_audit = self.snapshot is not None
        a = self.commands
        a["audit.rerun"].setEnabled(has_session and self.session.source is not None)
        self.rerun_button.setEnabled(a["audit.rerun"].isEnabled())
        a["audit.cancel"].setEnabled(self.audit_slot.busy)
        a["export.json"].setEnabled(has_audit or has_session)
        a["export.html"].setEnabled(has_audit)
        a["audit.pin"].setEnabled(has_session)
        a["file.compare"].setEnabled(has_session)
        for widget in (self.layer_box, self.prev_button, self.next_button):
            widget.setEnabled(has_session)

    def reset_layout(self) -> None:
        """Every dock back in the arrangement that fits the window's size now."""
        for dock in self.docks.values():
            dock.setFloating(False)
            dock.show()
        self.arrange(compact_for(self.size()))

    # --- settings ------------------------------------------------------------------------------------------
    def _restore_settings(self) -> None:
        window_settings.restore(self)

    def save_settings(self) -> None:
        window_settings.save(self)

    def about(self) -> None:
        QMessageBox.about(self, "About rvq-viewer",
                          f"<b>rvq-viewer {__version__}</b><p>Open a trained residual vector quantizer, run it "
                          "over your features, and see whether its codebooks are healthy or collapsed.</p>"
                          f"<p>Settings: {html.escape(str(settings.settings_file()))}<br>"
                          f"Cache: {html.escape(str(settings.cache_dir()))}</p>")

    # --- shutdown ------------------------------------------------------------------------------------------
    def shutdown(self, msecs: int = 5000) -> bool:
        """Cancel every job, wait for the workers, end the UMAP process. Safe to call twice."""
        if self._closing:
            return True
        self._closing = True
        slots = self.controller.shutdown()
        for view in self.views:
            view.cleanup()
        self.compare.shutdown()
        self.exporter.cancel()
        ok = cancel_and_wait(slots + [self.map.slot, self.dead_codes.slot, self.events_view.slot,
                                      self.trainer_panel.slot, self.trainer_panel.save_slot,
                                      *self.exporter.slots, *self.run_view.slots], msecs)
        if self.service is not None:
            self.service.close()
        return ok

    def confirm_close(self) -> bool:
        """True to go on closing: nothing unsaved, or the user chose to discard it."""
        return unsaved.confirm_close(self)

    def _ask_unsaved(self, runs) -> str:
        return unsaved.ask(self, runs)

    def closeEvent(self, event):  # noqa: N802
        if not self._closing and not self.confirm_close():
            event.ignore()
            return
        if not self._closing:
            self.save_settings()
        self.shutdown()
        super().closeEvent(event)
