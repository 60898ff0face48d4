"""Uses per code as one filled step curve: the histogram's, the Compare window's two, any other's.

One `PlotCurveItem` with stepMode="center" and a fill draws all K bars as a single path (K = 65,536 stays
fluid; a bar item per code would not), given only the bins in view at about two per pixel. Log scale is
done here (log10 of the data, the axis only labels powers of ten) rather than with pyqtgraph's log mode,
which cannot fill down to a zero count. `usage_steps` is the numbers; `UsageCurve` the items.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyqtgraph as pg


@dataclass
class UsageSteps:
    """A usage vector laid out as step-curve bins in one mode (by code or by rank, linear or log)."""

    edges: np.ndarray     # [m + 1] bin edges on x
    y: np.ndarray         # [m] height of each bin
    dead: np.ndarray      # [m] the bin is an unused code
    base: float           # the fill level: 0, or the log floor where a zero sits
    top: float
    order: np.ndarray     # codes by descending use (ties by code)
    rank: np.ndarray      # rank of each code in `order`
    ranked: bool
    log: bool

    def x_of(self, code: int) -> float | None:
        """The centre of a code's bar, or None where it is not drawn (an unused code on log-log axes)."""
        if not 0 <= code < self.rank.size:
            return None
        if not self.ranked:
            return code + 0.5
        rank = int(self.rank[code])
        if self.log:
            return math.log10(rank + 1) if rank < self.y.size else None
        return rank + 0.5

    def bars_of(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(x centres, heights) of the bars of `codes` that are drawn in this mode."""
        codes = np.asarray(codes, dtype=np.int64)
        codes = codes[(codes >= 0) & (codes < self.rank.size)]
        if not self.ranked:
            return codes + 0.5, self.y[codes]
        rank = self.rank[codes]
        if self.log:
            rank = rank[rank < self.y.size]
            return np.log10(rank + 1.0), self.y[rank]
        return rank + 0.5, self.y[rank]

    def code_at(self, x: float) -> int | None:
        """The code whose bar is at view x, or None."""
        k = self.rank.size
        if self.ranked:
            rank = int(round(10 ** x)) - 1 if self.log else int(math.floor(x))
            limit = self.y.size if self.log else k
            return int(self.order[rank]) if 0 <= rank < limit else None
        code = int(math.floor(x))
        return code if 0 <= code < k else None


def usage_steps(counts: np.ndarray, ranked: bool = False, log: bool = False, scale: float = 1.0,
                floor: float | None = None) -> UsageSteps:
    """`counts` times `scale` (1: uses; 1 / frames: shares) as bins. On a log axis a zero sits at `floor`
    (default: half of one use's height, just below the smallest possible bar)."""
    counts = np.asarray(counts)
    values = counts.astype(np.float64) * scale
    k = counts.size
    order = np.argsort(-counts, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(k)
    floor = math.log10(0.5 * scale) if floor is None else floor
    if ranked and log:
        used = values[order][counts[order] > 0]
        edges = np.log10(np.concatenate([[0.8], np.arange(1, used.size + 1) + 0.5]))
        y, dead = np.log10(used), np.zeros(used.size, dtype=bool)
    else:
        shown = values[order] if ranked else values
        dead = (counts[order] if ranked else counts) == 0
        edges = np.arange(k + 1, dtype=np.float64)
        y = np.where(shown > 0, np.log10(np.where(shown > 0, shown, 1.0)), floor) if log else shown
    base = floor if log else 0.0
    peak = float(values.max()) if k else 0.0
    top = (math.log10(peak) if peak > 0 else floor + 1) if log else max(peak, 1e-12)
    return UsageSteps(edges, y, dead, base, max(top, base + 1e-12), order, rank, ranked, log)


def decimate(steps: UsageSteps, lo: float, hi: float, max_bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(edges, heights, dead) of the bins between x = lo and hi, at most `max_bins` of them: the tallest
    bar of each pixel column, dead where any code in it is."""
    edges, y, dead = steps.edges, steps.y, steps.dead
    n = y.size
    a = max(0, int(np.searchsorted(edges, lo, side="right")) - 1)
    b = min(n, int(np.searchsorted(edges, hi, side="left")) + 1)
    if b <= a:
        a, b = 0, n
    if b - a <= max_bins:
        return edges[a:b + 1], y[a:b], dead[a:b]
    grid = np.linspace(edges[a], edges[b], max_bins + 1)[:-1]
    starts = np.unique(np.clip(np.searchsorted(edges, grid, side="right") - 1, a, b - 1))
    ys = np.maximum.reduceat(y[a:b], starts - a)
    ds = np.logical_or.reduceat(dead[a:b], starts - a) if dead.any() else np.zeros(starts.size, bool)
    return np.concatenate([edges[starts], [edges[b]]]), ys, ds


class UsageCurve:
    """The items of one usage curve on a plot: the filled curve and, optionally, a band below the base
    marking unused codes. `set_steps` gives it data; `draw_visible` the bins of the current view."""

    def __init__(self, plot: pg.PlotItem, color: str, fill_alpha: int = 0x99, dead_color: str | None = None,
                 width: float = 1.0):
        c = pg.mkColor(color)
        step = {"stepMode": "center", "fillLevel": 0, "skipFiniteCheck": True, "antialias": False}
        self.curve = pg.PlotCurveItem(x=[0.0, 1.0], y=[0.0], pen=pg.mkPen(color, width=width),
                                      brush=pg.mkBrush(c.red(), c.green(), c.blue(), fill_alpha), **step)
        self.dead_curve = None
        plot.addItem(self.curve)
        if dead_color is not None:
            self.dead_curve = pg.PlotCurveItem(x=[0.0, 1.0], y=[0.0], pen=pg.mkPen(dead_color, width=1),
                                               brush=pg.mkBrush(dead_color), **step)
            plot.addItem(self.dead_curve)
        self.plot = plot
        self.steps: UsageSteps | None = None
        self.band = 0.0
        self.drawn_bins = 0

    def set_steps(self, steps: UsageSteps | None, band: float = 0.0) -> None:
        """New data; `band` is the height of the unused-code band below the base (0: none)."""
        self.steps, self.band = steps, band
        visible = steps is not None
        self.curve.setVisible(visible)
        if self.dead_curve is not None:
            self.dead_curve.setVisible(visible and band > 0 and not (steps.ranked and steps.log))
        self.draw_visible()

    def draw_visible(self) -> None:
        steps = self.steps
        if steps is None:
            return
        base = steps.base
        if steps.y.size == 0:
            self.curve.setData(np.array([0.0, 1.0]), np.array([base]), stepMode="center", fillLevel=base)
            if self.dead_curve is not None:
                self.dead_curve.setData(np.array([0.0, 1.0]), np.array([base]), stepMode="center", fillLevel=base)
            self.drawn_bins = 0
            return
        vb = self.plot.getViewBox()
        lo, hi = vb.viewRange()[0]
        max_bins = int(min(4000, max(800, 2 * vb.width())))
        xs, ys, ds = decimate(steps, lo, hi, max_bins)
        self.curve.setData(xs, ys, stepMode="center", fillLevel=base, skipFiniteCheck=True)
        if self.dead_curve is not None and self.band > 0:
            self.dead_curve.setData(xs, np.where(ds, base - self.band, base), stepMode="center", fillLevel=base,
                                    skipFiniteCheck=True)
        self.drawn_bins = int(ys.size)


def decade_ticks(top_exponent: float, start: int = 0) -> list:
    """Major ticks at powers of ten (labelled), minor ones between, for a log10 axis up to `top_exponent`."""
    top = max(start + 1, math.ceil(top_exponent))
    major = [(float(e), f"{10 ** e:,}" if e >= 0 else f"{10.0 ** e:g}") for e in range(start, top + 1)]
    minor = [(math.log10(m * 10.0 ** e), "") for e in range(start, top) for m in range(2, 10)]
    return [major, minor]
