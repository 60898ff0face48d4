"""Diagnosis panel: the verdicts of the audit grouped by severity (collapse first), with the evidence.

A summary line on top (the diagnosis' whole-quantizer verdict); below, one row per verdict under its
severity; below that, the chosen verdict in full: message, evidence, likely cause and what to try.
Clicking a verdict (or Enter on it) takes the user to its evidence: it selects the verdict's layer,
and the first code its evidence names (dominant codes, near-duplicate pairs), through the shared
`Selection`, and asks the app state for the verdict's view (`AppState.request_view`), which the window
raises.

The panel follows the app state's snapshots; `set_verdicts` sets a list directly.
"""

from __future__ import annotations

import html
import math
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QBrush, QColor, QFont, QGuiApplication
from PySide6.QtWidgets import (QAbstractItemView, QHBoxLayout, QHeaderView, QSplitter, QTextBrowser, QToolButton,
                               QTreeWidget, QTreeWidgetItem, QVBoxLayout)

from ...analysis.diagnosis.verdict import SEVERITIES, Verdict, severity_rank
from ...report.svg import SEVERITY_COLORS
from ..state import AppState
from .base import Panel
from ..widgets.common import header_label
from ..theme import current, ink, muted

SEVERITY_ICONS = {"collapse": "✖", "warning": "▲", "info": "●", "ok": "✔"}
SEVERITY_NAMES = {"collapse": "Collapse", "warning": "Warning", "info": "Info", "ok": "OK"}
VIEW_NAMES = {"overview": "Overview", "histogram": "Usage histogram", "centroids": "Centroid map",
              "residuals": "Residual norms", "dead_codes": "Dead codes", "family": "Levels and bits"}
# Evidence keys that only restate a rule's threshold (the message says it): kept out of the compact list,
# as in the HTML report.
THRESHOLD_KEYS = {"warn_below", "collapse_below", "warn_at", "collapse_at", "info_at", "majority_at", "margin",
                  "fraction", "min_frames_per_code"}
ROLE_VERDICT = Qt.ItemDataRole.UserRole + 1


# --- Qt-free helpers (tested on their own) --------------------------------------------------------------

def target_of(verdict: Verdict) -> tuple[int | None, int | None]:
    """(layer, code) a verdict's evidence is about; None where it names none.

    A whole-quantizer verdict points at its first collapsed (else warned) layer; a code is the first
    one the evidence lists: `codes` (dominant codes), `pairs` (near-duplicate pairs) or `code`.
    """
    ev = verdict.evidence or {}
    layer = verdict.layer
    if layer is None:
        for key in ("collapsed_layers", "warning_layers", "layers"):
            values = ev.get(key)
            if isinstance(values, (list, tuple)) and values and _is_int(values[0]):
                layer = int(values[0])
                break
    code = None
    if layer is not None:
        codes, pairs = ev.get("codes"), ev.get("pairs")
        if isinstance(codes, (list, tuple)) and codes and _is_int(codes[0]):
            code = int(codes[0])
        elif isinstance(pairs, (list, tuple)) and pairs and isinstance(pairs[0], (list, tuple)) \
                and pairs[0] and _is_int(pairs[0][0]):
            code = int(pairs[0][0])
        elif _is_int(ev.get("code")):
            code = int(ev["code"])
    return layer, code


def _is_int(value) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or getattr(getattr(value, "dtype", None), "kind", "") in ("i", "u")


def format_value(value, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if _is_int(value):
        return f"{int(value):,}"
    if isinstance(value, float) or hasattr(value, "dtype"):
        value = float(value)
        if not math.isfinite(value):
            return "∞" if value > 0 else ("−∞" if value < 0 else "n/a")
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.3g}"
        return f"{value:.{digits}g}"
    if isinstance(value, (list, tuple)):
        shown = ", ".join(format_value(v, 3) if not isinstance(v, (list, tuple)) else
                          "(" + ", ".join(format_value(x, 3) for x in v) + ")" for v in value[:6])
        return f"[{shown}{', …' if len(value) > 6 else ''}]"
    return str(value)


def compact_evidence(evidence: dict) -> list[tuple[str, str]]:
    """(key, value) pairs to show: thresholds left out, numbers short, lists cut to six entries."""
    return [(str(k), format_value(v)) for k, v in (evidence or {}).items() if k not in THRESHOLD_KEYS]


def severity_counts(verdicts: list[Verdict]) -> dict[str, int]:
    counts = {s: 0 for s in SEVERITIES}
    for v in verdicts:
        if v.id != "summary":
            counts[v.severity] += 1
    return counts


