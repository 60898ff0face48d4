"""The report's charts, each an inline SVG string built from audit numbers."""

from __future__ import annotations

import math

import numpy as np

from ..analysis.audit import AuditResult, LayerReport, PairAccumulator
from ..analysis.compare import Comparison, Projection, joint_projection, rank_frequency
from ..analysis.diagnosis import thresholds
from .svg import MAX_POINTS, PALETTE, SEVERITY_COLORS, Axis, Chart, log_samples, ramp

A_COLOR, B_COLOR = PALETTE[0], PALETTE[1]
DEAD_COLOR = "#9e9e9e"
WIDE, NARROW = 500, 340
"""Chart widths: two wide charts or three narrow ones fill a row of the report."""


def usage_chart(report: LayerReport, width: int = WIDE, height: int = 250) -> str:
    """Rank-frequency of code usage (log-log), the uniform share, and the unused codes as a band."""
    counts = np.asarray(report.counts, dtype=np.float64)
    k = counts.size
    shares = rank_frequency(counts)
    used = int((counts > 0).sum())
    positive = shares[shares > 0]
    lo = min(positive.min() if positive.size else 1.0 / k, 1.0 / k) / 2
    chart = Chart(Axis(1, max(k, 2), log=True), Axis(lo, max(positive.max() if positive.size else 1, 1.0 / k) * 1.5, log=True),
                  width, height, f"Layer {report.layer}: code usage, most used first",
                  "rank of code", "share of frames")
    ranks = log_samples(used) if used else np.zeros(0, dtype=np.int64)
    if used:
        chart.area(ranks, shares[ranks - 1], A_COLOR, 0.15)
        chart.line(ranks, shares[ranks - 1], A_COLOR, label="usage")
    chart.hline(1.0 / k, "#555", label=f"uniform 1/K = {1.0 / k:.2g}")
    if used < k:
        chart.band(max(used, 1), k, SEVERITY_COLORS["collapse"], 0.10, f"{k - used} unused")
    top, share = thresholds.top_share(counts)
    chart.vline(top, "#777", "2 3", f"top 1%: {share:.0%} of frames", bottom=True)
    return chart.render(f"Layer {report.layer}: {used} of {k} codes used; perplexity {report.perplexity:.1f}")


def centroid_chart(report: LayerReport, codebook, width: int = WIDE, height: int = 320) -> str:
    """Centroids in a 2-D PCA fitted on the used codes: used codes shaded by log usage, unused as crosses."""
    counts = np.asarray(report.counts, dtype=np.float64)
    table = np.asarray(codebook.detach().cpu() if hasattr(codebook, "detach") else codebook, dtype=np.float64)
    used = np.flatnonzero(counts > 0) if counts.size == table.shape[0] else np.arange(table.shape[0])
    proj = joint_projection(table, table[:0], report.layer, used, np.zeros(0, dtype=np.int64))
    xy = proj.a
    dead = np.setdiff1d(np.arange(table.shape[0]), used)
    focus = xy[used] if used.size >= 3 else xy
    lo, hi = np.percentile(focus, 0.5, axis=0), np.percentile(focus, 99.5, axis=0)
    span = np.maximum(hi - lo, 1e-9)
    lo, hi = lo - 0.08 * span, hi + 0.08 * span
    if dead.size:
        # Show the unused codes too, unless they lie so far out that the used ones would shrink to a dot.
        dlo, dhi = xy[dead].min(axis=0), xy[dead].max(axis=0)
        lo = np.where(dlo > lo - 1.5 * span, np.minimum(lo, dlo - 0.05 * span), lo)
        hi = np.where(dhi < hi + 1.5 * span, np.maximum(hi, dhi + 0.05 * span), hi)
    chart = Chart(Axis(lo[0], hi[0]), Axis(lo[1], hi[1]), width, height,
                  f"Layer {report.layer}: centroids, PCA of the used codes",
                  f"PC1 ({proj.explained[0]:.0%} of variance)", f"PC2 ({proj.explained[1]:.0%})")
    if dead.size:
        outside = int(((xy[dead] < lo) | (xy[dead] > hi)).any(axis=1).sum())
        if dead.size > MAX_POINTS:
            chart.density(xy[dead, 0], xy[dead, 1], DEAD_COLOR, label="unused")
        else:
            chart.points(xy[dead, 0], xy[dead, 1], DEAD_COLOR, 2.5, 0.7, "unused", marker="cross")
        if outside:
            chart.note(f"{outside} unused codes lie outside this view")
    if used.size:
        if used.size > MAX_POINTS:
            chart.density(xy[used, 0], xy[used, 1], A_COLOR, label="used")
        else:
            level = np.log1p(counts[used]) / math.log1p(counts[used].max())
            order = np.argsort(level)
            titles = [f"code {int(c)}: {int(counts[c])} frames" for c in used[order]]
            chart.points(xy[used[order], 0], xy[used[order], 1], ramp(level[order]), 3.0, 0.9, None, titles=titles)
            chart.legend.append(("used (darker: more frames)", "#08306b", "circle"))
    return chart.render(f"Layer {report.layer}: {used.size} used and {dead.size} unused centroids in 2-D PCA")


