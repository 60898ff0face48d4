"""K = 65,536: the histogram draws at most a few bins per pixel, the map one image at the view's
resolution instead of scatter items, and hit-testing still finds the exact code. (Structure, not timings:
benchmarks/ui.py times it.)"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyqtgraph as pg
import torch
from PySide6.QtCore import Qt

from rvq_viewer.analysis.audit import build_result
from rvq_viewer.analysis.audit.stats import AuditAccumulator
from rvq_viewer.quant import Quantizer
from rvq_viewer.app.session import Session, Snapshot
from rvq_viewer.gui.panels import CentroidMapView, DeadCodesView, HistogramView
from rvq_viewer.gui.state import AppState
from rvq_viewer.gui.widgets.common import DEAD_COLOR
from rvq_viewer.pipeline import AuditSpec

K = 65_536


def _big_session_and_snapshot():
    rng = np.random.default_rng(0)
    book = rng.normal(size=(K, 8)).astype(np.float32)
    q = Quantizer(format="plain", codebooks=[torch.from_numpy(book)])
    acc = AuditAccumulator([K])
    counts = rng.zipf(1.6, K).astype(np.int64)
    counts[rng.random(K) < 0.3] = 0
    acc.layers[0].counts[:] = counts
    frames = torch.from_numpy(rng.normal(size=(1000, 8)).astype(np.float32))
    acc.input.add(frames)
    acc.layers[0].residual.add(frames * 0.5)
    result = build_result(acc, q)
    session = Session(spec=AuditSpec(Path("big.npy")), quantizer=q, source=None, total_frames=0,
                      codebooks=[book], norms=[np.linalg.norm(book, axis=1)], ema_sizes=None, ema_dead=None)
    snap = Snapshot(result=result, frames_done=int(counts.sum()), frames_total=None, elapsed=1.0, complete=True)
    return session, snap, counts


def test_histogram_of_65536_codes_draws_bounded_bins_and_maps_clicks_exactly(qtbot):
    session, snap, counts = _big_session_and_snapshot()
    state = AppState()
    sel = state.selection
    view = HistogramView(state)
    qtbot.addWidget(view)
    view.resize(700, 300)
    view.show()
    sel.reset(1)
    view.set_session(session)
    view.set_snapshot(snap)
    assert view.ready and 0 < view.drawn_bins <= 4000
    assert view.code_at(12345.5) == 12345                     # clicks use full resolution
    vb = view.plot.getPlotItem().getViewBox()
    vb.setXRange(1000, 1100, padding=0)                       # zoomed in: every code its own bar
    qtbot.waitUntil(lambda: view.drawn_bins <= 110 and view.drawn_bins >= 100, timeout=2000)
    view.sorted_box.setChecked(True)                          # log-log rank-frequency
    assert view.drawn_bins <= 4000
    assert view.code_at(0.0) == int(np.argmax(counts))        # rank 1 is the most used code


def test_map_of_65536_codes_is_one_image_and_a_kdtree(qtbot):
    session, snap, counts = _big_session_and_snapshot()
    state = AppState()
    sel = state.selection
    view = CentroidMapView(state, umap_service=None)
    qtbot.addWidget(view)
    view.resize(700, 600)
    view.show()
    sel.reset(1)
    view.set_session(session)
    view.set_snapshot(snap)
    qtbot.waitUntil(lambda: view.ready, timeout=20_000)
    assert not any(len(item.data) for item in view._items)      # no scatter items: the image
    raster = view.raster
    assert raster.active and len(raster._xy) == K
    vb = view.plot.getViewBox()
    # at the view box's resolution, redrawn when it is resized
    qtbot.waitUntil(lambda: raster.item.image.shape[:2] == (int(vb.height()), int(vb.width())), timeout=3000)
    image = raster.item.image
    # a live code's pixel has a usage colour, a dead code alone in its pixel the dead colour
    code = int(np.flatnonzero(counts > 0)[7])
    x, y = view.view_position(0, code)
    (x0, x1), (y0, y1) = vb.viewRange()
    px = int((x - x0) * image.shape[1] / (x1 - x0))
    py = int((y - y0) * image.shape[0] / (y1 - y0))
    assert image[py, px, 3] == 255
    dead_rgb = tuple(pg.mkColor(DEAD_COLOR).getRgb()[:3])
    assert (image[..., :3] == dead_rgb).all(axis=-1).any()
    # zooming in redraws the image for the new range, at the same resolution
    vb.setRange(xRange=(x - 0.05, x + 0.05), yRange=(y - 0.05, y + 0.05), padding=0)
    qtbot.waitUntil(lambda: raster.item.mapRectToParent(raster.item.boundingRect()).width() < 0.2, timeout=3000)
    center = raster.item.image[raster.item.image.shape[0] // 2, raster.item.image.shape[1] // 2]
    assert center[3] == 255                                      # the code itself, centred

    t = time.perf_counter()
    assert view.point_at(x, y) == code
    assert time.perf_counter() - t < 0.05
    view.select_index(code)
    assert sel.code == code and view.highlight.isVisible()


def test_dead_code_list_of_65536_codes_sorts_without_python_per_row(qtbot):
    session, snap, counts = _big_session_and_snapshot()
    state = AppState()
    sel = state.selection
    view = DeadCodesView(state)
    qtbot.addWidget(view)
    view.show()
    sel.reset(1)
    view.set_session(session)
    view.set_snapshot(snap)
    qtbot.waitUntil(lambda: view.ready, timeout=30_000)
    dead = int((counts == 0).sum())
    assert view.model.rowCount() == dead
    view.view.sortByColumn(7, Qt.SortOrder.DescendingOrder)
    distances = [view.model.value(r, 7) for r in range(5)]
    assert distances == sorted(distances, reverse=True)
    assert all(view.model.value(r, 6) >= 0 and counts[view.model.value(r, 6)] > 0 for r in range(5))
