"""Centroid map: the codebook in 2-D, PCA at once and UMAP (from a child process) when it is ready.

Points are drawn as a few `ScatterPlotItem`s in pixel mode, one per colour (16 usage levels, dead
codes, or one per layer), each with a single cached symbol; hover and click are hit-tested with a
KD-tree over the 2-D positions, never with per-point items. PCA, the KD-tree and UMAP all run in the
view's one worker job, which a new request (another layer, mode) cancels.
"""

from __future__ import annotations

import html
import time

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, QTimer
from PySide6.QtWidgets import QCheckBox, QComboBox

from ...analysis.umap_service import UmapParams
from ...app.map_jobs import MapGeometry, MapNote, map_job
from ...app.session import ON_FEATURES, Session, Snapshot, counted_on
from ..state import AppState
from .base import Panel
from ..widgets.common import (DEAD_COLOR, MIN_PLOT_HEIGHT, MIN_PLOT_WIDTH, SELECT_COLOR, USAGE_COLORMAP, elastic_label,
                              export_plot_png, layer_color, mark_muted, reset_button, steady_axis)
from ..widgets.scatter import UniformScatter
from ..workers import JobSlot
from ..widgets.empty import EmptyNote
from .map_overlay import OverlayPath
from .map_raster import RASTER_ABOVE, MapRaster
from .map_pointer import HOVER_RADIUS_PX, BoxSelectViewBox, MapPointer, set_positions
from ..theme import ink

USAGE_LEVELS = 16
RECOLOR_INTERVAL_BIG = 1.0     # s between recolours while an audit streams, for > 16k points
INCREMENTAL_ABOVE = 8192       # maps with more points recolour one group per event-loop turn
STAGGER_MS = 1                 # a real timer between groups (a zero timer runs in the same pass)


