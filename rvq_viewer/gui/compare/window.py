"""The Compare window: two audits side by side.

A and B are two checkpoints (of one run, or two runs) on the same features, or one checkpoint on two
feature sets. Both audits and the comparison run in one worker (`app.compare_jobs.compare_job`, over the
pipeline) with progress and cancel. For the selected layer the window shows the per-layer metrics and
their difference (`DeltasTable`), each code of A with its nearest code of B (`MatchModel`), both usage
curves on one axis and both centroid sets in one PCA (`panes`). Selecting a code (a row, a point, a bar)
rings it and its match in B everywhere.

The window has its own `Selection`: it outlives the main window's session. `CompareController` links the
two selections while A is the checkpoint open in the main window.
"""

from __future__ import annotations

import html
from pathlib import Path

from PySide6.QtCore import QItemSelectionModel, Qt, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (QAbstractItemView, QCheckBox, QComboBox, QDialog, QFileDialog, QLabel, QMainWindow,
                               QProgressBar, QPushButton, QSplitter, QTableView, QToolBar, QVBoxLayout, QWidget)

from ...analysis.compare import Comparison
from ...app.compare_jobs import CompareOutcome, CompareSpec, compare_job, html_report_job
from ...pipeline import AuditOutcome, AuditSpec
from .. import settings
from ..controller import error_text
from ..panels.diagnosis_panel import SEVERITY_ICONS
from ..state import Selection
from ..widgets.banner import MessageBanner
from ..widgets.common import HEALTH_COLORS, header_label
from ..workers import JobSlot
from .deltas import DeltasTable
from .dialog import CompareDialog
from .match_model import MatchModel
from .palette import tag
from .panes import ProjectionPane, UsagePane, column
from ..theme import current, muted

HTML_FILTER = "HTML (*.html *.htm)"


