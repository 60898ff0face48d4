"""Which point a click or hover is on: the nearest one within a few pixels, whatever the plot's scale.

Distances are measured in screen pixels (each axis divided by its view pixel size), so an aspect-free
plot such as the event timeline picks as a map with locked aspect does. `KdPicker` does the same over a
KD-tree for the centroid map's tens of thousands of points.
"""

from __future__ import annotations

import math

import numpy as np


def pixel_size(viewbox) -> tuple[float, float]:
    """View units per screen pixel on x and y (1 where the view has no size yet)."""
    px = np.asarray(viewbox.viewPixelSize(), dtype=np.float64)
    px = np.where(px > 0, px, 1.0)
    return float(px[0]), float(px[1])


def view_point(viewbox, scene_pos):
    """The view coordinates of a scene position inside the view box, or None outside it."""
    if not viewbox.sceneBoundingRect().contains(scene_pos):
        return None
    return viewbox.mapSceneToView(scene_pos)


def nearest_within(x: np.ndarray, y: np.ndarray, at: tuple[float, float], pixels: tuple[float, float],
                   radius_px: float) -> tuple[int, float] | None:
    """(index, squared pixel distance) of the point nearest to `at` within `radius_px` pixels, or None."""
    if len(x) == 0:
        return None
    d2 = ((np.asarray(x) - at[0]) / pixels[0]) ** 2 + ((np.asarray(y) - at[1]) / pixels[1]) ** 2
    i = int(np.argmin(d2))
    return (i, float(d2[i])) if d2[i] <= radius_px ** 2 else None


def pick(viewbox, scene_pos, groups: list[np.ndarray], radius_px: float) -> tuple[int, int] | None:
    """(group, index) of the point nearest to a scene position among several [n, 2] coordinate arrays, within
    `radius_px` pixels; None when the position is outside the view or no point is near."""
    where = view_point(viewbox, scene_pos)
    if where is None:
        return None
    pixels = pixel_size(viewbox)
    best = None
    for g, coords in enumerate(groups):
        coords = np.asarray(coords)
        if coords.size == 0:
            continue
        hit = nearest_within(coords[:, 0], coords[:, 1], (where.x(), where.y()), pixels, radius_px)
        if hit is not None and (best is None or hit[1] < best[2]):
            best = (g, hit[0], hit[1])
    return None if best is None else (best[0], best[1])


class KdPicker:
    """Nearest-point picking over a KD-tree of [n, 2] view coordinates (for plots with locked aspect)."""

    def __init__(self, coords: np.ndarray, tree=None):
        from scipy.spatial import cKDTree
        self.coords = np.asarray(coords)
        self.tree = tree if tree is not None else cKDTree(self.coords)

    def at(self, viewbox, x: float, y: float, radius_px: float) -> int | None:
        if len(self.coords) == 0:
            return None
        px, py = pixel_size(viewbox)
        dist, index = self.tree.query([float(x), float(y)], k=1, distance_upper_bound=float(radius_px * max(px, py)))
        if not math.isfinite(dist) or index >= len(self.coords):
            return None
        return int(index)