class CentroidMapView(Panel):
    title = "Centroid map"

    def __init__(self, state: AppState, umap_service=None, parent=None):
        super().__init__(state, "centroid_map", parent)
        selection = self.selection
        self.service = umap_service
        self.params = UmapParams()
        self.geometry: MapGeometry | None = None
        self._geoms: dict[tuple, MapGeometry] = {}
        self._notes: dict[tuple, str] = {}
        self._offsets: dict[int, int] = {}
        self._colored_for = None
        self._last_recolor = 0.0
        self._recolor_generation = 0
        self._pending_groups = None
        self.slot = JobSlot("centroid-map", self)
        self.slot.busy_changed.connect(self._busy_changed)
        self._busy_since = 0.0
        self._tick = QTimer(self)          # the elapsed time in the status line while the job runs
        self._tick.setInterval(1000)
        self._tick.timeout.connect(self._show_status)

        self.mode_box = QComboBox()
        self.mode_box.setObjectName("map-mode")
        self.mode_box.addItem("Selected layer, coloured by use", False)
        self.mode_box.addItem("All layers, coloured by layer", True)
        self.umap_box = QCheckBox("UMAP")
        self.umap_box.setObjectName("map-umap")
        self.umap_box.setToolTip("compute a UMAP in a separate process and show it instead of the PCA "
                                 "when ready (cached on disk)")
        self.umap_box.setChecked(umap_service is not None)
        self.umap_box.setEnabled(umap_service is not None)
        self.status = elastic_label()
        self.status.setObjectName("map-status")
        mark_muted(self.status)
        self.hover_label = elastic_label(" ")
        self.hover_label.setObjectName("map-hover")

        self.canvas = pg.GraphicsLayoutWidget()
        self.canvas.setObjectName("map-canvas")
        self.canvas.setMinimumSize(MIN_PLOT_WIDTH + 80, MIN_PLOT_HEIGHT + 80)
        self.plot = self.canvas.addPlot(row=0, col=0, viewBox=BoxSelectViewBox())
        self.plot.setMenuEnabled(False)
        self.plot.setAspectLocked(True)
        self.plot.hideButtons()
        self.plot.disableAutoRange()
        self.cmap = pg.colormap.get(USAGE_COLORMAP)
        self.colorbar = pg.ColorBarItem(values=(0, 1), colorMap=self.cmap, interactive=False, width=14,
                                        label="log10 uses", colorMapMenu=False, pen="#888888")
        self.canvas.addItem(self.colorbar, row=0, col=1)
        steady_axis(self.plot.getAxis("left"), 52)      # map coordinates: up to "-1500"
        steady_axis(self.colorbar.axis, 46)
        self._usage_brushes = [pg.mkBrush(c) for c in self.cmap.getLookupTable(nPts=USAGE_LEVELS, mode="qcolor")]
        self._items: list[UniformScatter] = []
        self.highlight = pg.ScatterPlotItem(size=16, pen=pg.mkPen(SELECT_COLOR, width=2.5), brush=None)
        self.highlight.setZValue(20)
        self.plot.addItem(self.highlight, ignoreBounds=True)
        self.highlight.hide()
        # The shared set of codes (a box drawn with Shift+drag): squares around them.
        self.set_marks = pg.ScatterPlotItem(size=11, symbol="s", pen=pg.mkPen(SELECT_COLOR, width=1.5), brush=None)
        self.set_marks.setZValue(18)
        self.plot.addItem(self.set_marks, ignoreBounds=True)
        self.raster = MapRaster(self.plot)
        self.empty = EmptyNote(self.plot, "no checkpoint open")
        self.colorbar.hide()
        self.overlay = OverlayPath(self.plot)
        state.overlay_changed.connect(lambda overlay: self.overlay.draw(overlay, self.geometry))
        # Below the plot, in a row of its own: inside it would hide points.
        self.legend = pg.LegendItem(colCount=6, labelTextColor=ink(), labelTextSize="8pt", frame=False)
        self.canvas.addItem(self.legend, row=1, col=0)
        self._legend_key = None
        self.canvas.installEventFilter(self)        # re-fit the legend's columns to the width

        self.reset_button = reset_button(self.reset_view, "map")
        self.reset_button.setToolTip(self.reset_button.toolTip() + "; Shift+drag selects the codes in a box")
        self.lay_out([self.mode_box, self.umap_box, self.reset_button], self.status, self.canvas, self.hover_label)

        self.mode_box.currentIndexChanged.connect(lambda _: self.request())
        self.umap_box.toggled.connect(lambda _: self.request())
        selection.layer_changed.connect(self._layer_changed)
        selection.code_changed.connect(lambda layer, code: self._show_selected())
        selection.codes_changed.connect(lambda layer, codes: self._show_set())
        self.pointer = MapPointer(self, self.hover_label)
        self._show_status()

    # --- state ------------------------------------------------------------------------------------------
    @property
    def all_layers(self) -> bool:
        return bool(self.mode_box.currentData())

    def set_all_layers(self, on: bool) -> None:
        self.mode_box.setCurrentIndex(1 if on else 0)

    def _layers(self) -> list[int]:
        if self.session is None:
            return []
        return list(range(self.session.n_q)) if self.all_layers else [self.selection.layer]

    @property
    def ready(self) -> bool:
        """Points are drawn for the current layer(s), coloured by the latest audit data."""
        if self.session is None or self.geometry is None:
            return False
        if self.geometry.key[0] != tuple(self._layers()):
            return False
        return self.snapshot is None or self._colored_for is self.snapshot

    @property
    def umap_pending(self) -> bool:
        """UMAP is wanted for the current view and not there yet (nor failed)."""
        key = tuple(self._layers())
        return (self.umap_box.isChecked() and self.service is not None and self.session is not None
                and (key, "umap") not in self._geoms and key not in self._notes)

    @property
    def method(self) -> str:
        return self.geometry.method if self.geometry is not None else ""

    # --- data -------------------------------------------------------------------------------------------
    def set_session(self, session: Session | None) -> None:
        self.slot.cancel()
        self.session = session
        self.snapshot = None
        self.geometry = None
        self._geoms.clear()
        self._notes.clear()
        self._colored_for = None
        self._offsets = {}
        if session is not None:
            offset = 0
            for i, cb in enumerate(session.codebooks):
                self._offsets[i] = offset
                offset += len(cb)
        self._clear_points()
        self.state.set_map(None)
        self.request()

    def set_snapshot(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        n = len(self.geometry.coords) if self.geometry is not None else 0
        if (n > 16384 and not snapshot.complete
                and time.perf_counter() - self._last_recolor < RECOLOR_INTERVAL_BIG):
            return  # big maps recolour at most once a second while the audit streams
        self._recolor()

    def _layer_changed(self, layer: int) -> None:
        if not self.all_layers:
            self.request()
        else:
            self._show_selected()

    def request(self) -> None:
        """Show the geometry for the current layer(s): from memory at once, else start the job."""
        if self.session is None:
            self.slot.cancel()
            self._show_status()
            return
        layers = self._layers()
        key = tuple(layers)
        use_umap = self.umap_box.isChecked() and self.service is not None
        best = self._geoms.get((key, "umap")) if use_umap else None
        best = best or self._geoms.get((key, "pca"))
        if best is not None:
            self._show_geometry(best)
        if best is not None and (best.method == "umap" or not use_umap or key in self._notes):
            self.slot.cancel()
            self._show_status()
            return
        self.slot.start(map_job, self.service, self.session, layers, self.params, use_umap,
                        self._geoms.get((key, "pca")), yielded=self._job_yielded, errored=self._job_failed)
        self._show_status()

    def _job_yielded(self, value) -> None:
        key = tuple(self._layers())
        if isinstance(value, MapNote):
            self._notes[key] = value.text
            self._show_status()
            return
        self._geoms[value.key] = value
        if value.key[0] == key:
            self._show_geometry(value)

    def _job_failed(self, exc: Exception) -> None:
        self._notes[tuple(self._layers())] = f"map failed: {exc}"
        if self.geometry is None:
            self.empty.show("no map: its computation failed (see above)")
        self._show_status()

    # --- drawing ----------------------------------------------------------------------------------------
    def _clear_points(self) -> None:
        self.raster.clear()
        self.empty.show("no checkpoint open" if self.session is None else "computing the map…")
        self.colorbar.hide()
        for item in self._items:
            item.setData([], [])
        self.legend.clear()
        self._legend_key = None
        self.highlight.hide()
        self.set_marks.setData([], [])
        self.pointer.forget()

    def _show_geometry(self, geometry: MapGeometry) -> None:
        first = self.geometry is None or self.geometry.key[0] != geometry.key[0] or \
            self.geometry.method != geometry.method
        self.geometry = geometry
        self.empty.hide()
        if first:
            self.pointer.forget()
        self.state.set_map(geometry)
        self.overlay.draw(self.state.overlay, geometry)
        name = "UMAP" if geometry.method == "umap" else "PC"
        self.plot.setLabel("bottom", f"{name} 1")
        self.plot.setLabel("left", f"{name} 2")
        self._colored_for = None
        self._recolor()
        if first:
            self.reset_view()
        self._show_selected()
        self._show_set()
        self._show_status()

    def _point_size(self, n: int) -> float:
        return 7.0 if n <= 2048 else 5.0 if n <= 16384 else 3.0

    def _recolor(self) -> None:
        geo = self.geometry
        if geo is None or self.session is None:
            return
        self._last_recolor = time.perf_counter()
        n = len(geo.coords)
        size = self._point_size(n)
        counts = self._counts_for(geo)
        groups: list[tuple[np.ndarray, object, float, int]] = []   # (indices, brush, size, z)
        dead = counts == 0 if counts is not None else np.zeros(n, dtype=bool)
        if counts is not None and dead.any():
            groups.append((np.flatnonzero(dead), pg.mkBrush(DEAD_COLOR), max(3.0, size - 2), 0))
        live = np.flatnonzero(~dead)
        if self.all_layers:
            for layer in np.unique(geo.layers):
                idx = live[geo.layers[live] == layer]
                groups.append((idx, pg.mkBrush(layer_color(int(layer))), size, 1))
            self.colorbar.hide()
        elif counts is None:
            groups.append((live, pg.mkBrush("#9E9E9E"), size, 1))
            self.colorbar.hide()
        else:
            logc = np.log10(counts[live].astype(np.float64))
            top = max(float(logc.max()) if logc.size else 1.0, 1e-9)
            level = np.minimum((logc / top * USAGE_LEVELS).astype(np.int64), USAGE_LEVELS - 1)
            order = np.argsort(level, kind="stable")
            bounds = np.searchsorted(level[order], np.arange(USAGE_LEVELS + 1))
            for lv in range(USAGE_LEVELS):
                groups.append((live[order[bounds[lv]:bounds[lv + 1]]], self._usage_brushes[lv], size, 1 + lv))
            self.colorbar.setLevels(values=(0.0, top))
            self.colorbar.show()
        if n > RASTER_ABOVE:                       # one image instead of scatter items (map_raster.py)
            for item in self._items:
                item.setData([], [])
            self._update_legend(geo, bool(counts is not None and dead.any()), size)
            self._recolor_generation += 1
            self._pending_groups = None
            self.raster.set_points(geo.coords, groups)
            self._colored_for = self.snapshot
            self.pointer.update()
            return
        self.raster.clear()
        while len(self._items) < len(groups):
            item = UniformScatter(pen=None, pxMode=True)
            self.plot.addItem(item)
            self._items.append(item)
        self._update_legend(geo, bool(counts is not None and dead.any()), size)
        work = [(item, group) for item, group in zip(self._items, groups)]
        work += [(item, None) for item in self._items[len(groups):]]
        self._recolor_generation += 1
        if n <= INCREMENTAL_ABOVE:
            for item, group in work:
                self._set_group(item, group, geo)
            self._colored_for = self.snapshot
            self.pointer.update()
        else:
            # Big maps: one colour group per event-loop turn (~4 ms each at 65,536 points) instead
            # of ~60 ms at once; `ready` turns true after the last one.
            self._pending_groups = (self._recolor_generation, geo, self.snapshot, work)
            QTimer.singleShot(STAGGER_MS, self._next_group)

    def _set_group(self, item, group, geo) -> None:
        if group is None:
            item.setData([], [])
            return
        idx, brush, sz, z = group
        item.setData(pos=geo.coords[idx].astype(np.float64), brush=brush, size=sz, pen=None, symbol="o")
        item.setZValue(z)

    def _next_group(self) -> None:
        if self._pending_groups is None:
            return
        generation, geo, snapshot, work = self._pending_groups
        if generation != self._recolor_generation or geo is not self.geometry:
            return
        item, group = work.pop(0)
        self._set_group(item, group, geo)
        if work:
            QTimer.singleShot(STAGGER_MS, self._next_group)
        else:
            self._pending_groups = None
            self._colored_for = snapshot
            self.pointer.update()

    def _update_legend(self, geo: MapGeometry, has_dead: bool, size: float) -> None:
        layers = tuple(int(v) for v in np.unique(geo.layers)) if self.all_layers else ()
        in_run = counted_on(self.snapshot) != ON_FEATURES
        dead_label = "dead (unused in this run window)" if in_run else "dead (unused on features)"
        key = (layers, has_dead, dead_label)
        if key == self._legend_key:
            return
        self._legend_key = key
        self.legend.clear()
        for layer in layers:
            self.legend.addItem(pg.ScatterPlotItem(size=9, pen=None, brush=pg.mkBrush(layer_color(layer))),
                                f"layer {layer}")
        if has_dead:
            self.legend.addItem(pg.ScatterPlotItem(size=7, pen=None, brush=pg.mkBrush(DEAD_COLOR)),
                                dead_label)
        self.legend.setVisible(bool(layers) or has_dead)
        self._fit_legend()

    def _fit_legend(self) -> None:
        """As many legend columns as fit across the canvas (one row of five entries runs off a map
        500 pixels wide). Entries fill rows left to right, so a column is as wide as its widest entry."""
        widths = [sample.boundingRect().width() + label.item.boundingRect().width() + 24
                  for sample, label in self.legend.items]
        if not widths:
            return
        room = self.canvas.width() * 0.95
        columns = next((c for c in range(len(widths), 1, -1)
                        if sum(max(widths[i::c]) for i in range(c)) <= room), 1)
        if columns != self.legend.columnCount:
            self.legend.setColumnCount(columns)

    def eventFilter(self, obj, event):  # noqa: N802 - Qt's name
        if obj is self.canvas and event.type() == QEvent.Type.Resize:
            self._fit_legend()
        return super().eventFilter(obj, event)

    def _counts_for(self, geo: MapGeometry) -> np.ndarray | None:
        if self.snapshot is None or self.snapshot.frames_done == 0:
            return None
        return np.concatenate([self.snapshot.counts[int(i)] for i in np.unique(geo.layers)]) \
            if len(np.unique(geo.layers)) > 1 else self.snapshot.counts[int(geo.layers[0])]

    def _index_of(self, layer: int, code: int) -> int | None:
        geo = self.geometry
        if geo is None or code < 0:
            return None
        if self.all_layers:
            index = self._offsets.get(layer, 0) + code
        else:
            if layer != int(geo.layers[0]):
                return None
            index = code
        return index if 0 <= index < len(geo.coords) else None

    def _show_selected(self) -> None:
        index = self._index_of(self.selection.layer, self.selection.code)
        if index is None:
            self.highlight.hide()
            return
        x, y = (float(v) for v in self.geometry.coords[index])
        self.highlight.setData([x], [y])
        self.highlight.show()

    def _busy_changed(self, busy: bool) -> None:
        if busy:
            self._busy_since = time.monotonic()
            self._tick.start()
        else:
            self._tick.stop()
        self._show_status()

    def _show_status(self) -> None:
        if self.session is None:
            self.status.setText("")
            self.status.setToolTip("")
            return
        key = tuple(self._layers())
        geo = self.geometry
        n = sum(len(self.session.codebooks[i]) for i in key)
        what = f"{n:,} codes" + (f" of {len(key)} layers" if len(key) > 1 else f" of layer {key[0]}")
        if geo is None or geo.key[0] != key:
            text = f"computing PCA of {what}…"
        elif geo.method == "umap":
            text = f"UMAP of {what} (n_neighbors {self.params.n_neighbors}, min_dist {self.params.min_dist:g}; " \
                   f"{geo.note})"
        else:
            text = f"PCA of {what}"
            if key in self._notes:
                text += f" · {self._notes[key]}"
            elif self.umap_pending and self.slot.busy:
                elapsed = f"{time.monotonic() - self._busy_since:.0f} s"
                ready = self.service.ready if self.service is not None else False
                if ready:
                    text += f" · UMAP computing… {elapsed}"
                else:
                    text += f" · starting UMAP… {elapsed}"
                    tip = (" · a first run on this machine compiles umap's code: 20 s to 3 min; later runs and "
                           "`rvq-viewer warm-up` reuse it")
                    self.status.setText(html.escape(text))
                    self.status.setToolTip(text + tip)
                    return
        self.status.setText(html.escape(text))
        self.status.setToolTip(text)

    # --- pointer (map_pointer.py) --------------------------------------------------------------------------
    def point_at(self, x: float, y: float, radius_px: float = HOVER_RADIUS_PX) -> int | None:
        return self.pointer.point_at(x, y, radius_px)

    def select_index(self, index: int) -> None:
        self.pointer.select_index(index)

    def _show_set(self) -> None:
        codes = self.selection.codes
        pos = set_positions(self.geometry, self.selection.layer, codes, self._offsets, self.all_layers)
        self.set_marks.setData(pos=pos)

    def reset_view(self) -> None:
        """The whole map in view."""
        geo = self.geometry
        if geo is None:
            return
        lo = [float(v) for v in geo.coords.min(axis=0)]   # Python floats: float32 ranges
        hi = [float(v) for v in geo.coords.max(axis=0)]   # overflow in ViewBox's limit checks
        pad = 0.05 * max(hi[0] - lo[0], hi[1] - lo[1], 1e-6)
        self.plot.getViewBox().setRange(xRange=(lo[0] - pad, hi[0] + pad), yRange=(lo[1] - pad, hi[1] + pad),
                                        padding=0)

    def view_position(self, layer: int, code: int) -> tuple[float, float] | None:
        index = self._index_of(layer, code)
        return None if index is None else tuple(float(v) for v in self.geometry.coords[index])

    # --- export / cleanup -----------------------------------------------------------------------------------
    def export_png(self, path) -> None:
        what = "Centroid map" + (f" ({'UMAP' if self.method == 'umap' else 'PCA'})" if self.geometry else "")
        export_plot_png(self.canvas, path, self.export_title(what, None if self.all_layers else
                                                                 self.selection.layer))

    def cleanup(self) -> None:
        self.slot.cancel()
        self.pointer.close()

