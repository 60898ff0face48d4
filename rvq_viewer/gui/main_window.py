"""The main window: docks for the five views, menus, the audit's progress, and the open/audit flow.

Data flows one way: files -> `jobs.open_job` (worker) -> `Session` -> `jobs.audit_stream` (worker)
-> `Snapshot`s. Workers only hand over finished objects; a 10 Hz timer gives the newest snapshot to
the views (ScopeFoundry's display timer), so a fast audit cannot flood the event loop.
"""

from __future__ import annotations

import dataclasses
import html
from pathlib import Path

from PySide6.QtCore import QByteArray, QElapsedTimer, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import (
    QComboBox,
    QDockWidget,
    QFileDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QPushButton,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from .. import __version__
from ..audit import available_devices
from ..cli import demo_paths
from ..errors import RvqViewerError
from . import compare_window, jobs, settings
from .banner import MessageBanner
from .model import Session, Snapshot
from .progress import ProgressStrip
from .state import Selection
from .views import CentroidMapView, DeadCodesView, HistogramView, OverviewView, ResidualsView, timeline, trainer_panel
from .workers import JobSlot, cancel_and_wait

REDRAW_MS = 100
# Between two views' updates. A view's update repaints its plot in a chain of posted events (scene
# change, repaint, axis relabel, repaint) that Qt runs in one pass of the event loop; two views updated
# 1 ms apart landed in the same pass, a 60-100 ms stall. 30 ms leaves each chain a pass of its own
# (benchmarks/ui.py: the largest gap fell from 60-100 ms to 20-40 ms).
STAGGER_MS = 30
CHECKPOINT_FILTER = "Quantizer checkpoints (*.pt *.pth *.ckpt *.safetensors *.npy *.npz *.bin);;All files (*)"
FEATURE_FILTER = "Feature files (*.npy *.pt *.pth *.npz *.safetensors);;All files (*)"


def error_text(exc: BaseException) -> str:
    """One line for the user: our errors say 'path: reason'; anything else gets its type."""
    if isinstance(exc, RvqViewerError):
        return str(exc)
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


class MainWindow(QMainWindow):
    session_changed = Signal()
    snapshot_applied = Signal(object)
    audit_done = Signal(object)          # the last snapshot of an audit: complete or cancelled
    message_shown = Signal(str)

    def __init__(self, umap_service=None, parent=None):
        super().__init__(parent)
        self.setObjectName("rvq-viewer-main")
        self.setWindowTitle("rvq-viewer")
        self.setAcceptDrops(True)
        self.service = umap_service
        self.selection = Selection(self)
        self.session: Session | None = None
        self.snapshot: Snapshot | None = None
        self.reference: tuple[str, Snapshot] | None = None
        self._pending: Snapshot | None = None
        self._stale: list = []      # views still to draw self.snapshot, next first
        self._closing = False
        self.load_slot = JobSlot("load", self)
        self.audit_slot = JobSlot("audit", self)

        self.overview = OverviewView(self.selection)
        self.histogram = HistogramView(self.selection)
        self.map = CentroidMapView(self.selection, umap_service)
        self.residuals = ResidualsView(self.selection)
        self.dead_codes = DeadCodesView(self.selection)
        self.views = [self.overview, self.histogram, self.map, self.residuals, self.dead_codes]

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
        self._build_toolbar()
        self._build_statusbar()
        self._build_menus()
        self.selection.layer_changed.connect(self._layer_changed)
        # Features that add their own docks and menus through the window's public attributes.
        self.diagnosis_compare = compare_window.install(self)  # Diagnosis dock, Compare, HTML report
        self.events_view = timeline.install(self)                # checkpoint series and events
        self.trainer_panel = trainer_panel.install(self)         # live what-if trainer
        self.docks["overview"].raise_()           # the first tab of the bottom group, not the last added
        self._default_state = self.saveState()  # retaken so Reset layout re-docks the docks added above

        self.timer = QTimer(self)
        self.timer.setInterval(REDRAW_MS)
        self.timer.timeout.connect(self._tick)
        self.timer.start()
        self._stagger = QTimer(self)
        self._stagger.setSingleShot(True)
        self._stagger.timeout.connect(self._apply_next)
        self._since_apply = QElapsedTimer()
        self._since_apply.start()
        self.audit_slot.busy_changed.connect(self._audit_busy)
        self.load_slot.busy_changed.connect(lambda busy: self._update_actions())
        self._restore_settings()
        self._update_actions()

    # --- layout -------------------------------------------------------------------------------------------
    def _build_docks(self) -> None:
        self.setDockOptions(QMainWindow.DockOption.AnimatedDocks | QMainWindow.DockOption.AllowTabbedDocks
                            | QMainWindow.DockOption.AllowNestedDocks)
        self.setCorner(Qt.Corner.BottomRightCorner, Qt.DockWidgetArea.BottomDockWidgetArea)
        self.setCorner(Qt.Corner.BottomLeftCorner, Qt.DockWidgetArea.BottomDockWidgetArea)
        self.setCorner(Qt.Corner.TopRightCorner, Qt.DockWidgetArea.RightDockWidgetArea)
        places = [(self.histogram, Qt.DockWidgetArea.RightDockWidgetArea),
                  (self.residuals, Qt.DockWidgetArea.RightDockWidgetArea),
                  (self.overview, Qt.DockWidgetArea.BottomDockWidgetArea),
                  (self.dead_codes, Qt.DockWidgetArea.BottomDockWidgetArea)]
        for view, area in places:
            dock = QDockWidget(view.title, self)
            dock.setObjectName(f"dock-{view.objectName()}")
            dock.setWidget(view)
            dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable
                             | QDockWidget.DockWidgetFeature.DockWidgetFloatable
                             | QDockWidget.DockWidgetFeature.DockWidgetClosable)
            self.addDockWidget(area, dock)
            self.docks[view.objectName()] = dock
        self.splitDockWidget(self.docks["histogram"], self.docks["residuals"], Qt.Orientation.Vertical)
        self.splitDockWidget(self.docks["overview"], self.docks["dead_codes"], Qt.Orientation.Horizontal)
        self.resize(1500, 950)
        self.resizeDocks([self.docks["histogram"]], [660], Qt.Orientation.Horizontal)
        self.resizeDocks([self.docks["histogram"], self.docks["residuals"]], [300, 320], Qt.Orientation.Vertical)
        self.resizeDocks([self.docks["overview"]], [300], Qt.Orientation.Vertical)
        self.resizeDocks([self.docks["overview"], self.docks["dead_codes"]], [800, 700], Qt.Orientation.Horizontal)
        self._default_state = self.saveState()

    def _build_toolbar(self) -> None:
        bar = QToolBar("Main")
        bar.setObjectName("toolbar-main")
        bar.setMovable(False)
        self.addToolBar(bar)
        self.toolbar = bar
        self.open_button = QPushButton("Open…")
        self.open_button.setToolTip("Open a quantizer checkpoint (Ctrl+O)")
        self.open_button.clicked.connect(self.ask_open_checkpoint)
        bar.addWidget(self.open_button)
        bar.addSeparator()
        bar.addWidget(QLabel(" Layer "))
        self.layer_box = QComboBox()
        self.layer_box.setObjectName("layer-box")
        self.layer_box.setMinimumWidth(150)
        self.layer_box.currentIndexChanged.connect(self._layer_box_changed)
        bar.addWidget(self.layer_box)
        self.prev_button = QPushButton("◀")
        self.prev_button.setToolTip("Previous layer ([)")
        self.prev_button.setFixedWidth(32)
        self.prev_button.clicked.connect(lambda: self.selection.step_layer(-1))
        self.next_button = QPushButton("▶")
        self.next_button.setToolTip("Next layer (])")
        self.next_button.setFixedWidth(32)
        self.next_button.clicked.connect(lambda: self.selection.step_layer(1))
        bar.addWidget(self.prev_button)
        bar.addWidget(self.next_button)
        bar.addSeparator()
        bar.addWidget(QLabel(" Device "))
        self.device_box = QComboBox()
        self.device_box.setObjectName("device-box")
        for name in available_devices():
            self.device_box.addItem(name, name)
        self.device_box.currentIndexChanged.connect(self._device_changed)
        bar.addWidget(self.device_box)
        self.rerun_button = QPushButton("Re-run audit")
        self.rerun_button.setToolTip("Audit the features again (F5)")
        self.rerun_button.clicked.connect(self.start_audit)
        bar.addWidget(self.rerun_button)

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

    def _action(self, menu, text, slot, shortcut=None, tip="") -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            shortcuts = shortcut if isinstance(shortcut, list) else [shortcut]
            action.setShortcuts([QKeySequence(s) for s in shortcuts])
            action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        if tip:
            action.setStatusTip(tip)
        action.triggered.connect(lambda checked=False: slot())
        menu.addAction(action)
        self.addAction(action)
        return action

    def _build_menus(self) -> None:
        bar = self.menuBar()
        m = bar.addMenu("&File")
        self.act_open = self._action(m, "Open &checkpoint…", self.ask_open_checkpoint, QKeySequence.StandardKey.Open)
        self.act_open_features = self._action(m, "Open &features…", self.ask_open_features, "Ctrl+Shift+O")
        self._action(m, "Open feature f&older…", self.ask_open_folder)
        demo = m.addMenu("Open &demo")
        self._action(demo, "Healthy quantizer", lambda: self.open_demo("healthy"))
        self._action(demo, "Collapsed quantizer", lambda: self.open_demo("collapsed"))
        self.recent_menu = m.addMenu("&Recent")
        self.recent_menu.aboutToShow.connect(self._fill_recent)
        m.addSeparator()
        export = m.addMenu("&Export")
        self.act_export_json = self._action(export, "Audit report (&JSON)…", self.ask_export_json, "Ctrl+E")
        self._action(export, "Overview table (CSV)…",
                     lambda: self._ask_export("overview.csv", "CSV (*.csv)", self.overview.export_csv))
        self._action(export, "Dead codes table (CSV)…",
                     lambda: self._ask_export(f"dead_codes_layer{self.selection.layer}.csv", "CSV (*.csv)",
                                              self.dead_codes.export_csv))
        self._action(export, "Usage histogram (PNG)…",
                     lambda: self._ask_export(f"histogram_layer{self.selection.layer}.png", "PNG (*.png)",
                                              self.histogram.export_png))
        self._action(export, "Centroid map (PNG)…",
                     lambda: self._ask_export("centroid_map.png", "PNG (*.png)", self.map.export_png))
        self._action(export, "Residual norms (PNG)…",
                     lambda: self._ask_export("residuals.png", "PNG (*.png)", self.residuals.export_png))
        export.addSeparator()
        self.act_export_all = self._action(export, "Everything to a &folder…", self.ask_export_all, "Ctrl+Shift+E")
        m.addSeparator()
        self._action(m, "&Quit", self.close, QKeySequence.StandardKey.Quit)

        v = bar.addMenu("&View")
        self.act_next = self._action(v, "&Next layer", lambda: self.selection.step_layer(1), ["]", "Alt+Right"])
        self.act_prev = self._action(v, "&Previous layer", lambda: self.selection.step_layer(-1), ["[", "Alt+Left"])
        self._action(v, "Clear code selection", self.selection.clear_code, "Ctrl+D")
        v.addSeparator()
        self.act_log = QAction("Histogram: &log scale", self, checkable=True)
        self.act_log.setShortcut(QKeySequence("Ctrl+L"))
        self.act_log.toggled.connect(self.histogram.log_box.setChecked)
        self.histogram.log_box.toggled.connect(self.act_log.setChecked)
        self.act_sorted = QAction("Histogram: &sorted (rank-frequency)", self, checkable=True)
        self.act_sorted.setShortcut(QKeySequence("Ctrl+R"))
        self.act_sorted.toggled.connect(self.histogram.sorted_box.setChecked)
        self.histogram.sorted_box.toggled.connect(self.act_sorted.setChecked)
        self.act_all_layers = QAction("Map: &all layers", self, checkable=True)
        self.act_all_layers.setShortcut(QKeySequence("Ctrl+Shift+A"))
        self.act_all_layers.toggled.connect(self.map.set_all_layers)
        self.map.mode_box.currentIndexChanged.connect(lambda _: self.act_all_layers.setChecked(self.map.all_layers))
        for action in (self.act_log, self.act_sorted, self.act_all_layers):
            v.addAction(action)
            self.addAction(action)
        v.addSeparator()
        for dock in self.docks.values():
            v.addAction(dock.toggleViewAction())
        self._action(v, "Reset &layout", self.reset_layout)

        a = bar.addMenu("&Audit")
        self.act_rerun = self._action(a, "&Re-run", self.start_audit, "F5")
        self.act_cancel = self._action(a, "&Cancel", self.cancel_audit, "Esc")
        devices = a.addMenu("&Device")
        self.device_group = QActionGroup(self)
        for name in available_devices():
            act = QAction(name, self, checkable=True)
            act.triggered.connect(lambda checked=False, n=name: self.set_device(n))
            self.device_group.addAction(act)
            devices.addAction(act)
        a.addSeparator()
        self.act_pin = self._action(a, "&Pin as comparison reference", self.pin_reference, "Ctrl+K",
                                    "keep this audit as a dotted reference in the residual plot")
        self._action(a, "C&lear reference", lambda: self.set_reference(None))

        h = bar.addMenu("&Help")
        self._action(h, "&About", self._about)

    # --- opening -------------------------------------------------------------------------------------------
    def open(self, checkpoint: str | Path | None = None, features: list | None = None,
             paths: list | None = None) -> None:
        """Open a checkpoint and/or features (see `jobs.open_job`); loading runs in a worker."""
        self.audit_slot.cancel()
        self.banner.dismiss()
        self.statusBar().showMessage("Loading…")
        self.load_slot.start(
            jobs.open_job, Path(checkpoint) if checkpoint else None,
            [Path(f) for f in features] if features is not None else None,
            [Path(p) for p in paths] if paths else None, self.session, settings.get("chunk_frames"),
            returned=self._opened, errored=self._load_failed)
        self._update_actions()

    def open_demo(self, which: str = "healthy") -> None:
        healthy, features = demo_paths()
        self.open(healthy.with_name(f"{which}.pt"), features)

    def _opened(self, opened: jobs.Opened) -> None:
        session = opened.session
        self.session = session
        self.snapshot = None
        self._pending = None
        self._stale.clear()
        self.selection.reset(session.n_q)
        self.layer_box.blockSignals(True)
        self.layer_box.clear()
        for i in range(session.n_q):
            self.layer_box.addItem(f"Layer {i}  (K {len(session.codebooks[i]):,})", i)
        self.layer_box.blockSignals(False)
        for view in self.views:
            view.set_session(session)
        if self.reference is not None:
            self.residuals.set_reference(*self.reference)
        self.setWindowTitle(f"rvq-viewer — {session.name}")
        if session.source is not None:
            settings.add_recent(session.checkpoint, session.features)
            self.start_audit()
        else:
            self.statusBar().showMessage("No features open: File ▸ Open features (Ctrl+Shift+O) to audit.")
        if opened.note:
            self.show_message(opened.note, "info")
        self._update_actions()
        self.session_changed.emit()

    def _load_failed(self, exc: Exception) -> None:
        self.statusBar().showMessage("Loading failed", 5000)
        self.show_message(error_text(exc))
        self._update_actions()

    def show_message(self, text: str, kind: str = "error") -> None:
        self.banner.show_message(html.escape(text), kind)
        self.statusBar().showMessage(text, 10000)
        self.message_shown.emit(text)

    def ask_open_checkpoint(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open quantizer checkpoint", settings.get("last_dir"),
                                              CHECKPOINT_FILTER)
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

    def _fill_recent(self) -> None:
        self.recent_menu.clear()
        entries = settings.recent()
        for entry in entries:
            ckpt = Path(entry["checkpoint"])
            feats = entry["features"]
            label = ckpt.name + (f"  +  {Path(feats[0]).name}" if feats else "")
            if len(feats) > 1:
                label += f" (+{len(feats) - 1})"
            act = self.recent_menu.addAction(label)
            act.setToolTip("\n".join([str(ckpt), *feats]))
            act.setEnabled(ckpt.is_file())
            act.triggered.connect(lambda checked=False, c=ckpt, f=feats: self.open(c, f))
        if not entries:
            self.recent_menu.addAction("(none)").setEnabled(False)
        else:
            self.recent_menu.addSeparator()
            self.recent_menu.addAction("Clear list").triggered.connect(settings.clear_recent)

    # --- drag and drop ---------------------------------------------------------------------------------------
    def dragEnterEvent(self, event):  # noqa: N802
        if event.mimeData().hasUrls() and all(u.isLocalFile() for u in event.mimeData().urls()):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dropEvent(self, event):  # noqa: N802
        paths = [Path(u.toLocalFile()) for u in event.mimeData().urls() if u.isLocalFile()]
        if paths:
            event.acceptProposedAction()
            self.open(paths=paths)

    # --- audit ---------------------------------------------------------------------------------------------
    @property
    def device(self) -> str:
        return self.device_box.currentData() or "auto"

    def set_device(self, name: str) -> None:
        index = self.device_box.findData(name)
        if index >= 0:
            self.device_box.setCurrentIndex(index)

    def _device_changed(self, _index: int) -> None:
        settings.set("device", self.device)
        for act in self.device_group.actions():
            act.setChecked(act.text() == self.device)
        if self.session is not None and self.session.source is not None:
            self.start_audit()

    def start_audit(self) -> None:
        if self.session is None or self.session.source is None:
            return
        self._pending = None
        self.progress.setValue(0)
        self.rate_label.setText("")
        self.statusBar().showMessage(f"Auditing {self.session.total_frames:,} frames on {self.device}…")
        self.audit_slot.start(jobs.audit_stream, self.session, self.device,
                              yielded=self._audit_yielded, errored=self._audit_failed)

    def cancel_audit(self) -> None:
        if not self.audit_slot.busy:
            return
        self.audit_slot.cancel()
        last = self._pending or self.snapshot
        self._pending = None
        if last is not None:
            self._apply(dataclasses.replace(last, complete=False, cancelled=True))
            self.statusBar().showMessage(f"Audit cancelled after {last.frames_done:,} frames: partial results "
                                         "shown. F5 runs it again.")
        else:
            self.statusBar().showMessage("Audit cancelled before the first results.")

    def _audit_yielded(self, snapshot: Snapshot) -> None:
        self._pending = snapshot   # drawn by the next timer tick, never here

    def _audit_failed(self, exc: Exception) -> None:
        self._tick()
        self.show_message(error_text(exc))
        self.statusBar().showMessage("Audit failed", 5000)

    def _audit_busy(self, busy: bool) -> None:
        self.progress.setVisible(busy)
        self.cancel_button.setVisible(busy)
        self._update_actions()

    def _tick(self) -> None:
        snapshot, self._pending = self._pending, None
        if snapshot is not None:
            self._apply(snapshot)

    def _apply(self, snapshot: Snapshot) -> None:
        """Show the progress now and hand the snapshot to the views one at a time, STAGGER_MS apart (each
        update costs a few ms to tens of ms with its repaint; all at once would be one long stall).

        The views take turns: one that has just drawn goes to the back of the queue, so while snapshots
        come faster than a round every view still draws a recent one, each about every STAGGER_MS times
        the number of views. The last snapshot reaches them all, and is then reported."""
        self.snapshot = snapshot
        self.progress.setValue(int(snapshot.fraction * 1000))
        self.rate_label.setText(f"{snapshot.frames_done:,} / {snapshot.frames_total or 0:,} frames · "
                                f"{snapshot.frames_per_second:,.0f} frames/s")
        self._stale.extend(view for view in self.views if view not in self._stale)
        if not self._stagger.isActive():
            self._stagger.start(max(0, STAGGER_MS - int(self._since_apply.elapsed())))

    def _apply_next(self) -> None:
        if not self._stale or self.snapshot is None:
            return
        self._stale.pop(0).set_snapshot(self.snapshot)
        self._since_apply.restart()
        if self._stale:
            self._stagger.start(STAGGER_MS)
        else:
            self._applied(self.snapshot)

    def _applied(self, snapshot: Snapshot) -> None:
        if snapshot.complete:
            self.statusBar().showMessage(f"Audit complete: {snapshot.frames_done:,} frames in "
                                         f"{snapshot.elapsed:.2f} s on {snapshot.device}.", 8000)
        self.snapshot_applied.emit(snapshot)
        if snapshot.complete or snapshot.cancelled:
            self.audit_done.emit(snapshot)

    # --- layers --------------------------------------------------------------------------------------------
    def _layer_changed(self, layer: int) -> None:
        if self.layer_box.currentIndex() != layer:
            self.layer_box.blockSignals(True)
            self.layer_box.setCurrentIndex(layer)
            self.layer_box.blockSignals(False)

    def _layer_box_changed(self, index: int) -> None:
        if index >= 0:
            self.selection.set_layer(index)

    # --- comparison ----------------------------------------------------------------------------------------
    def pin_reference(self) -> None:
        if self.session is None or self.snapshot is None:
            return
        self.set_reference((self.session.name, self.snapshot))

    def set_reference(self, reference: tuple[str, Snapshot] | None) -> None:
        self.reference = reference
        if reference is None:
            self.residuals.set_reference(None, None)
        else:
            self.residuals.set_reference(*reference)
            self.statusBar().showMessage(f"Pinned {reference[0]} as the reference: open another checkpoint "
                                         "to compare.", 8000)

    # --- export --------------------------------------------------------------------------------------------
    def _ask_export(self, name: str, filter_: str, writer) -> None:
        if self.session is None:
            return
        start = str(Path(settings.get("last_dir") or Path.cwd()) / name)
        path, _ = QFileDialog.getSaveFileName(self, "Export", start, filter_)
        if path:
            settings.set("last_dir", str(Path(path).parent))
            self._export(writer, path)

    def _export(self, writer, path) -> bool:
        try:
            if self.session is not None:   # never write an export over the checkpoint or a feature file
                from ..io import check_outputs
                check_outputs([("the export", path)], [self.session.checkpoint, *self.session.features,
                                                       *(self.session.source.files if self.session.source else [])])
            writer(path)
        except (OSError, RvqViewerError, ValueError) as exc:
            self.show_message(f"{path}: cannot export: {getattr(exc, 'strerror', None) or exc}")
            return False
        self.statusBar().showMessage(f"Wrote {path}", 5000)
        return True

    def export_json(self, path) -> None:
        """The report `rvq-viewer audit --json` writes (with the verdicts, once the audit is complete)."""
        if self.snapshot is None:
            raise ValueError("no audit to export yet")
        if self.snapshot.verdicts is not None:
            from ..diagnosis import write_json
            write_json(path, self.snapshot.result, self.snapshot.verdicts)
        else:
            self.snapshot.result.write_json(path)

    def ask_export_json(self) -> None:
        if self.snapshot is not None:
            stem = self.session.checkpoint.stem if self.session else "audit"
            self._ask_export(f"{stem}.audit.json", "JSON (*.json)", self.export_json)

    def export_all(self, folder) -> list[Path]:
        """Every table (CSV), plot (PNG) and the JSON report into `folder`; returns the files."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        layer = self.selection.layer
        outputs = [(self.overview.export_csv, "overview.csv"),
                   (self.dead_codes.export_csv, f"dead_codes_layer{layer}.csv"),
                   (self.histogram.export_png, f"histogram_layer{layer}.png"),
                   (self.map.export_png, "centroid_map.png"),
                   (self.residuals.export_png, "residuals.png"),
                   (self.export_json, "audit.json")]
        written = []
        for writer, name in outputs:
            if self._export(writer, folder / name):
                written.append(folder / name)
        self.statusBar().showMessage(f"Wrote {len(written)} files to {folder}", 8000)
        return written

    def ask_export_all(self) -> None:
        if self.snapshot is None:
            return
        folder = QFileDialog.getExistingDirectory(self, "Export everything to", settings.get("last_dir"))
        if folder:
            self.export_all(folder)

    # --- state ---------------------------------------------------------------------------------------------
    def views_ready(self, wait_umap: bool = False) -> bool:
        """Every view shows data for the newest complete audit (and UMAP, if asked to wait for it)."""
        if self.session is None or self.snapshot is None or not self.snapshot.complete:
            return False
        if self.load_slot.busy or self._pending is not None or self._stale:
            return False
        if not all(view.ready for view in self.views):
            return False
        return not (wait_umap and self.map.umap_pending)

    def _update_actions(self) -> None:
        has_session = self.session is not None
        has_audit = self.snapshot is not None
        self.act_rerun.setEnabled(has_session and self.session.source is not None)
        self.rerun_button.setEnabled(self.act_rerun.isEnabled())
        self.act_cancel.setEnabled(self.audit_slot.busy)
        self.act_export_json.setEnabled(has_audit or has_session)
        self.act_pin.setEnabled(has_session)
        for widget in (self.layer_box, self.prev_button, self.next_button):
            widget.setEnabled(has_session)

    def reset_layout(self) -> None:
        self.restoreState(self._default_state)
        for dock in self.docks.values():
            dock.show()

    def _restore_settings(self) -> None:
        self.histogram.log_box.setChecked(settings.get("histogram/log"))
        self.histogram.sorted_box.setChecked(settings.get("histogram/sorted"))
        self.map.set_all_layers(settings.get("map/all_layers"))
        self.dead_codes.set_filter(settings.get("dead/filter"))
        if self.map.umap_box.isEnabled():
            self.map.umap_box.setChecked(settings.get("map/umap"))
        self.set_device(settings.get("device"))
        for act in self.device_group.actions():
            act.setChecked(act.text() == self.device)
        geometry = settings.get("window/geometry")
        if isinstance(geometry, QByteArray) and not geometry.isEmpty():
            self.restoreGeometry(geometry)
        state = settings.get("window/state")
        if isinstance(state, QByteArray) and not state.isEmpty():
            self.restoreState(state)

    def save_settings(self) -> None:
        settings.set("window/geometry", self.saveGeometry())
        settings.set("window/state", self.saveState())
        settings.set("histogram/log", self.histogram.log_box.isChecked())
        settings.set("histogram/sorted", self.histogram.sorted_box.isChecked())
        settings.set("map/all_layers", self.map.all_layers)
        settings.set("dead/filter", self.dead_codes.filter)
        if self.map.umap_box.isEnabled():
            settings.set("map/umap", self.map.umap_box.isChecked())
        settings.sync()

    def _about(self) -> None:
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
        self.timer.stop()
        for view in self.views:
            view.cleanup()
        ok = cancel_and_wait([self.load_slot, self.audit_slot, self.map.slot, self.dead_codes.slot], msecs)
        if self.service is not None:
            self.service.close()
        return ok

    def closeEvent(self, event):  # noqa: N802
        if not self._closing:
            self.save_settings()
        self.shutdown()
        super().closeEvent(event)
