"""Dead codes of the selected layer: unused on the features and/or EMA-dead in the checkpoint, each
with its EMA size, norm and nearest live neighbour. Selecting a row selects the code everywhere.

The neighbour search (dead x live distances, up to 65,536 x 65,536) runs in the view's worker.
"""

from __future__ import annotations

import html
import time

import numpy as np
from PySide6.QtCore import QAbstractTableModel, QElapsedTimer, Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QAbstractItemView, QApplication, QComboBox, QHeaderView, QTableView

from ...app.dead_codes import dead_code_table
from ...app.tables import DEAD_CODES_HEADER, dead_code_rows, write_csv
from ...app.session import DeadCodeTable, Session, Snapshot, counted_on
from ..state import AppState
from .base import Panel
from ..widgets.common import DEAD_COLOR, MIN_TABLE_HEIGHT, header_label
from ..workers import JobSlot

COLUMNS = ["Code", "Uses", "Unused", "EMA-dead", "EMA size", "Norm", "Nearest live", "Distance", "Died at step"]
DIED_AT = 8
FILTERS = [("either", "Unused on features or EMA-dead"), ("unused", "Unused on these features"),
           ("ema", "EMA-dead in the checkpoint"), ("boxed", "Dead and boxed on the map (Shift+drag)")]
PARTIAL_INTERVAL = 1.0   # s between neighbour searches while the audit streams


