"""The report's family section of a layer: per-table usage, FSQ level histograms, LFQ bit balance.

Drawn from the layer's `family` numbers (the same ones the JSON and the app show), as inline SVG."""

from __future__ import annotations

from html import escape

import numpy as np

from ..analysis.audit import LayerReport
from ..analysis.diagnosis import thresholds
from .svg import PALETTE, SEVERITY_COLORS, Axis, Chart

WIDTH = 500


def _cell(value, digits: int = 3) -> str:
    return f'<td class="n">{escape(value if isinstance(value, str) else f"{value:.{digits}g}")}</td>'


def tables_table(report: LayerReport) -> str:
    rows = ["<table><tr><th>table</th><th>used / K</th><th>utilization</th><th>perplexity</th><th>entropy</th></tr>"]
    for t in report.family.get("tables", []):
        used, share = f"{t['used']} / {t['codes']}", f"{t['utilization']:.1%}"
        rows.append(f"<tr><td>{escape(t['name'])}</td>{_cell(used)}{_cell(share)}{_cell(t['perplexity'], 4)}"
                    f"{_cell(t['entropy'])}</tr>")
    rows.append("</table>")
    return "".join(rows)


def levels_chart(report: LayerReport, grid: dict, name: str = "") -> str:
    """Each dimension's level histogram, side by side: dimension j's L_j bars share the slot j."""
    dims = grid["dims"]
    top = max((max(d["shares"]) for d in dims), default=1.0) or 1.0
    chart = Chart(Axis(-0.6, len(dims) - 0.4), Axis(0, top * 1.1), WIDTH, 230,
                  f"Layer {report.layer}{name}: frames per level of each FSQ dimension", "dimension (its levels left to right)",
                  "share of frames")
    chart.x.ticks = lambda target=5: [(float(j), str(j)) for j in range(len(dims))]
    for j, d in enumerate(dims):
        width = 0.8 / d["levels"]
        centers = j - 0.4 + width * (np.arange(d["levels"]) + 0.5)
        low = d["bits"] < thresholds.FSQ_DIM_BITS_WARN * d["max_bits"] or d["levels_used"] <= 1
        color = SEVERITY_COLORS["collapse" if d["levels_used"] <= 1 else "warning"] if low else PALETTE[0]
        chart.bars(centers, d["shares"], color, width * 0.9, None,
                   [f"dim {j} level {i}: {s:.1%}" for i, s in enumerate(d["shares"])])
    chart.legend.append(("levels of a dimension", PALETTE[0], "square"))
    return chart.render(f"{grid['cells_used']} of {grid['cells']} grid cells used; per dimension bits "
                        + ", ".join(f"{d['bits']:.1f}/{d['max_bits']:.1f}" for d in dims))


def grid_table(grid: dict) -> str:
    rows = ["<table><tr><th>dimension</th><th>levels used</th><th>bits / log2 L</th><th>at edge levels</th></tr>"]
    for d in grid["dims"]:
        used, bits, edge = f"{d['levels_used']} / {d['levels']}", f"{d['bits']:.2f} / {d['max_bits']:.2f}", \
            f"{d['edge_share']:.0%}"
        rows.append(f"<tr><td>{d['dim']}</td>{_cell(used)}{_cell(bits)}{_cell(edge)}</tr>")
    rows.append("</table>")
    return "".join(rows)


def bits_chart(report: LayerReport, stats: dict, name: str = "") -> str:
    """Share of frames with each bit set; dead bits red, unbalanced ones amber, balanced at 0.5."""
    n = stats["bits"]
    chart = Chart(Axis(-0.6, n - 0.4), Axis(0, 1.05), WIDTH, 230,
                  f"Layer {report.layer}{name}: share of frames with each LFQ bit set", "bit (dimension)", "share of ones")
    chart.x.ticks = lambda target=5: [(float(j), str(j)) for j in range(0, n, max(1, n // 12))]
    for b, (ones, h) in enumerate(zip(stats["ones"], stats["entropy"])):
        color = (SEVERITY_COLORS["collapse"] if b in stats["dead"] else
                 SEVERITY_COLORS["warning"] if h < thresholds.LFQ_BIT_ENTROPY_WARN else PALETTE[0])
        chart.bars([b], [ones], color, 0.7, None, [f"bit {b}: {ones:.1%} ones, {h:.2f} bits"])
    chart.hline(0.5, "#555", label="balanced")
    pair = stats["most_correlated"]
    if pair:
        chart.note(f"max |corr| {stats['max_abs_correlation']:.2f} (bits {pair[0]}, {pair[1]}); code entropy "
                   f"{stats['code_entropy']:.1f} of {stats['bit_entropy_sum']:.1f} bits summed over bits")
    return chart.render(f"dead bits: {', '.join(map(str, stats['dead'])) or 'none'}")


def family_section(report: LayerReport) -> str:
    """HTML for one layer's family numbers ('' when it has none)."""
    section = report.family or {}
    parts = []
    tables = section.get("tables")
    names = [f" ({t['name']})" for t in tables] if tables else [""]
    if tables:
        parts.append(tables_table(report))
    for t, grid in enumerate(section.get("grids", [])):
        parts.append(levels_chart(report, grid, names[t] if t < len(names) else "") + grid_table(grid))
    for t, stats in enumerate(section.get("bit_stats", [])):
        parts.append(bits_chart(report, stats, names[t] if t < len(names) else ""))
    return "".join(parts)