def ordered_groups(verdicts: list[Verdict]) -> list[tuple[str, list[Verdict]]]:
    """Verdicts other than the summary by severity, worst first; within one, by layer ('all' first) then rule."""
    groups = []
    for severity in reversed(SEVERITIES):
        found = [v for v in verdicts if v.severity == severity and v.id != "summary"]
        found.sort(key=lambda v: (-1 if v.layer is None else v.layer, v.id))
        if found:
            groups.append((severity, found))
    return groups


def short_title(verdict: Verdict) -> str:
    """The title without its "Layer N: " prefix (the Layer column says it)."""
    if verdict.layer is None:
        return verdict.title
    return _capital(verdict.title.removeprefix(f"Layer {verdict.layer}: "))


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:] if text else text


# --- the widget -------------------------------------------------------------------------------------------

class DiagnosisPanel(Panel):
    """Verdicts list + details; activating a verdict requests `Verdict.view` from the app state."""

    title = "Diagnosis"
    verdict_activated = Signal(object)     # the Verdict the user clicked, after the selection moved
    headline_changed = Signal(str)         # a short dock title: "Diagnosis · ✖ 9 collapse"

    def __init__(self, state: AppState, parent=None):
        super().__init__(state, "diagnosis", parent)
        selection = self.selection
        state.failure_changed.connect(lambda reason: self._show_summary())
        self.verdicts: list[Verdict] | None = None
        self.note = ""
        self._shown_for = None       # the snapshot whose state the panel shows
        self._state = None
        self._headline = self.title
        self._details_for: Verdict | None = None

        self.summary = header_label()
        self.summary.setObjectName("diagnosis-summary")
        self.summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.copy_button = QToolButton()
        self.copy_button.setObjectName("diagnosis-copy")
        self.copy_button.setText("Copy")
        self.copy_button.setToolTip("copy the verdicts as text (as `rvq-viewer audit` prints them)")
        self.copy_button.setAutoRaise(True)
        self.copy_button.clicked.connect(self.copy_text)

        self.tree = QTreeWidget()
        self.tree.setObjectName("diagnosis-tree")
        self.tree.setColumnCount(2)
        self.tree.setHeaderLabels(["Verdict", "Layer"])
        self.tree.headerItem().setToolTip(0, "click a verdict to see its evidence in the view it names")
        self.tree.setRootIsDecorated(True)
        self.tree.setUniformRowHeights(True)
        self.tree.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.tree.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        header = self.tree.header()
        header.setStretchLastSection(False)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)

        self.details = QTextBrowser()
        self.details.setObjectName("diagnosis-details")
        self.details.setOpenLinks(False)
        self.details.setOpenExternalLinks(False)
        self.details.document().setDocumentMargin(6)
        self.details.anchorClicked.connect(self._link)

        split = QSplitter(Qt.Orientation.Vertical)
        split.setChildrenCollapsible(False)
        split.addWidget(self.tree)
        split.addWidget(self.details)
        split.setStretchFactor(0, 1)
        split.setStretchFactor(1, 1)
        split.setSizes([330, 310])
        self.splitter = split

        top = QHBoxLayout()
        top.setContentsMargins(0, 0, 0, 0)
        top.addWidget(self.summary, 1)
        top.addWidget(self.copy_button, 0, Qt.AlignmentFlag.AlignTop)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.setSpacing(2)
        layout.addLayout(top)
        layout.addWidget(split, 1)

        self.tree.currentItemChanged.connect(self._current_changed)
        self.tree.itemClicked.connect(lambda item, col: self._activate_item(item))
        self.tree.itemActivated.connect(lambda item, col: self._activate_item(item))
        selection.layer_changed.connect(self._mark_layer)
        self._rebuild()

    # --- view interface (as the window's views) ---------------------------------------------------------
    def set_session(self, session) -> None:
        self.session = session
        self.snapshot = None
        self._shown_for = None
        self._state = None
        self.set_verdicts(None, "" if session is None else self._no_audit_note(session))

    def set_snapshot(self, snapshot) -> None:
        """Show the diagnosis of a complete snapshot; while an audit streams, say so (and no stale verdicts)."""
        self.snapshot = snapshot
        if snapshot is None:
            return
        verdicts = snapshot.verdicts if snapshot.final else None
        if verdicts is not None:
            state = ("verdicts", verdicts)
            note = ""
        elif snapshot.complete:
            state = ("error", snapshot.diagnosis_error)
            note = snapshot.diagnosis_error or "No diagnosis for this audit."
        elif snapshot.cancelled:
            state = ("cancelled",)
            note = (f"Audit cancelled after {snapshot.frames_done:,} frames: the diagnosis needs a complete "
                    "audit (Audit ▸ Re-run, F5).")
        else:
            state = ("running",)
            note = "Auditing… the diagnosis appears when the audit completes."
        self._shown_for = snapshot
        if state != self._state:
            self._state = state
            self.set_verdicts(verdicts, note)

    @property
    def ready(self) -> bool:
        return self.snapshot is None or self._shown_for is self.snapshot

    @staticmethod
    def _no_audit_note(session) -> str:
        if getattr(session, "source", None) is None:
            return "No features open: the diagnosis needs an audit (File ▸ Open features)."
        return "Auditing… the diagnosis appears when the audit completes."

    # --- data -------------------------------------------------------------------------------------------
    def set_verdicts(self, verdicts: list[Verdict] | None, note: str = "") -> None:
        """Show `verdicts` (None: none yet, with `note` saying why)."""
        self.verdicts = list(verdicts) if verdicts is not None else None
        self.note = note
        self._rebuild()

    @property
    def summary_verdict(self) -> Verdict | None:
        return next((v for v in self.verdicts or [] if v.id == "summary"), None)

    def verdict_items(self) -> list[QTreeWidgetItem]:
        """The verdict rows in display order (group headers left out)."""
        items = []
        for g in range(self.tree.topLevelItemCount()):
            group = self.tree.topLevelItem(g)
            items.extend(group.child(i) for i in range(group.childCount()))
        return items

    def item_for(self, verdict: Verdict) -> QTreeWidgetItem | None:
        for item in self.verdict_items():
            if item.data(0, ROLE_VERDICT) is verdict:
                return item
        return None

    def _rebuild(self) -> None:
        self.tree.blockSignals(True)
        self.tree.clear()
        verdicts = self.verdicts or []
        bold = QFont(self.tree.font())
        bold.setBold(True)
        for severity, group in ordered_groups(verdicts):
            color = QColor(SEVERITY_COLORS[severity])
            head = QTreeWidgetItem([f"{SEVERITY_ICONS[severity]}  {SEVERITY_NAMES[severity]} ({len(group)})", ""])
            head.setForeground(0, QBrush(color))
            head.setFont(0, bold)
            head.setFlags(Qt.ItemFlag.ItemIsEnabled)
            head.setFirstColumnSpanned(True)
            self.tree.addTopLevelItem(head)
            for v in group:
                item = QTreeWidgetItem([short_title(v), "all" if v.layer is None else str(v.layer)])
                item.setData(0, ROLE_VERDICT, v)
                item.setForeground(0, QBrush(QColor(ink())))
                item.setForeground(1, QBrush(QColor(muted())))
                item.setTextAlignment(1, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                item.setToolTip(0, f"{v.message}\n\nClick: show the evidence in the {VIEW_NAMES.get(v.view, v.view)}.")
                head.addChild(item)
            # Problems open; the healthy list folds away when there is something worse to read.
            head.setExpanded(severity != "ok" or len(ordered_groups(verdicts)) == 1)
        self.tree.blockSignals(False)
        self._mark_layer(self.selection.layer)
        self._show_summary()
        self._show_details(None)
        self.copy_button.setEnabled(bool(verdicts))

    def _show_summary(self) -> None:
        verdicts = self.verdicts
        failed = ""
        if self.state.failure:
            failed = (f"<span style='color:{SEVERITY_COLORS['collapse']}; font-weight:600'>Audit failed: "
                      f"{html.escape(self.state.failure)}</span><br>")
            if verdicts is not None:
                failed += f"<span style='color:{muted()}'>The last good audit:</span><br>"
        if verdicts is None:
            text = self.note or ("" if failed else "<i>No checkpoint open.</i>")
            self.summary.setText(failed + f"<span style='color:{muted()}'>{html.escape(text) if self.note else text}"
                                 "</span>")
            self._set_headline(self.title + (" · audit failed" if failed else ""))
            return
        counts = severity_counts(verdicts)
        parts = [f"<span style='color:{SEVERITY_COLORS[s]}'>{SEVERITY_ICONS[s]} {counts[s]} {s}</span>"
                 for s in reversed(SEVERITIES) if counts[s]]
        summary = self.summary_verdict
        if summary is not None:
            color = SEVERITY_COLORS[summary.severity]
            line = (f"<span style='color:{color}; font-weight:600; font-size:12pt'>"
                    f"{SEVERITY_ICONS[summary.severity]} {html.escape(summary.title)}</span><br>"
                    f"<span style='color:{ink()}'>{html.escape(summary.message)}</span>")
        else:
            line = "<b>Diagnosis</b>"
        counted = " · ".join(parts or ["no verdicts"])
        self.summary.setText(failed + line + f"<br><span style='color:{muted()}'>{counted}</span>")
        worst = max((v.rank for v in verdicts if v.id != "summary"), default=0)
        top = SEVERITIES[worst]
        if worst >= severity_rank("warning"):
            self._set_headline(f"{self.title} · {SEVERITY_ICONS[top]} {counts[top]} {top}")
        else:
            self._set_headline(f"{self.title} · {SEVERITY_ICONS['ok']} healthy")

    def _set_headline(self, text: str) -> None:
        if text != self._headline:
            self._headline = text
            self.headline_changed.emit(text)

    @property
    def headline(self) -> str:
        return self._headline

    # --- details ----------------------------------------------------------------------------------------
    def _show_details(self, verdict: Verdict | None) -> None:
        if verdict is None:
            verdict = self.summary_verdict
        if verdict is None:
            self.details.setHtml("" if self.verdicts is None else
                                 f"<p style='color:{muted()}'>Click a verdict to see its evidence.</p>")
            self._details_for = None
            return
        self._details_for = verdict
        self.details.setHtml(self.details_html(verdict))

    @staticmethod
    def details_html(v: Verdict) -> str:
        color = SEVERITY_COLORS[v.severity]
        where = "whole quantizer" if v.layer is None else f"layer {v.layer}"
        chips = " ".join(f"<span style='background:{current().faint}'>&nbsp;{html.escape(k)}&nbsp;=&nbsp;"
                         f"<b>{html.escape(val)}</b>&nbsp;</span>" for k, val in compact_evidence(v.evidence))
        parts = [f"<p style='margin:0'><span style='color:{color}; font-weight:600'>{SEVERITY_ICONS[v.severity]} "
                 f"{html.escape(v.severity)}</span> &nbsp;<b>{html.escape(v.title)}</b><br>"
                 f"<span style='color:{muted()}'>{html.escape(where)} · rule <code>{html.escape(v.id)}</code>"
                 "</span></p>"]
        if v.message:
            parts.append(f"<p>{html.escape(v.message)}</p>")
        if chips:
            parts.append(f"<p style='line-height:150%'><span style='color:{muted()}'>Evidence:</span> {chips}</p>")
        if v.cause:
            parts.append(f"<p><b>Likely cause:</b> {html.escape(_capital(v.cause))}</p>")
        if v.remedy and v.severity != "ok":
            parts.append(f"<p><b>Try:</b> {html.escape(_capital(v.remedy))}</p>")
        layer, code = target_of(v)
        target = VIEW_NAMES.get(v.view, v.view)
        if layer is not None:
            target += f", layer {layer}" + (f", code {code}" if code is not None else "")
        parts.append(f"<p><a href='show:evidence'>Show the evidence: {html.escape(target)} ▸</a></p>")
        return "".join(parts)

    def _current_changed(self, current: QTreeWidgetItem | None, _previous=None) -> None:
        verdict = current.data(0, ROLE_VERDICT) if current is not None else None
        self._show_details(verdict)

    def _link(self, url) -> None:
        if self._details_for is not None:
            self.activate(self._details_for)

    # --- navigation -------------------------------------------------------------------------------------
    def _activate_item(self, item: QTreeWidgetItem | None) -> None:
        verdict = item.data(0, ROLE_VERDICT) if item is not None else None
        if verdict is not None:
            self.activate(verdict)

    def activate(self, verdict: Verdict) -> None:
        """Take the user to the verdict's evidence: select its layer (and code), raise its view."""
        layer, code = target_of(verdict)
        n_layers = self.selection.n_layers
        if layer is not None and 0 <= layer < max(n_layers, 0):
            if code is not None:
                self.selection.set_code(layer, code)
            else:
                self.selection.set_layer(layer)
        self.state.request_view(verdict.view)
        self.verdict_activated.emit(verdict)

    def _mark_layer(self, layer: int) -> None:
        """Verdicts about the selected layer in bold."""
        for item in self.verdict_items():
            v = item.data(0, ROLE_VERDICT)
            font = item.font(0)
            want = v is not None and v.layer == layer
            if font.bold() != want:
                font.setBold(want)
                item.setFont(0, font)
                item.setFont(1, font)

    # --- export -----------------------------------------------------------------------------------------
    def text(self) -> str:
        from ...analysis.diagnosis import format_verdicts
        return format_verdicts(self.verdicts or [], "info") if self.verdicts else self.note

    def copy_text(self) -> None:
        QGuiApplication.clipboard().setText(self.text())
