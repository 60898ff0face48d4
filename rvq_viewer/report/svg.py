"""Small SVG charts written as text from numpy: line, scatter, bar and density plots with axes.

Why SVG text and not PNGs: the report must be written by the CLI on a CI machine that may have no
display and no Qt platform libraries, and matplotlib is not a dependency. Inline SVG needs nothing, is
embedded in the HTML itself (one file to attach), stays crisp at any zoom, and its text can be searched
and read by screen readers. Large inputs are reduced first (log-spaced samples of a rank curve, a
density grid instead of 65,536 dots), so a K = 65,536 report stays a few hundred kB.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np

from .text import escape

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2")
SEVERITY_COLORS = {"collapse": "#c62828", "warning": "#e65100", "info": "#1565c0", "ok": "#2e7d32"}
FONT = "font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif"
HALO = 'paint-order="stroke" stroke="#fff" stroke-width="3" stroke-linejoin="round"'
"""A white outline under labels drawn over data, so they stay readable on bars and curves."""
MAX_POINTS = 4000
"""Above this many points a scatter is drawn as a density grid."""


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e5 or a < 1e-3:
        mant, exp = f"{v:.0e}".split("e")
        return f"{mant}e{int(exp)}"
    if a >= 100:
        return f"{v:.0f}"
    return f"{v:.3g}"


class Axis:
    def __init__(self, lo: float, hi: float, log: bool = False, fmt=None):
        lo, hi = float(lo), float(hi)
        if log:
            lo = max(lo, 1e-300)
            hi = max(hi, lo * 10)
        if not math.isfinite(lo) or not math.isfinite(hi):
            lo, hi = 0.0, 1.0
        if hi <= lo:
            pad = abs(lo) * 0.1 or 1.0
            lo, hi = lo - pad, hi + pad
        self.lo, self.hi, self.log = lo, hi, log
        self.fmt = fmt or _fmt

    def frac(self, v):
        v = np.asarray(v, dtype=np.float64)
        if self.log:
            with np.errstate(divide="ignore", invalid="ignore"):
                return (np.log10(np.maximum(v, 1e-300)) - math.log10(self.lo)) / (math.log10(self.hi) - math.log10(self.lo))
        return (v - self.lo) / (self.hi - self.lo)

    def ticks(self, target: int = 5) -> list[tuple[float, str]]:
        if self.log:
            lo, hi = math.floor(math.log10(self.lo) + 1e-9), math.ceil(math.log10(self.hi) - 1e-9)
            step = max(1, math.ceil((hi - lo) / 6))
            values = [10.0 ** e for e in range(lo, hi + 1, step)]
            if len(values) < 3:
                values = sorted({m * 10.0 ** e for e in range(lo - 1, hi + 1) for m in (1, 2, 5)})
            values = [v for v in values if self.lo * (1 - 1e-9) <= v <= self.hi * (1 + 1e-9)]
            return [(v, self.fmt(v)) for v in values]
        span = self.hi - self.lo
        raw = span / max(1, target)
        mag = 10 ** math.floor(math.log10(raw))
        step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
        first = math.ceil(self.lo / step - 1e-9) * step
        values = []
        v = first
        while v <= self.hi + step * 1e-9 and len(values) < 20:
            values.append(0.0 if abs(v) < step * 1e-9 else v)
            v += step
        return [(v, self.fmt(v)) for v in values]


class Chart:
    """One plot: axes, grid, title, and marks added in data coordinates."""

    def __init__(self, x: Axis, y: Axis, width: int = 460, height: int = 260, title: str = "",
                 xlabel: str = "", ylabel: str = "", margin=(58, 14, 40, 42)):
        self.x, self.y = x, y
        self.width, self.height = width, height
        self.title, self.xlabel, self.ylabel = title, xlabel, ylabel
        self.ml, self.mr, self.mt, self.mb = margin
        self.marks: list[str] = []
        self.overlay: list[str] = []
        self.legend: list[tuple[str, str, str]] = []   # (label, color, kind)
        self.notes: list[str] = []

    # coordinates
    @property
    def pw(self) -> float:
        return self.width - self.ml - self.mr

    @property
    def ph(self) -> float:
        return self.height - self.mt - self.mb

    def px(self, v):
        return self.ml + np.clip(self.x.frac(v), -0.05, 1.05) * self.pw

    def py(self, v):
        return self.mt + (1 - np.clip(self.y.frac(v), -0.05, 1.05)) * self.ph

    # marks
    def line(self, xs, ys, color: str, width: float = 1.6, dash: str | None = None, label: str | None = None,
             markers: bool = False) -> None:
        xs, ys = np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)
        ok = np.isfinite(xs) & np.isfinite(ys)
        if self.x.log:
            ok &= xs > 0
        if self.y.log:
            ok &= ys > 0
        xs, ys = xs[ok], ys[ok]
        if xs.size == 0:
            return
        pts = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(self.px(xs), self.py(ys)))
        extra = f' stroke-dasharray="{dash}"' if dash else ""
        self.marks.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="{width}"'
                          f' stroke-linejoin="round"{extra}/>')
        if markers:
            for a, b in zip(self.px(xs), self.py(ys)):
                self.marks.append(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3" fill="{color}"/>')
        if label:
            self.legend.append((label, color, "line" if not dash else "dash"))

    def area(self, xs, ys, color: str, opacity: float = 0.25) -> None:
        xs, ys = np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)
        ok = np.isfinite(xs) & np.isfinite(ys) & ((xs > 0) if self.x.log else True) & ((ys > 0) if self.y.log else True)
        xs, ys = xs[ok], ys[ok]
        if xs.size == 0:
            return
        base = self.py(self.y.lo)
        px, py = self.px(xs), self.py(ys)
        pts = f"{px[0]:.1f},{base:.1f} " + " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(px, py)) + f" {px[-1]:.1f},{base:.1f}"
        self.marks.append(f'<polygon points="{pts}" fill="{color}" fill-opacity="{opacity}" stroke="none"/>')

    def hline(self, y: float, color: str = "#666", dash: str = "4 3", label: str | None = None) -> None:
        if not (self.y.lo <= y <= self.y.hi):
            return
        yy = self.py(y)
        self.overlay.append(f'<line x1="{self.ml}" x2="{self.ml + self.pw:.1f}" y1="{yy:.1f}" y2="{yy:.1f}" '
                            f'stroke="{color}" stroke-width="1" stroke-dasharray="{dash}"/>')
        if label:
            self.overlay.append(f'<text x="{self.ml + self.pw - 3:.1f}" y="{yy - 3:.1f}" text-anchor="end" '
                                f'font-size="10" fill="{color}" {HALO}>{escape(label)}</text>')

    def vline(self, x: float, color: str = "#666", dash: str = "4 3", label: str | None = None,
              bottom: bool = False) -> None:
        xx = float(self.px(x))
        self.overlay.append(f'<line x1="{xx:.1f}" x2="{xx:.1f}" y1="{self.mt}" y2="{self.mt + self.ph:.1f}" '
                            f'stroke="{color}" stroke-width="1" stroke-dasharray="{dash}"/>')
        if label:
            anchor = "end" if xx > self.ml + self.pw * 0.7 else "start"
            dx = -3 if anchor == "end" else 3
            ty = self.mt + self.ph - 6 if bottom else self.mt + 11
            self.overlay.append(f'<text x="{xx + dx:.1f}" y="{ty:.1f}" text-anchor="{anchor}" '
                                f'font-size="10" fill="{color}" {HALO}>{escape(label)}</text>')

    def band(self, x0: float, x1: float, color: str, opacity: float = 0.12, label: str | None = None) -> None:
        a, b = float(self.px(x0)), float(self.px(x1))
        self.marks.insert(0, f'<rect x="{min(a, b):.1f}" y="{self.mt}" width="{abs(b - a):.1f}" height="{self.ph:.1f}" '
                             f'fill="{color}" fill-opacity="{opacity}"/>')
        if label:
            right = self.ml + self.pw - 3
            self.overlay.append(f'<text x="{right:.1f}" y="{self.mt + self.ph - 6:.1f}" text-anchor="end" '
                                f'font-size="10" fill="{color}" {HALO}>{escape(label)}</text>')

    def points(self, xs, ys, color, radius: float = 2.5, opacity: float = 0.8, label: str | None = None,
               marker: str = "circle", titles: list[str] | None = None) -> None:
        """`color` is one color or one per point."""
        xs, ys = np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)
        colors = [color] * xs.size if isinstance(color, str) else list(color)
        px, py = self.px(xs), self.py(ys)
        out = []
        for i, (a, b, c) in enumerate(zip(px, py, colors)):
            if not (math.isfinite(a) and math.isfinite(b)):
                continue
            tip = f"<title>{escape(titles[i])}</title>" if titles else ""
            if marker == "cross":
                r = radius
                out.append(f'<path d="M{a - r:.1f},{b - r:.1f}L{a + r:.1f},{b + r:.1f}M{a - r:.1f},{b + r:.1f}'
                           f'L{a + r:.1f},{b - r:.1f}" stroke="{c}" stroke-width="1" stroke-opacity="{opacity}">{tip}</path>')
            else:
                out.append(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="{radius}" fill="{c}" fill-opacity="{opacity}">{tip}</circle>')
        self.marks.append("".join(out))
        if label:
            self.legend.append((label, colors[0] if colors else "#000", marker))

    def density(self, xs, ys, color: str, bins: int = 60, label: str | None = None) -> None:
        """A 2-D histogram as shaded cells (for too many points to draw one by one)."""
        xs, ys = np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)
        fx, fy = np.clip(self.x.frac(xs), 0, 1 - 1e-9), np.clip(self.y.frac(ys), 0, 1 - 1e-9)
        grid, _, _ = np.histogram2d(fx, fy, bins=bins, range=[[0, 1], [0, 1]])
        peak = grid.max()
        if peak <= 0:
            return
        cw, ch = self.pw / bins, self.ph / bins
        out = []
        for i, j in zip(*np.nonzero(grid)):
            op = 0.15 + 0.85 * math.log1p(grid[i, j]) / math.log1p(peak)
            out.append(f'<rect x="{self.ml + i * cw:.1f}" y="{self.mt + (bins - 1 - j) * ch:.1f}" width="{cw + 0.3:.1f}" '
                       f'height="{ch + 0.3:.1f}" fill="{color}" fill-opacity="{op:.2f}"/>')
        self.marks.append("".join(out))
        if label:
            self.legend.append((label, color, "square"))

    def bars(self, centers, heights, color: str, width: float, label: str | None = None,
             titles: list[str] | None = None, base: float = 0.0) -> None:
        """Vertical bars centred on `centers`, `width` in data units."""
        out = []
        for i, (c, h) in enumerate(zip(centers, heights)):
            if h is None or not math.isfinite(h):
                continue
            x0, x1 = float(self.px(c - width / 2)), float(self.px(c + width / 2))
            y0, y1 = float(self.py(base)), float(self.py(h))
            tip = f"<title>{escape(titles[i])}</title>" if titles else ""
            out.append(f'<rect x="{x0:.1f}" y="{min(y0, y1):.1f}" width="{max(0.5, x1 - x0):.1f}" '
                       f'height="{max(0.5, abs(y1 - y0)):.1f}" fill="{color}">{tip}</rect>')
        self.marks.append("".join(out))
        if label:
            self.legend.append((label, color, "square"))

    def note(self, text: str) -> None:
        self.notes.append(text)

    # output
    def _axes(self) -> str:
        out = [f'<rect x="{self.ml}" y="{self.mt}" width="{self.pw:.1f}" height="{self.ph:.1f}" fill="#fff" '
               f'stroke="#bbb"/>']
        for v, text in self.x.ticks():
            xx = float(self.px(v))
            out.append(f'<line x1="{xx:.1f}" x2="{xx:.1f}" y1="{self.mt}" y2="{self.mt + self.ph:.1f}" stroke="#eee"/>')
            out.append(f'<text x="{xx:.1f}" y="{self.mt + self.ph + 13:.1f}" text-anchor="middle" font-size="10" '
                       f'fill="#444">{escape(text)}</text>')
        for v, text in self.y.ticks():
            yy = float(self.py(v))
            out.append(f'<line x1="{self.ml}" x2="{self.ml + self.pw:.1f}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="#eee"/>')
            out.append(f'<text x="{self.ml - 4}" y="{yy + 3.5:.1f}" text-anchor="end" font-size="10" '
                       f'fill="#444">{escape(text)}</text>')
        if self.xlabel:
            out.append(f'<text x="{self.ml + self.pw / 2:.1f}" y="{self.height - 8}" text-anchor="middle" '
                       f'font-size="11" fill="#222">{escape(self.xlabel)}</text>')
        if self.ylabel:
            cy = self.mt + self.ph / 2
            out.append(f'<text x="13" y="{cy:.1f}" text-anchor="middle" font-size="11" fill="#222" '
                       f'transform="rotate(-90 13 {cy:.1f})">{escape(self.ylabel)}</text>')
        if self.title:
            out.append(f'<text x="{self.ml}" y="16" font-size="12" font-weight="600" fill="#111">'
                       f'{escape(self.title)}</text>')
        return "".join(out)

    def _legend(self) -> str:
        if not self.legend:
            return ""
        out, x = [], self.ml + self.pw
        y = self.mt - 6   # in the band between the title and the plot, never over the data
        for label, color, kind in reversed(self.legend):
            width = int(5.6 * len(label)) + 24
            x -= width
            if kind in ("line", "dash"):
                dash = ' stroke-dasharray="4 3"' if kind == "dash" else ""
                out.append(f'<line x1="{x + 2}" x2="{x + 14}" y1="{y - 4}" y2="{y - 4}" stroke="{color}" '
                           f'stroke-width="2"{dash}/>')
            elif kind == "cross":
                out.append(f'<path d="M{x + 4},{y - 8}L{x + 12},{y}M{x + 4},{y}L{x + 12},{y - 8}" stroke="{color}"/>')
            else:
                out.append(f'<rect x="{x + 3}" y="{y - 9}" width="10" height="10" fill="{color}"/>')
            out.append(f'<text x="{x + 17}" y="{y}" font-size="10" fill="#222">{escape(label)}</text>')
        return "".join(out)

    def render(self, description: str = "") -> str:
        # Named after what it clips, so the same chart gets the same id and two different charts never
        # share one (an object address could be reused within a page once a chart is freed).
        shape = f"{self.ml},{self.mt},{self.pw:.1f},{self.ph:.1f}" + "".join(self.marks) + "".join(self.overlay)
        clip = "c" + hashlib.sha1(shape.encode()).hexdigest()[:12]
        notes = "".join(f'<text x="{self.ml + 4}" y="{self.mt + self.ph - 6 - 12 * i:.1f}" font-size="10" '
                        f'fill="#555">{escape(n)}</text>' for i, n in enumerate(self.notes))
        desc = f"<title>{escape(description or self.title)}</title>"
        return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {self.width} {self.height}" '
                f'width="{self.width}" height="{self.height}" role="img" style="{FONT}">{desc}'
                f'<defs><clipPath id="{clip}"><rect x="{self.ml}" y="{self.mt}" width="{self.pw:.1f}" '
                f'height="{self.ph:.1f}"/></clipPath></defs>'
                f'{self._axes()}<g clip-path="url(#{clip})">{"".join(self.marks)}{"".join(self.overlay)}</g>'
                f'{notes}{self._legend()}</svg>')


def log_samples(n: int, count: int = 400) -> np.ndarray:
    """Up to `count` distinct integer ranks 1..n, log-spaced (all of them when n is small)."""
    if n <= count:
        return np.arange(1, n + 1)
    return np.unique(np.round(np.logspace(0, math.log10(n), count)).astype(np.int64))


def ramp(values: np.ndarray, lo: str = "#c6dbef", hi: str = "#08306b") -> list[str]:
    """Colors from `lo` to `hi` for values in [0, 1]."""
    a = np.array([int(lo[i:i + 2], 16) for i in (1, 3, 5)], dtype=np.float64)
    b = np.array([int(hi[i:i + 2], 16) for i in (1, 3, 5)], dtype=np.float64)
    v = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float64)), 0, 1)[:, None]
    rgb = np.round(a + (b - a) * v).astype(int)
    return [f"#{r:02x}{g:02x}{bl:02x}" for r, g, bl in rgb]
