"""Where the event timeline puts its marks: a band per layer (layer 0 on top), a lane per kind inside it,
and inside a lane the height gives the code index, so the marks of one step do not all sit on one point."""

from __future__ import annotations

import math

import numpy as np

from ..widgets.common import DEAD_COLOR

KIND_COLORS = {"died": DEAD_COLOR, "revived": "#009E73", "replaced": "#0072B2"}
KIND_SYMBOLS = {"died": "t", "revived": "t1", "replaced": "o"}      # t: triangle down, t1: up
KIND_MARKS = {"died": "▼", "revived": "▲", "replaced": "●"}
KIND_TIPS = {"died": "EMA cluster size fell below the checkpoint's dead-code threshold",
             "revived": "EMA-dead at the previous checkpoint, no longer",
             "replaced": "centroid jumped far beyond the drift of the other codes (respawned by expiry)"}
LANES = (-0.28, 0.0, 0.28)        # y offset of each kind's lane inside a layer's band
LANE_HALF = 0.12                  # half-height of a lane (codes spread over it)


def lane_y(layers: np.ndarray, kinds: np.ndarray, codes: np.ndarray | None, k: int) -> np.ndarray:
    """The y of each mark: its layer's band, its kind's lane, and (for single events) its code's height."""
    y = layers.astype(np.float64) + np.asarray(LANES)[kinds.astype(np.int64)]
    if codes is not None:
        y += ((codes.astype(np.float64) + 0.5) / max(k, 1) - 0.5) * 2 * LANE_HALF
    return y


def uniform_columns(steps: list[int], max_cols: int = 2000) -> tuple[np.ndarray, float, float]:
    """Checkpoints resampled onto equal-width columns for the heat strips: (checkpoint index per column,
    x of the first edge, total width)."""
    s = np.asarray(steps, dtype=np.float64)
    if len(s) == 1:
        return np.zeros(1, dtype=np.int64), s[0] - 0.5, 1.0
    gaps = np.diff(s)
    edges = np.r_[s[0] - gaps[0] / 2, (s[1:] + s[:-1]) / 2, s[-1] + gaps[-1] / 2]
    if np.allclose(gaps, gaps[0]):
        return np.arange(len(s)), float(edges[0]), float(edges[-1] - edges[0])
    n = int(min(max_cols, max(len(s), math.ceil((edges[-1] - edges[0]) / max(gaps.min(), 1e-9)))))
    centers = edges[0] + (np.arange(n) + 0.5) * (edges[-1] - edges[0]) / n
    index = np.clip(np.searchsorted(edges, centers, side="right") - 1, 0, len(s) - 1)
    return index, float(edges[0]), float(edges[-1] - edges[0])
