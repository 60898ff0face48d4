"""FSQ statistics from a grid's cell counts: which levels each dimension uses, and what it carries.

A cell's index is the mixed-radix number of its level indices, dimension 0 fastest, so the counts of a
grid of levels (L_0, ..., L_{d-1}) reshape to an array of shape (L_{d-1}, ..., L_0) and each dimension's
level histogram is a sum over the other axes: no extra pass over the frames, and shards still merge
(the counts do).
"""

from __future__ import annotations

import math

import numpy as np


def level_histograms(counts: np.ndarray, levels: list[int]) -> list[np.ndarray]:
    """Frames per level of each dimension: [L_j] int64 for j = 0 .. d-1."""
    grid = np.asarray(counts, dtype=np.int64).reshape(tuple(reversed(levels)))
    d = len(levels)
    out = []
    for j in range(d):
        axis = d - 1 - j
        others = tuple(a for a in range(d) if a != axis)
        out.append(grid.sum(axis=others) if others else grid.copy())
    return out


def entropy_bits(histogram: np.ndarray) -> float:
    total = histogram.sum()
    if total <= 0:
        return 0.0
    p = histogram[histogram > 0] / total
    return float(-(p * np.log2(p)).sum())


def dimension_stats(histogram: np.ndarray) -> dict:
    """What one dimension does with its L levels: levels used, bits carried (entropy) against log2 L,
    and the share of frames at its two edge levels (where a saturated tanh puts them)."""
    levels = int(histogram.size)
    total = int(histogram.sum())
    shares = histogram / total if total else np.zeros(levels)
    edge = float(shares[0] + shares[-1]) if levels > 1 else 1.0
    return {"levels": levels, "counts": [int(c) for c in histogram], "shares": [float(s) for s in shares],
            "levels_used": int((histogram > 0).sum()), "bits": entropy_bits(histogram),
            "max_bits": math.log2(levels), "edge_share": edge, "uniform_edge_share": min(1.0, 2.0 / levels)}


def grid_stats(counts: np.ndarray, levels: list[int]) -> dict:
    """One grid's numbers: cells used and their share, and each dimension's `dimension_stats`."""
    counts = np.asarray(counts, dtype=np.int64)
    used = int((counts > 0).sum())
    dims = [dict(dimension_stats(h), dim=j) for j, h in enumerate(level_histograms(counts, levels))]
    return {"levels": [int(v) for v in levels], "cells": int(counts.size), "cells_used": used,
            "share_used": used / counts.size if counts.size else 0.0, "frames": int(counts.sum()),
            "bits": sum(d["bits"] for d in dims), "max_bits": sum(d["max_bits"] for d in dims),
            # What the cell itself carries: at most the sum over dimensions, less when they move together.
            "code_bits": entropy_bits(counts), "dims": dims}