def layers_usage_chart(result: AuditResult, width: int = NARROW, height: int = 240) -> str:
    """Utilization and perplexity / uniform reference per layer, against the rule thresholds."""
    n = len(result.layers)
    chart = Chart(Axis(-0.6, n - 0.4), Axis(0, 1.05), width, height, "Usage per layer (1 = uniform codebook)",
                  "layer", "ratio to uniform")
    chart.x.ticks = lambda target=5: [(float(i), str(i)) for i in range(n)]
    util, ppl = [], []
    for r in result.layers:
        frames = int(sum(r.counts))
        u_ref, p_ref = thresholds.uniform_reference(r.codebook_size, frames) if frames else (1.0, 1.0)
        util.append(r.utilization / u_ref if u_ref else 0.0)
        ppl.append(r.perplexity / p_ref if p_ref else 0.0)
    xs = np.arange(n)
    chart.bars(xs - 0.18, util, PALETTE[0], 0.34, "utilization", [f"layer {i}: {v:.2f}" for i, v in enumerate(util)])
    chart.bars(xs + 0.18, ppl, PALETTE[2], 0.34, "perplexity", [f"layer {i}: {v:.2f}" for i, v in enumerate(ppl)])
    chart.hline(thresholds.UTIL_WARN, SEVERITY_COLORS["warning"], label=f"utilization warning {thresholds.UTIL_WARN}")
    chart.hline(thresholds.UTIL_COLLAPSE, SEVERITY_COLORS["collapse"], label=f"collapse {thresholds.UTIL_COLLAPSE}")
    chart.hline(thresholds.PPL_COLLAPSE, SEVERITY_COLORS["collapse"], "1 3",
                label=f"perplexity collapse {thresholds.PPL_COLLAPSE}")
    return chart.render("Utilization and perplexity per layer, relative to a uniform codebook")


def snr_chart(result: AuditResult, width: int = NARROW, height: int = 240) -> str:
    """SNR after each layer (line) and each layer's gain (bars)."""
    n = len(result.layers)
    snr = [r.snr_db if r.snr_db is not None and math.isfinite(r.snr_db) else float("nan") for r in result.layers]
    gains, prev = [], 0.0
    for s in snr:
        gains.append(s - prev if math.isfinite(s) else float("nan"))
        prev = s if math.isfinite(s) else prev
    finite = [v for v in snr + gains if math.isfinite(v)] or [0.0]
    chart = Chart(Axis(-0.6, n - 0.4), Axis(min(0.0, min(finite)) * 1.1, max(finite) * 1.15 + 0.1), width, height,
                  "SNR and gain per layer", "layer", "dB")
    chart.x.ticks = lambda target=5: [(float(i), str(i)) for i in range(n)]
    xs = np.arange(n)
    colors = []
    for i, g in enumerate(gains):
        k = result.layers[i].codebook_size
        dim = int(result.quantizer.get("dim", 1)) or 1
        budget = thresholds.DB_PER_BIT * math.log2(k) / dim if k > 1 else 0
        colors.append(SEVERITY_COLORS["warning"] if (math.isfinite(g) and g < thresholds.STAGE_GAIN_FRACTION * budget)
                      else "#90caf9")
    for i in range(n):
        chart.bars([xs[i]], [gains[i]], colors[i], 0.5, None, [f"layer {i}: gain {gains[i]:.2f} dB"])
    chart.legend.append(("gain of the layer", "#90caf9", "square"))
    chart.line(xs, snr, PALETTE[0], 2, label="SNR after the layer", markers=True)
    return chart.render("SNR in dB after each layer, and the gain each layer adds")


def redundancy_chart(pairs: PairAccumulator, n_layers: int, width: int = NARROW, height: int = 220) -> str:
    n = min(len(pairs.pairs), n_layers - 1)
    values, floors = [], []
    for i in range(n):
        mi = pairs.mutual_information(i)
        values.append(mi["redundancy"])
        floors.append(mi["resolution"])
    chart = Chart(Axis(-0.6, max(n, 1) - 0.4), Axis(0, 1.05), width, height,
                  "Redundancy between consecutive layers", "layer pair", "share of H(next layer)")
    chart.x.ticks = lambda target=5: [(float(i), f"{i}-{i + 1}") for i in range(n)]
    xs = np.arange(n)
    chart.bars(xs - 0.18, values, PALETTE[3], 0.34, "redundancy (above chance)",
               [f"layers {i}-{i + 1}: {v:.2f}" for i, v in enumerate(values)])
    chart.bars(xs + 0.18, floors, "#bdbdbd", 0.34, "chance floor / H",
               [f"layers {i}-{i + 1}: floor {v:.2f}" for i, v in enumerate(floors)])
    chart.hline(thresholds.REDUNDANCY_WARN, SEVERITY_COLORS["warning"], label=f"warning {thresholds.REDUNDANCY_WARN}")
    return chart.render("Mutual information between the codes of consecutive layers, scaled to chance and H")