class DeadCodeModel(QAbstractTableModel):
    """Rows are dead codes; columns are numpy arrays, so sorting is one argsort, not a Python
    comparison per row (a QSortFilterProxyModel would call `data()` per row and role)."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.table: DeadCodeTable | None = None
        self.rows = np.zeros(0, dtype=np.int64)        # indices into the table, in display order
        self.columns: list[np.ndarray] = []
        self._sort = (0, Qt.SortOrder.AscendingOrder)
        # (layer, code) -> the training step at which the code died, from an opened checkpoint series.
        self.died_at: dict[tuple[int, int], int] | None = None

    def set_table(self, table: DeadCodeTable | None, which: str, boxed: np.ndarray | None = None) -> None:
        self.beginResetModel()
        self.table = table
        if table is None:
            self.rows = np.zeros(0, dtype=np.int64)
            self.columns = []
        else:
            mask = {"unused": table.unused, "ema": table.ema_dead}.get(which, table.unused | table.ema_dead)
            if which == "boxed":
                mask = mask & np.isin(table.codes, boxed if boxed is not None else [])
            self.rows = np.flatnonzero(mask)
            ema = table.ema_size if table.ema_size is not None else np.full(len(table), np.nan)
            died = np.full(len(table), -1, dtype=np.int64)
            if self.died_at:
                died = np.array([self.died_at.get((table.layer, int(c)), -1) for c in table.codes], dtype=np.int64)
            self.columns = [table.codes, table.counts, table.unused, table.ema_dead, ema, table.norm,
                            table.neighbour, table.distance, died]
            self._apply_sort()
        self.endResetModel()

    def sort(self, column: int, order=Qt.SortOrder.AscendingOrder) -> None:
        self._sort = (column, order)
        if self.table is None:
            return
        self.layoutAboutToBeChanged.emit()
        self._apply_sort()
        self.layoutChanged.emit()

    def _apply_sort(self) -> None:
        column, order = self._sort
        keys = self.columns[column][self.rows].astype(np.float64)
        keys = np.where(np.isnan(keys), -np.inf, keys)
        order_idx = np.lexsort((self.columns[0][self.rows], keys))  # ties by code
        if order == Qt.SortOrder.DescendingOrder:
            order_idx = order_idx[::-1]
        self.rows = self.rows[order_idx]

    def rowCount(self, parent=None):  # noqa: N802
        return 0 if parent is not None and parent.isValid() else int(self.rows.size)

    def columnCount(self, parent=None):  # noqa: N802
        return 0 if parent is not None and parent.isValid() else len(COLUMNS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):  # noqa: N802
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        return None

    def value(self, row: int, col: int):
        v = self.columns[col][self.rows[row]]
        if col in (2, 3):
            return bool(v)
        if col == DIED_AT:
            return None if v < 0 else int(v)
        if col in (0, 1, 6):
            return int(v)
        v = float(v)
        return None if col == 4 and np.isnan(v) else v

    def code_at(self, row: int) -> int:
        return int(self.table.codes[int(self.rows[row])])

    def row_of(self, code: int) -> int | None:
        if self.table is None:
            return None
        pos = np.searchsorted(self.table.codes, code)
        if pos < self.table.codes.size and self.table.codes[pos] == code:
            hits = np.flatnonzero(self.rows == pos)
            if hits.size:
                return int(hits[0])
        return None

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if self.table is None or not index.isValid():
            return None
        col = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            value = self.value(index.row(), col)
            if value is None:
                return "–"
            if isinstance(value, bool):
                return "yes" if value else ""
            if col == 6 and value < 0:
                return "–"
            if isinstance(value, float):
                return f"{value:.4g}"
            return f"{value:,}" if col == 1 else str(value)
        if role == Qt.ItemDataRole.ForegroundRole and col in (2, 3):
            return _DEAD_QCOLOR if self.columns[col][self.rows[index.row()]] else None
        if role == Qt.ItemDataRole.TextAlignmentRole:
            return _RIGHT
        return None


class CodeTable(QTableView):
    """A table of codes where typing a number goes to that code. Qt's own type-ahead matches the start of
    the text: typing 256 stopped at code 25 when 256 was not in the table."""

    code_typed = Signal(int)

    def __init__(self):
        super().__init__()
        self._typed = ""
        self._since = QElapsedTimer()

    def keyboardSearch(self, text: str) -> None:  # noqa: N802
        if not text.isdigit():
            super().keyboardSearch(text)
            return
        if self._since.isValid() and self._since.elapsed() < QApplication.keyboardInputInterval():
            self._typed += text
        else:
            self._typed = text
        self._since.start()
        self.code_typed.emit(int(self._typed))


_DEAD_QCOLOR = QColor(DEAD_COLOR)
_RIGHT = int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)


class DeadCodesView(Panel):
    title = "Dead codes"

    def __init__(self, state: AppState, parent=None):
        super().__init__(state, "dead_codes", parent)
        selection = self.selection
        self.table: DeadCodeTable | None = None
        self._table_for: tuple | None = None
        self._last_start = 0.0
        self.slot = JobSlot("dead-codes", self)
        self.filter_box = QComboBox()
        self.filter_box.setObjectName("dead-filter")
        for key, text in FILTERS:
            self.filter_box.addItem(text, key)
        self.header = header_label()
        self.header.setObjectName("dead-header")
        self.model = DeadCodeModel(self)
        self.view = CodeTable()
        self.view.setObjectName("dead-table")
        self.view.setToolTip("type a code's number to go to it")
        self.view.setMinimumHeight(MIN_TABLE_HEIGHT)
        self.view.setModel(self.model)
        self.view.setSortingEnabled(True)
        self.view.sortByColumn(0, Qt.SortOrder.AscendingOrder)
        self.view.verticalHeader().setVisible(False)
        self.view.verticalHeader().setDefaultSectionSize(20)
        self.view.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        self.view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.view.setAlternatingRowColors(True)
        self.view.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.view.horizontalHeader().setStretchLastSection(True)
        metrics = self.view.horizontalHeader().fontMetrics()
        for col, name in enumerate(COLUMNS):   # from the header text: sizing to contents reads every row
            self.view.horizontalHeader().resizeSection(col, max(64, metrics.horizontalAdvance(name) + 30))
        self.lay_out([self.filter_box], self.header, self.view)
        self.filter_box.currentIndexChanged.connect(lambda _: self._fill())
        self.view.selectionModel().selectionChanged.connect(self._row_selected)
        self.view.code_typed.connect(self._code_typed)
        selection.layer_changed.connect(lambda _: self.request(force=True))
        selection.code_changed.connect(lambda layer, code: self._select_code(code))
        selection.codes_changed.connect(lambda layer, codes: self._fill())
        self._show_header()

    @property
    def filter(self) -> str:
        return self.filter_box.currentData()

    def set_filter(self, key: str) -> None:
        for i in range(self.filter_box.count()):
            if self.filter_box.itemData(i) == key:
                self.filter_box.setCurrentIndex(i)

    # --- data ---------------------------------------------------------------------------------------
    def set_session(self, session: Session | None) -> None:
        self.slot.cancel()
        self.session = session
        self.snapshot = None
        self.table = None
        self._table_for = None
        self._fill()
        self.request(force=True)

    def set_snapshot(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self.request(force=snapshot.complete or snapshot.cancelled)

    @property
    def ready(self) -> bool:
        return (self.session is not None and self.table is not None and self.snapshot is not None
                and self._table_for == self._wanted())

    def _wanted(self) -> tuple:
        return (self.selection.layer, id(self.snapshot))

    def request(self, force: bool = False) -> None:
        if self.session is None:
            return
        if self.snapshot is not None and self.selection.layer < len(self.snapshot.counts):
            counts = self.snapshot.counts[self.selection.layer]
            complete = self.snapshot.complete
        else:
            counts, complete = None, False
        if not force and time.perf_counter() - self._last_start < PARTIAL_INTERVAL:
            return
        self._last_start = time.perf_counter()
        wanted = self._wanted()
        self.slot.start(dead_code_table, self.session, self.selection.layer, counts, complete,
                        returned=lambda table: self._got(table, wanted), errored=self._failed)

    def _got(self, table: DeadCodeTable, wanted: tuple) -> None:
        self.table = table
        self._table_for = wanted
        self._fill()

    def _failed(self, exc: Exception) -> None:
        self.header.setText(f"<span style='color:{DEAD_COLOR}'>dead-code search failed: "
                            f"{html.escape(str(exc))}</span>")

    def set_died_at(self, died_at: dict[tuple[int, int], int] | None, note: str = "") -> None:
        """Fill the "Died at step" column from an opened checkpoint series (None clears it)."""
        self.model.died_at = died_at
        self.view.setToolTip(note)
        self._fill()

    def _fill(self) -> None:
        self.view.selectionModel().blockSignals(True)
        self.model.set_table(self.table, self.filter, self.selection.codes)
        self.view.selectionModel().blockSignals(False)
        self._select_code(self.selection.code)
        self._show_header()

    def _show_header(self) -> None:
        if self.session is None:
            self.header.setText("<i>no checkpoint open</i>")
            return
        layer = self.selection.layer
        t = self.table
        if t is None or t.layer != layer:
            self.header.setText(f"<b>Layer {layer}</b>: searching…")
            return
        k = len(self.session.codebooks[layer])
        rule = self.session.quantizer.dead_code_rule.describe() if self.session.ema_dead is not None else None
        unused, ema, both = int(t.unused.sum()), int(t.ema_dead.sum()), int((t.unused & t.ema_dead).sum())
        text = (f"<b>Layer {layer}</b>: <span style='color:{DEAD_COLOR}'><b>{unused:,}</b></span> of {k:,} "
                f"codes unused on {counted_on(self.snapshot)}")
        text += f", <b>{ema:,}</b> EMA-dead ({html.escape(rule)}), {both:,} both" if rule else \
            " (no EMA statistics in the checkpoint)"
        if self.snapshot is not None:
            per = " · ".join(f"L{r.layer} {len(r.dead_codes):,}" for r in self.snapshot.result.layers)
            text += f"<br>unused per layer: {per}"
        if not t.complete:
            text += " <i>(audit partial)</i>"
        text += f"<br>Nearest live: the closest code used on the features ({t.live_count:,} live)."
        boxed = self.selection.codes
        if boxed.size:
            here = int(np.isin(t.codes, boxed).sum())
            text += f"<br>▢ {boxed.size:,} codes boxed on the map, {here:,} of them dead."
        code = self.selection.code
        if 0 <= code < k and self.model.row_of(code) is None:
            uses = ""
            if self.snapshot is not None and layer < len(self.snapshot.counts):
                uses = f": {int(self.snapshot.counts[layer][code]):,} uses"
            text += f"<br>Code <b>{code}</b> is not in this list{uses}."
        self.header.setText(text)

    # --- selection ------------------------------------------------------------------------------------
    def _row_selected(self, *_) -> None:
        rows = self.view.selectionModel().selectedRows()
        if rows and self.table is not None:
            self.selection.set_code(self.table.layer, self.model.code_at(rows[0].row()))

    def _code_typed(self, code: int) -> None:
        if self.session is not None and code < len(self.session.codebooks[self.selection.layer]):
            self.selection.set_code(self.selection.layer, code)

    def _select_code(self, code: int) -> None:
        row = self.model.row_of(code) if code >= 0 else None
        self._show_header()
        sm = self.view.selectionModel()
        sm.blockSignals(True)
        if row is None:
            self.view.clearSelection()
        else:
            self.view.selectRow(row)
            self.view.scrollTo(self.model.index(row, 0))
        sm.blockSignals(False)
        self.view.viewport().update()

    def select_row(self, row: int) -> None:
        """Select the row as a user click would (for tests and keyboard users)."""
        self.view.selectRow(row)

    def selected_code(self) -> int | None:
        rows = self.view.selectionModel().selectedRows()
        if not rows or self.table is None:
            return None
        return self.model.code_at(rows[0].row())

    # --- export ---------------------------------------------------------------------------------------
    def export_csv(self, path) -> None:
        """The rows shown (filter and sort included), typed (app/tables.py)."""
        if self.table is None:
            raise ValueError("the dead-code search has not finished")
        write_csv(path, DEAD_CODES_HEADER, dead_code_rows(self.table, self.model.died_at, self.model.rows))

    def cleanup(self) -> None:
        self.slot.cancel()
