"""The code matching table: each code of A with its nearest code of B."""

from __future__ import annotations

import math

import numpy as np
from PySide6.QtCore import QAbstractTableModel, Qt
from PySide6.QtGui import QBrush, QColor

from ...analysis.compare import Comparison
from ..widgets.common import HEALTH_COLORS


def fmt(value, spec: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return format(value, spec)


MATCH_COLUMNS = ["Code A", "Uses A", "Nearest B", "Distance", "Dist. / spacing", "Uses B", "Mutual", "Drift"]
MATCH_TIPS = ["code of A", "frames A assigns to this code", "the code of B nearest to it (Euclidean)",
              "distance to that code of B",
              "the distance divided by A's median distance between neighbouring codes: below 0.5 (green) B has "
              "a code for the same region; above 1, B has nothing near it",
              "frames B assigns to that code of B", "the code of B has this code of A as its nearest code too",
              "distance between the codes with the same index in A and B (one run's drift; only when both "
              "have K codes)"]


class MatchModel(QAbstractTableModel):
    """A's codes with their nearest code of B. Columns are numpy arrays; sorting is one argsort."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.columns: list[np.ndarray] = []
        self.rows = np.zeros(0, dtype=np.int64)       # code of A shown in each row
        self._where = np.zeros(0, dtype=np.int64)     # row of each code of A
        self._sort = (0, Qt.SortOrder.AscendingOrder)
        self.has_same_index = False

    def set_layer(self, comparison: Comparison | None, layer: int) -> None:
        self.beginResetModel()
        match = comparison.matches[layer] if comparison is not None and layer < len(comparison.matches) else None
        if match is None:
            self.columns = []
            self.rows = np.zeros(0, dtype=np.int64)
        else:
            k = match.index.size
            uses_a = np.asarray(comparison.usage_a[layer], dtype=np.int64)
            uses_b = np.asarray(comparison.usage_b[layer], dtype=np.int64)
            uses_a = uses_a if uses_a.size == k else np.zeros(k, dtype=np.int64)
            uses_b_match = uses_b[match.index] if uses_b.size == match.reverse_index.size else np.zeros(k, np.int64)
            mutual = match.reverse_index[match.index] == np.arange(k)
            same = match.same_index_distance if match.same_index_distance is not None else np.full(k, np.nan)
            self.has_same_index = match.same_index_distance is not None
            self.columns = [np.arange(k), uses_a, match.index.astype(np.int64), match.distance.astype(np.float64),
                            match.relative.astype(np.float64), uses_b_match, mutual, np.asarray(same, np.float64)]
            self.rows = np.arange(k)
            self._apply_sort()
        self.endResetModel()

    def sort(self, column: int, order=Qt.SortOrder.AscendingOrder) -> None:  # noqa: D401 - Qt override
        self._sort = (column, order)
        if not self.columns:
            return
        self.layoutAboutToBeChanged.emit()
        old = self.persistentIndexList()
        codes = [self.code_at(i.row()) for i in old]
        self._apply_sort()
        # The current and selected rows follow their codes to the new places.
        self.changePersistentIndexList(old, [self.index(self.row_of(code), i.column()) if code >= 0 else i
                                             for code, i in zip(codes, old)])
        self.layoutChanged.emit()

    def _apply_sort(self) -> None:
        column, order = self._sort
        keys = self.columns[column].astype(np.float64)
        keys = np.where(np.isnan(keys), -np.inf, keys)
        idx = np.lexsort((self.columns[0], keys))
        if order == Qt.SortOrder.DescendingOrder:
            idx = idx[::-1]
        self.rows = idx.astype(np.int64)
        self._where = np.empty_like(self.rows)
        self._where[self.rows] = np.arange(self.rows.size)

    def row_of(self, code: int) -> int:
        return int(self._where[code]) if 0 <= code < self._where.size and self.rows.size else -1

    def code_at(self, row: int) -> int:
        return int(self.rows[row]) if 0 <= row < self.rows.size else -1

    def rowCount(self, parent=None):  # noqa: N802
        return 0 if parent is not None and parent.isValid() else int(self.rows.size)

    def columnCount(self, parent=None):  # noqa: N802
        return 0 if parent is not None and parent.isValid() else len(MATCH_COLUMNS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):  # noqa: N802
        if orientation == Qt.Orientation.Horizontal:
            if role == Qt.ItemDataRole.DisplayRole:
                return MATCH_COLUMNS[section]
            if role == Qt.ItemDataRole.ToolTipRole:
                return MATCH_TIPS[section]
        return None

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid() or not self.columns:
            return None
        code, col = int(self.rows[index.row()]), index.column()
        value = self.columns[col][code]
        if role == Qt.ItemDataRole.DisplayRole:
            if col == 6:
                return "yes" if value else ""
            if col in (3, 4, 7):
                return fmt(float(value), ".3g")
            return f"{int(value):,}"
        if role == Qt.ItemDataRole.TextAlignmentRole:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.ForegroundRole:
            if col == 1 and value == 0:
                return QBrush(QColor(HEALTH_COLORS["bad"]))
            if col == 4 and np.isfinite(value) and value < 0.5:
                return QBrush(QColor(HEALTH_COLORS["ok"]))
        return None