# --- comparison -------------------------------------------------------------------------------------------
def compare_usage_chart(comparison: Comparison, layer: int, width: int = NARROW, height: int = 250) -> str:
    """Both usage curves (share of frames by rank) on one axis."""
    a, b = rank_frequency(comparison.usage_a[layer]), rank_frequency(comparison.usage_b[layer])
    k = max(a.size, b.size, 2)
    positive = np.concatenate([a[a > 0], b[b > 0]])
    lo = min(positive.min() if positive.size else 1.0 / k, 1.0 / k) / 2
    chart = Chart(Axis(1, k, log=True), Axis(lo, (positive.max() if positive.size else 1) * 1.5, log=True),
                  width, height, f"Layer {layer}: usage of A and B", "rank of code", "share of frames")
    for shares, color, label in ((a, A_COLOR, "A"), (b, B_COLOR, "B")):
        used = int((shares > 0).sum())
        if used:
            ranks = log_samples(used)
            chart.line(ranks, shares[ranks - 1], color, label=f"{label}: {used} used")
    chart.hline(1.0 / k, "#555", label="uniform")
    return chart.render(f"Layer {layer}: code usage of A and B by rank")


def compare_projection_chart(comparison: Comparison, layer: int, width: int = NARROW, height: int = 320) -> str:
    proj: Projection | None = comparison.projections[layer]
    if proj is None:
        return ""
    used_a = comparison.usage_a[layer] > 0
    used_b = comparison.usage_b[layer] > 0
    focus = np.concatenate([proj.a[used_a] if used_a.size == proj.a.shape[0] else proj.a,
                            proj.b[used_b] if used_b.size == proj.b.shape[0] else proj.b])
    if focus.shape[0] < 3:
        focus = np.concatenate([proj.a, proj.b])
    lo, hi = np.percentile(focus, 0.5, axis=0), np.percentile(focus, 99.5, axis=0)
    span = np.maximum(hi - lo, 1e-9)
    lo, hi = lo - 0.08 * span, hi + 0.08 * span
    chart = Chart(Axis(lo[0], hi[0]), Axis(lo[1], hi[1]), width, height,
                  f"Layer {layer}: centroids, one PCA for both",
                  f"PC1 ({proj.explained[0]:.0%})", f"PC2 ({proj.explained[1]:.0%})")
    for xy, used, color, label in ((proj.a, used_a, A_COLOR, "A"), (proj.b, used_b, B_COLOR, "B")):
        mask = used if used.size == xy.shape[0] else np.ones(xy.shape[0], dtype=bool)
        if xy.shape[0] > MAX_POINTS:
            chart.density(xy[mask, 0], xy[mask, 1], color, label=f"{label} used")
        else:
            chart.points(xy[mask, 0], xy[mask, 1], color, 2.6, 0.65, f"{label} used")
            chart.points(xy[~mask, 0], xy[~mask, 1], color, 2.0, 0.35, None, marker="cross")
    chart.legend.append(("unused", "#888", "cross"))
    return chart.render(f"Layer {layer}: centroids of A and B in a joint 2-D PCA")


def match_chart(comparison: Comparison, layer: int, width: int = NARROW, height: int = 220) -> str:
    match = comparison.matches[layer]
    if match is None:
        return ""
    rel = match.relative
    rel = rel[np.isfinite(rel)]
    if rel.size == 0:
        return ""
    top = max(2.0, float(np.percentile(rel, 99)) * 1.05)
    edges = np.linspace(0, top, 41)
    hist, _ = np.histogram(np.clip(rel, 0, top), bins=edges)
    chart = Chart(Axis(0, top), Axis(0, max(1, hist.max()) * 1.1), width, height,
                  f"Layer {layer}: A's codes to nearest in B",
                  "distance / A's median code spacing", "codes of A")
    centers = (edges[:-1] + edges[1:]) / 2
    chart.bars(centers, hist, A_COLOR, (edges[1] - edges[0]) * 0.9)
    from ..analysis.compare import CLOSE_MATCH
    chart.vline(CLOSE_MATCH, "#2e7d32", label=f"close match < {CLOSE_MATCH}")
    return chart.render(f"Layer {layer}: nearest-code distances from A to B")