class CompareWindow(QMainWindow):
    """Two audits side by side. `start(spec)` runs the comparison; `export_html(path)` writes the report."""

    comparison_ready = Signal(object)     # CompareOutcome
    failed = Signal(str)
    report_written = Signal(object)       # Path

    def __init__(self, parent=None, device=None, template=None):
        super().__init__(parent)
        self.setObjectName("rvq-viewer-compare")
        self.setWindowTitle("rvq-viewer — compare")
        self._device = device or (lambda: "auto")
        self._template = template or (lambda: None)
        self.selection = Selection(self)
        self.outcome: CompareOutcome | None = None
        self.spec: CompareSpec | None = None
        self._reuse: AuditOutcome | None = None
        self._drawn_layer = -1
        self._syncing = False
        self.slot = JobSlot("compare", self)
        self.export_slot = JobSlot("compare-report", self)

        self._build_toolbar()
        self.banner = MessageBanner()
        self.header = header_label()
        self.header.setObjectName("compare-header")
        self.deltas = DeltasTable()
        self.deltas.layer_clicked.connect(self.selection.set_layer)
        self._build_matches()
        self.usage = UsagePane(self.selection)
        self.projection = ProjectionPane(self.selection, self)
        self.projection.message.connect(lambda text: self.statusBar().showMessage(text, 6000))

        left = QSplitter(Qt.Orientation.Vertical)
        left.addWidget(self.deltas)
        left.addWidget(self.match_box)
        right = QSplitter(Qt.Orientation.Vertical)
        right.addWidget(self.usage.widget)
        right.addWidget(self.projection.widget)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(left)
        split.addWidget(right)
        self.splitter = split
        central = QWidget()
        layout = QVBoxLayout(central)
        layout.setContentsMargins(4, 0, 4, 4)
        layout.setSpacing(2)
        layout.addWidget(self.banner)
        layout.addWidget(self.header)
        layout.addWidget(split, 1)
        self.setCentralWidget(central)
        self._build_statusbar()

        self.selection.layer_changed.connect(self._layer_changed)
        self.selection.code_changed.connect(lambda layer, code: self._show_code())
        self.slot.busy_changed.connect(self._busy)
        self.export_slot.busy_changed.connect(lambda busy: self._update_actions())
        self.resize(1400, 900)
        split.setSizes([730, 670])
        left.setSizes([300, 560])
        right.setSizes([340, 520])
        self._show_header()
        self._update_actions()

    # --- layout -------------------------------------------------------------------------------------------
    def _build_toolbar(self) -> None:
        bar = QToolBar("Compare")
        bar.setObjectName("toolbar-compare")
        bar.setMovable(False)
        self.addToolBar(bar)
        self.change_button = QPushButton("Change…")
        self.change_button.setToolTip("choose other checkpoints or features to compare")
        self.change_button.clicked.connect(self.ask_change)
        bar.addWidget(self.change_button)
        bar.addSeparator()
        bar.addWidget(QLabel(" Layer "))
        self.layer_box = QComboBox()
        self.layer_box.setObjectName("compare-layer")
        self.layer_box.setMinimumWidth(120)
        self.layer_box.currentIndexChanged.connect(lambda i: self.selection.set_layer(i) if i >= 0 else None)
        bar.addWidget(self.layer_box)
        for text, step, key in (("◀", -1, "["), ("▶", 1, "]")):
            button = QPushButton(text)
            button.setFixedWidth(32)
            button.setToolTip(f"{'Previous' if step < 0 else 'Next'} layer ({key})")
            button.clicked.connect(lambda checked=False, s=step: self.selection.step_layer(s))
            bar.addWidget(button)
            act = QAction(self)
            act.setShortcut(key)
            act.triggered.connect(lambda checked=False, s=step: self.selection.step_layer(s))
            self.addAction(act)
        close = QAction("Close", self)
        close.setObjectName("compare-close")
        keys = [QKeySequence("Ctrl+W")]
        keys += [k for k in QKeySequence.keyBindings(QKeySequence.StandardKey.Close) if k not in keys]
        close.setShortcuts(keys)
        close.triggered.connect(self.close)
        self.addAction(close)
        bar.addSeparator()
        self.sorted_box = QCheckBox("Sorted (rank-frequency)")
        self.sorted_box.setObjectName("compare-sorted")
        self.sorted_box.setToolTip("codes ordered by use, as shares of each side's frames")
        self.log_box = QCheckBox("Log scale")
        self.log_box.setObjectName("compare-log")
        self.log_box.setChecked(True)
        self.sorted_box.toggled.connect(lambda _: self._draw_usage())
        self.sorted_box.clicked.connect(lambda _: setattr(self, "_sorted_chosen", True))
        self._sorted_chosen = False   # until the user picks: sorted for two checkpoints, by code for one
        self.log_box.toggled.connect(lambda _: self._draw_usage())
        bar.addWidget(self.sorted_box)
        bar.addWidget(self.log_box)
        bar.addSeparator()
        self.export_button = QPushButton("Export HTML report…")
        self.export_button.setObjectName("compare-export")
        self.export_button.setToolTip("the self-contained report `rvq-viewer report --compare` writes")
        self.export_button.clicked.connect(self.ask_export_html)
        bar.addWidget(self.export_button)

    def _build_statusbar(self) -> None:
        status = self.statusBar()
        self.stage_label = QLabel("")
        self.stage_label.setObjectName("compare-stage")
        self.progress = QProgressBar()
        self.progress.setObjectName("compare-progress")
        self.progress.setRange(0, 1000)
        self.progress.setFixedWidth(220)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setObjectName("compare-cancel")
        self.cancel_button.clicked.connect(self.cancel)
        status.addPermanentWidget(self.stage_label)
        status.addPermanentWidget(self.progress)
        status.addPermanentWidget(self.cancel_button)
        self.progress.hide()
        self.cancel_button.hide()

    def _build_matches(self) -> None:
        self.match_label = header_label()
        self.match_label.setObjectName("compare-match-summary")
        self.match_model = MatchModel(self)
        view = QTableView()
        view.setObjectName("compare-matches")
        view.setModel(self.match_model)
        view.setSortingEnabled(True)
        view.sortByColumn(0, Qt.SortOrder.AscendingOrder)
        view.verticalHeader().setVisible(False)
        view.verticalHeader().setDefaultSectionSize(20)
        view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        view.setAlternatingRowColors(True)
        view.horizontalHeader().setStretchLastSection(True)
        view.horizontalHeader().setDefaultSectionSize(76)
        view.selectionModel().currentRowChanged.connect(self._match_row_changed)
        self.match_view = view
        self.match_box = column(self.match_label, view)

    # --- running --------------------------------------------------------------------------------------------
    @property
    def comparison(self) -> Comparison | None:
        return self.outcome.comparison if self.outcome is not None else None

    @property
    def busy(self) -> bool:
        return self.slot.busy

    @property
    def ready(self) -> bool:
        """A comparison is drawn for the selected layer and nothing is running."""
        return self.outcome is not None and not self.slot.busy and self._drawn_layer == self.selection.layer

    def start(self, spec: CompareSpec, reuse_a: AuditOutcome | None = None) -> None:
        """Audit and compare in the background; the views fill when it is done."""
        self.spec, self._reuse = spec, reuse_a
        self.banner.dismiss()
        self.progress.setValue(0)
        self.stage_label.setText("starting…")
        la, lb = spec.labels()
        self.setWindowTitle(f"rvq-viewer — compare {la} with {lb}")
        template: AuditSpec | None = self._template()
        self.slot.start(compare_job, spec, reuse_a, template, yielded=self._progress, returned=self._done,
                        errored=self._failed)

    def cancel(self) -> None:
        if self.slot.busy:
            self.slot.cancel()
            self.stage_label.setText("cancelled")
            if self.outcome is None:
                for pane in (self.usage, self.projection):
                    pane.empty.show("no comparison: cancelled")
            self.statusBar().showMessage("Comparison cancelled." + (" The previous one is still shown."
                                                                    if self.outcome else ""), 8000)

    def _busy(self, busy: bool) -> None:
        self.progress.setVisible(busy)
        self.cancel_button.setVisible(busy)
        self._update_actions()
        self._show_header()

    def _progress(self, step) -> None:
        self.progress.setValue(int(step.fraction * 1000))
        self.stage_label.setText(step.text)

    def _done(self, outcome: CompareOutcome) -> None:
        self.outcome = outcome
        self.stage_label.setText(f"done in {outcome.seconds:.1f} s")
        self.statusBar().showMessage(f"Compared {outcome.a.label} with {outcome.b.label} "
                                     f"in {outcome.seconds:.1f} s.", 8000)
        n = len(outcome.comparison.layers)
        layer = min(self.selection.layer, max(n - 1, 0))
        self.layer_box.blockSignals(True)
        self.layer_box.clear()
        for i in range(n):
            self.layer_box.addItem(f"Layer {i}", i)
        self.layer_box.blockSignals(False)
        if not self._sorted_chosen:
            # Codes of two checkpoints need not correspond index by index: compare their rank-frequency.
            self.sorted_box.blockSignals(True)
            self.sorted_box.setChecked(outcome.comparison.kind == "quantizers")
            self.sorted_box.blockSignals(False)
        self.deltas.fill(outcome.comparison)
        self._drawn_layer = -1
        self.selection.reset(n)          # draws layer 0
        if layer:
            self.selection.set_layer(layer)
        self._update_actions()
        self._show_header()
        self.comparison_ready.emit(outcome)

    def _failed(self, exc: Exception) -> None:
        text = error_text(exc)
        self.stage_label.setText("failed")
        if self.outcome is None:                    # the previous comparison, if any, stays drawn
            for pane in (self.usage, self.projection):
                pane.empty.show("no comparison: it failed (see above)")
        self.banner.show_message(text, "error")
        self.statusBar().showMessage("Comparison failed", 8000)
        self.failed.emit(text)

    # --- header ---------------------------------------------------------------------------------------------
    def _show_header(self) -> None:
        if self.outcome is None:
            if self.slot.busy and self.spec is not None:
                la, lb = self.spec.labels()
                self.header.setText(f"Comparing {tag('A', html.escape(la))} with {tag('B', html.escape(lb))}…")
            else:
                self.header.setText("<i>Nothing compared yet: Change… chooses a second checkpoint or feature set."
                                    "</i>")
            return
        c, o = self.outcome.comparison, self.outcome
        kind = {"features": "one checkpoint on two feature sets", "quantizers": "two checkpoints",
                "audits": "two audits"}[c.kind]
        if c.kind == "quantizers" and o.spec.same_features:
            kind += " on the same features"

        def verdict(side) -> str:
            summary = next((v for v in side.verdicts or [] if v.id == "summary"), None)
            if summary is None:
                return html.escape(side.diagnosis_error or "no diagnosis")
            color = {"collapse": HEALTH_COLORS["bad"], "warning": HEALTH_COLORS["warn"]}.get(summary.severity,
                                                                                             HEALTH_COLORS["ok"])
            return (f"<span style='color:{color}'>{SEVERITY_ICONS[summary.severity]} "
                    f"{html.escape(summary.title)}</span>")

        lines = [f"<b>{html.escape(kind.capitalize())}</b>",
                 f"{tag('A', html.escape(c.label_a))} · {c.frames_a:,} frames · {verdict(o.a)}",
                 f"{tag('B', html.escape(c.label_b))} · {c.frames_b:,} frames · {verdict(o.b)}"]
        for note in c.notes:
            lines.append(f"<span style='color:{current().note}'>note: {html.escape(note)}</span>")
        if self.slot.busy:
            lines.append(f"<span style='color:{muted()}'>(a new comparison is running)</span>")
        self.header.setText("<br>".join(lines))

    # --- per layer ------------------------------------------------------------------------------------------
    def _layer_changed(self, layer: int) -> None:
        if self.comparison is None or layer >= len(self.comparison.layers):
            return
        if self.layer_box.currentIndex() != layer:
            self.layer_box.blockSignals(True)
            self.layer_box.setCurrentIndex(layer)
            self.layer_box.blockSignals(False)
        self.deltas.select_layer(layer)
        self.match_model.set_layer(self.comparison, layer)
        self.match_view.setColumnHidden(7, not self.match_model.has_same_index)
        self._show_match_summary(layer)
        self._draw_usage(autorange=True)
        self.projection.draw(self.comparison, layer)
        self._drawn_layer = layer
        self._show_code()

    def _draw_usage(self, autorange: bool = True) -> None:
        c, layer = self.comparison, self.selection.layer
        if c is None or layer >= len(c.layers):
            return
        self.usage.draw(c, layer, self.sorted_box.isChecked(), self.log_box.isChecked(), autorange)
        self._show_code()

    def _show_match_summary(self, layer: int) -> None:
        match = self.comparison.matches[layer]
        if match is None:
            self.match_label.setText("<i>No code matching for this layer (see the notes above).</i>")
            return
        s = match.summary()
        parts = [f"<b>Layer {layer}: A's codes matched to their nearest code of B</b>",
                 f"{s['close_fraction']:.0%} have a close match (nearer than ½ of A's spacing {s['scale']:.3g}); "
                 f"median distance {s['median_distance']:.3g} ({s['median_relative']:.2f}× spacing); "
                 f"{s['mutual_nearest']:,} mutual nearest pairs; "
                 f"{s['b_codes_unmatched']:,} of B's {s['codes_b']:,} codes are no A code's nearest."]
        if "same_index_median_distance" in s:
            parts.append(f"Same index in A and B: median distance {s['same_index_median_distance']:.3g}, "
                         f"{s['same_index_unchanged']:,} codes unchanged.")
        self.match_label.setText("<br>".join(parts))

    # --- selection ------------------------------------------------------------------------------------------
    def _match_row_changed(self, current, _previous) -> None:
        if self._syncing or not current.isValid():
            return
        code = self.match_model.code_at(current.row())
        if code >= 0:
            self.selection.set_code(self.selection.layer, code)

    def _show_code(self) -> None:
        c = self.comparison
        if c is None or self._drawn_layer != self.selection.layer:
            return
        layer, code = self.selection.layer, self.selection.code
        match = c.matches[layer]
        self.usage.show_code(code, int(match.index[code]) if match is not None and 0 <= code < match.index.size
                             else -1)
        row = self.match_model.row_of(code) if code >= 0 else -1
        self._syncing = True
        try:
            sel = self.match_view.selectionModel()
            if row >= 0:
                index = self.match_model.index(row, 0)
                if self.match_view.currentIndex().row() != row:
                    sel.setCurrentIndex(index, QItemSelectionModel.SelectionFlag.ClearAndSelect
                                        | QItemSelectionModel.SelectionFlag.Rows)
                # Only when out of sight: scrolling the row clicked away from under the pointer made the
                # rest of the click select the row that then lay there.
                self.match_view.scrollTo(index, QAbstractItemView.ScrollHint.EnsureVisible)
            else:
                sel.clearSelection()
        finally:
            self._syncing = False
        self.projection.show_code(layer, code)

    # --- change / export ------------------------------------------------------------------------------------
    def ask_change(self) -> None:
        spec = self.spec
        dialog = CompareDialog(self, spec.checkpoint_a if spec else None, spec.features_a if spec else (),
                               spec.checkpoint_b if spec else None, spec.features_b if spec else ())
        if dialog.exec() == QDialog.DialogCode.Accepted:
            new = dialog.spec(self._device())
            reuse = self._reuse if self._reuse is not None and self._reuse.spec.checkpoint == new.checkpoint_a \
                and list(self._reuse.spec.features) == new.features_a else None
            self.start(new, reuse)

    def ask_export_html(self) -> None:
        if self.outcome is None:
            return
        stem = f"{self.outcome.spec.checkpoint_a.stem}-vs-{self.outcome.spec.checkpoint_b.stem}.report.html"
        start = str(Path(settings.get("last_dir") or Path.cwd()) / stem)
        path, _ = QFileDialog.getSaveFileName(self, "Export the comparison as an HTML report", start, HTML_FILTER)
        if path:
            settings.set("last_dir", str(Path(path).parent))
            self.export_html(path)

    def export_html(self, path) -> bool:
        """Write the report (A's audit and verdicts, the comparison with B) in a worker; False if none."""
        if self.outcome is None:
            return False
        self.statusBar().showMessage("Writing the HTML report…")
        self.export_slot.start(html_report_job, path, self.outcome.a.outcome, self.outcome,
                               returned=self._written, errored=self._export_failed)
        return True

    def _written(self, path) -> None:
        self.statusBar().showMessage(f"Wrote {path}", 8000)
        self.report_written.emit(Path(path))

    def _export_failed(self, exc: Exception) -> None:
        self.statusBar().showMessage("Export failed", 8000)
        self.banner.show_message(f"cannot write the report: {error_text(exc)}", "error")
        self.failed.emit(error_text(exc))

    def _update_actions(self) -> None:
        self.export_button.setEnabled(self.outcome is not None and not self.export_slot.busy)

    # --- shutdown -------------------------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Stop both workers (their results are dropped). Safe to call twice."""
        self.slot.cancel()
        self.export_slot.cancel()

    def closeEvent(self, event):  # noqa: N802
        self.shutdown()
        super().closeEvent(event)
