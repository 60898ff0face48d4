"""A self-contained HTML report of an audit: verdicts with evidence and remedies, tables, inline SVG charts.

One file, no external resources (no scripts, fonts, stylesheets or images to fetch), so it can be
attached to an issue or a review as it is. Charts are inline SVG written from numpy (see `svg.py` for
why), which also keeps the report writable on a CI machine without a display or Qt.

    write_report("report.html", outcome)                 # an AuditOutcome of rvq_viewer.pipeline
    write_report("report.html", outcome, compared)       # with a CompareOutcome of it and another audit
"""

from __future__ import annotations

import datetime as _dt
import math
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Generator

from ..analysis.audit import AuditResult, PairAccumulator
from ..analysis.compare import Comparison
from ..analysis.diagnosis import Verdict, thresholds, worst
from ..io.outputs import atomic_write_text
from ..quant import Quantizer
from ..version import __version__
from . import charts
from .family import family_section
from .svg import SEVERITY_COLORS

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#1b1b1b;margin:0;background:#f6f7f9}
main{max-width:1120px;margin:0 auto;padding:20px 28px 40px;background:#fff;min-height:100vh}
h1{font-size:22px;margin:6px 0 2px}h2{font-size:17px;margin:28px 0 10px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:14px;margin:18px 0 6px}
.meta{color:#555;font-size:12.5px;margin:0 0 12px}.meta code{font-size:12px}
.summary{border-left:6px solid;padding:10px 14px;margin:12px 0 6px;background:#fafafa}
.summary .t{font-size:18px;font-weight:650}.summary p{margin:6px 0 0;font-size:13.5px}
.badge{display:inline-block;color:#fff;border-radius:3px;padding:1px 6px;font-size:11px;font-weight:600;
 text-transform:uppercase;letter-spacing:.03em;vertical-align:1px}
table{border-collapse:collapse;font-size:12.5px;margin:6px 0}
th,td{padding:4px 8px;border-bottom:1px solid #e6e6e6;text-align:left;vertical-align:top}
th{background:#f1f3f5;font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.verdict{border:1px solid #e3e3e3;border-left:5px solid;border-radius:3px;padding:8px 12px;margin:8px 0}
.verdict .h{font-weight:600;font-size:14px}.verdict .w{color:#666;font-size:12px;margin-left:6px}
.verdict p{margin:5px 0;font-size:13px}.vt{width:100%;margin:4px 0}.vt td{font-size:12.5px;border-bottom:1px solid #f0f0f0}.vt td:first-child{width:28px}.vt td:nth-child(2){width:70px}.verdict .ev{font-size:11.5px;color:#444}
.ev span{display:inline-block;background:#f1f3f5;border-radius:3px;padding:0 5px;margin:2px 4px 0 0}
.ok{font-size:12.5px;color:#2e7d32;margin:3px 0}
.grid{display:flex;flex-wrap:wrap;gap:10px 18px;align-items:flex-start}.grid svg{max-width:100%;height:auto}
.layer{margin-top:8px}.bl{margin:4px 0;padding-left:20px;font-size:13px}.muted{color:#666;font-size:12px}
.rules td:nth-child(3){max-width:720px}
@media print{body{background:#fff}main{padding:0}.verdict,.grid svg{break-inside:avoid}}
"""

SEVERITY_LABEL = {"collapse": "collapse", "warning": "warning", "info": "info", "ok": "ok"}


def _badge(severity: str) -> str:
    return f'<span class="badge" style="background:{SEVERITY_COLORS[severity]}">{SEVERITY_LABEL[severity]}</span>'


def _num(v, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return "inf" if v > 0 else ("-inf" if v < 0 else "n/a")
        if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
            return f"{v:.3g}"
        return f"{v:.{digits}g}"
    if isinstance(v, (list, tuple)):
        shown = ", ".join(_num(x, 3) if not isinstance(x, (list, tuple)) else "(" + ", ".join(_num(y, 3) for y in x) + ")"
                          for x in v[:8])
        return f"[{shown}{', ...' if len(v) > 8 else ''}]"
    return str(v)


# Evidence keys that only repeat a rule's threshold (the message states it): kept in the JSON, not shown.
_THRESHOLD_KEYS = {"warn_below", "collapse_below", "warn_at", "collapse_at", "info_at", "majority_at", "margin",
                   "fraction", "min_frames_per_code"}


def _evidence(evidence: dict) -> str:
    return "".join(f"<span>{escape(str(k))} = {escape(_num(v))}</span>" for k, v in evidence.items()
                   if k not in _THRESHOLD_KEYS)


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:] if text else text


def _verdict_group(group: list[Verdict]) -> str:
    """One block per rule: the layers it holds for, each with its message and evidence, then the
    cause and remedy once (they are the same sentence for every layer of a rule)."""
    first = max(group, key=lambda v: v.rank)
    color = SEVERITY_COLORS[first.severity]
    layers = [v.layer for v in group if v.layer is not None]
    where = "whole quantizer" if not layers else f"layer{'s' if len(layers) > 1 else ''} {', '.join(map(str, layers))}"
    title = thresholds.RULE_TITLES.get(first.id, first.title) if len(group) > 1 else first.title
    rows = []
    for v in group:
        label = "all" if v.layer is None else str(v.layer)
        rows.append(f'<tr id="v-{escape(v.key)}"><td class="n">{escape(label)}</td><td>{_badge(v.severity)}</td>'
                    f'<td>{escape(v.message)}<div class="ev">{_evidence(v.evidence)}</div></td></tr>')
    cause = f"<p><b>Likely cause:</b> {escape(_capital(first.cause))}</p>" if first.cause else ""
    remedy = f"<p><b>Try:</b> {escape(_capital(first.remedy))}</p>" if first.remedy else ""
    return (f'<div class="verdict" style="border-left-color:{color}">'
            f'<div>{_badge(first.severity)} <span class="h">{escape(title)}</span>'
            f'<span class="w">{escape(where)} &middot; rule <code>{escape(first.id)}</code> &middot; '
            f'evidence in the {escape(first.view.replace("_", " "))} view</span></div>'
            f'<table class="vt">{"".join(rows)}</table>{cause}{remedy}</div>')


def _verdicts_section(verdicts: list[Verdict]) -> str:
    summary = next((v for v in verdicts if v.id == "summary"), None)
    parts = []
    if summary is not None:
        color = SEVERITY_COLORS[summary.severity]
        remedy = f"<p><b>Try:</b> {escape(_capital(summary.remedy))}</p>" if summary.severity != "ok" else ""
        parts.append(f'<div class="summary" style="border-color:{color}"><div class="t" style="color:{color}">'
                     f'{escape(summary.title)}</div><p>{escape(summary.message)}</p>{remedy}</div>')
    groups: dict[str, list[Verdict]] = {}
    for v in verdicts:
        if v.id != "summary" and v.severity != "ok":
            groups.setdefault(v.id, []).append(v)
    order = list(thresholds.RULE_TITLES)
    ordered = sorted(groups.values(), key=lambda g: (-max(v.rank for v in g),
                                                     order.index(g[0].id) if g[0].id in order else len(order)))
    parts.append("<h2>Verdicts</h2>")
    parts.extend(_verdict_group(sorted(g, key=lambda v: -1 if v.layer is None else v.layer)) for g in ordered)
    oks = [v for v in verdicts if v.severity == "ok" and v.id != "summary"]
    if oks:
        parts.append("".join(f'<div class="ok">&#10003; {escape(v.title)}: {escape(v.message)}</div>' for v in oks))
    if not groups and not oks:
        parts.append('<p class="muted">No verdicts.</p>')
    return "".join(parts)


def _metrics_table(result: AuditResult) -> str:
    head = ("layer", "used / K", "utilization", "perplexity", "entropy", "unused", "EMA-dead", "residual mean",
            "rel. error", "SNR dB")
    rows = ["<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    for r in result.layers:
        ema = "-" if r.ema_dead_codes is None else str(len(r.ema_dead_codes))
        snr = "inf" if r.snr_db is None else f"{r.snr_db:.2f}"
        cells = (str(r.layer), f"{r.used} / {r.codebook_size}", f"{r.utilization:.1%}", f"{r.perplexity:.1f}",
                 f"{r.entropy:.3f}", str(len(r.dead_codes)), ema, _num(r.residual_norm.get("mean")),
                 _num(r.rel_error), snr)
        rows.append("<tr>" + "".join(f'<td class="n">{escape(c)}</td>' for c in cells) + "</tr>")
    rows.append("</table>")
    return "".join(rows)


def _comparison_section(comparison: Comparison, verdicts_b: list[Verdict] | None) -> str:
    kind = {"features": "one quantizer on two feature sets", "quantizers": "two quantizers",
            "audits": "two audits"}[comparison.kind]
    out = [f"<h2>Comparison: {escape(kind)}</h2>",
           f'<p class="meta"><b>A</b> = {escape(comparison.label_a)} ({comparison.frames_a} frames) &nbsp; '
           f'<b>B</b> = {escape(comparison.label_b)} ({comparison.frames_b} frames)</p>']
    if verdicts_b is not None:
        summary = next((v for v in verdicts_b if v.id == "summary"), None)
        if summary is not None:
            out.append(f"<p>{_badge(summary.severity)} <b>B:</b> {escape(summary.title)}. "
                       f"{escape(summary.message)}</p>")
        groups: dict[str, list[Verdict]] = {}
        for v in verdicts_b:
            if v.id != "summary" and v.rank >= 2:
                groups.setdefault(v.id, []).append(v)
        items = []
        for rule, group in groups.items():
            top = max(group, key=lambda v: v.rank)
            layers = [str(v.layer) for v in group if v.layer is not None]
            where = f"layers {', '.join(layers)}" if len(layers) > 1 else (f"layer {layers[0]}" if layers else "all")
            name = thresholds.RULE_TITLES.get(rule, top.title) if len(group) > 1 else top.title
            items.append(f"<li>{_badge(top.severity)} {escape(name)} ({escape(where)})</li>")
        if items:
            out.append('<ul class="bl">' + "".join(items) + "</ul>")
    head = ["layer"] + [f"{m} A / B / &Delta;" for m in ("utilization", "perplexity", "unused", "SNR dB")] + \
        ["A&rarr;B close matches", "median distance"]
    rows = ["<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    for d, m in zip(comparison.layers, comparison.matches):
        def triple(key, fmt):
            a, b, delta = d.a[key], d.b[key], d.delta[key]
            f = lambda v: "-" if v is None else fmt(v)  # noqa: E731
            sign = "" if delta is None or delta < 0 else "+"
            return f"{f(a)} / {f(b)} / {sign}{f(delta)}"
        summary = m.summary() if m is not None else None
        cells = [str(d.layer), triple("utilization", lambda v: f"{v:.1%}"), triple("perplexity", lambda v: f"{v:.1f}"),
                 triple("dead", lambda v: f"{v:d}"), triple("snr_db", lambda v: f"{v:.2f}"),
                 "-" if summary is None else f"{summary['close_fraction']:.0%}",
                 "-" if summary is None else f"{_num(summary['median_distance'], 3)} "
                                             f"({_num(summary['median_relative'], 3)} x spacing)"]
        rows.append("<tr>" + "".join(f'<td class="n">{escape(c)}</td>' for c in cells) + "</tr>")
    rows.append("</table>")
    out.append("".join(rows))
    for note in comparison.notes:
        out.append(f'<p class="muted">{escape(note)}</p>')
    for i in range(len(comparison.layers)):
        out.append(f'<h3>Layer {i}</h3><div class="grid">{charts.compare_usage_chart(comparison, i)}'
                   f'{charts.compare_projection_chart(comparison, i)}{charts.match_chart(comparison, i)}</div>')
    return "".join(out)


def _rules_section() -> str:
    rows = ["<table class='rules'><tr><th>threshold</th><th>value</th><th>where it comes from, how it scales with K</th></tr>"]
    for name, value, doc in thresholds.threshold_table():
        rows.append(f"<tr><td><code>{escape(name)}</code></td><td class='n'>{escape(_num(float(value)))}</td>"
                    f"<td>{escape(doc)}</td></tr>")
    rows.append("</table>")
    return "<h2>Rules and thresholds</h2>" + "".join(rows)


@dataclass(frozen=True)
class ReportStep:
    """Progress of a report being written: `done` of `total` parts, the last one `what`."""

    done: int
    total: int
    what: str


def render_html(result: AuditResult, quantizer: Quantizer | None, verdicts: list[Verdict],
                comparison: Comparison | None = None, pairs: PairAccumulator | None = None,
                title: str | None = None, verdicts_b: list[Verdict] | None = None) -> str:
    """The report as one HTML string."""
    steps = iter_render_html(result, quantizer, verdicts, comparison, pairs, title, verdicts_b)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


def iter_render_html(result: AuditResult, quantizer: Quantizer | None, verdicts: list[Verdict],
                     comparison: Comparison | None = None, pairs: PairAccumulator | None = None,
                     title: str | None = None, verdicts_b: list[Verdict] | None = None
                     ) -> Generator[ReportStep, None, str]:
    """The report, one part at a time: yields a `ReportStep` after each part (the overview, each layer's
    charts, the comparison), so a caller can show progress or stop between parts; returns the HTML."""
    total = 1 + len(result.layers) + (comparison is not None)
    q = result.quantizer
    source = quantizer.source if quantizer is not None and getattr(quantizer, "source", "") else ""
    name = title or (Path(source).name if source else "quantizer")
    sources = result.sources
    shown_sources = ", ".join(escape(s) for s in sources[:5]) + (f" and {len(sources) - 5} more" if len(sources) > 5 else "")
    now = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    head = (f"<h1>Codebook health: {escape(name)}</h1>"
            f'<p class="meta">{escape(str(q.get("format", "")))} &middot; n_q = {q.get("n_q")} &middot; '
            f'K = {q.get("codebook_size")} &middot; D = {q.get("dim")} &middot; {result.frames} frames'
            + (f" from {shown_sources}" if shown_sources else "")
            + ("" if result.complete else " &middot; <b>partial audit</b>")
            + (f"<br>checkpoint <code>{escape(source)}</code>" if source else "")
            + (f"<br>EMA dead-code rule: {escape(result.ema_dead_rule)}" if result.ema_dead_rule else "")
            + f"<br>rvq-viewer {escape(__version__)} &middot; {escape(now)}</p>")

    body = [head, _verdicts_section(verdicts), "<h2>Per-layer metrics</h2>", _metrics_table(result)]
    overview = [charts.layers_usage_chart(result), charts.snr_chart(result)]
    if pairs is not None and len(result.layers) > 1:
        overview.append(charts.redundancy_chart(pairs, len(result.layers)))
    body.append('<h2>Overview</h2><div class="grid">' + "".join(overview) + "</div>")
    yield ReportStep(1, total, "overview")
    body.append("<h2>Layers</h2>")
    for report in result.layers:
        flagged = [v for v in verdicts if v.layer == report.layer and v.rank >= 2]
        prefix = f"Layer {report.layer}: "
        tags = " ".join(f'<a href="#v-{escape(v.key)}">{_badge(v.severity)}</a> {escape(v.title.removeprefix(prefix))}'
                        for v in flagged) \
            or f'{_badge("ok")} no warning'
        plots = charts.usage_chart(report)
        if quantizer is not None and report.layer < quantizer.n_q:
            plots += charts.centroid_chart(report, quantizer.display_codebook(report.layer))
        plots += family_section(report)
        body.append(f'<div class="layer"><h3>Layer {report.layer}</h3><p class="muted">{tags}</p>'
                    f'<div class="grid">{plots}</div></div>')
        yield ReportStep(2 + report.layer, total, f"layer {report.layer}")
    if comparison is not None:
        body.append(_comparison_section(comparison, verdicts_b))
        yield ReportStep(total, total, "comparison")
    body.append(_rules_section())
    page_title = f"rvq-viewer report: {name} ({worst(verdicts)})"
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<meta name=\"generator\" content=\"rvq-viewer {escape(__version__)}\">"
            f"<title>{escape(page_title)}</title><style>{CSS}</style></head>"
            f"<body><main>{''.join(body)}</main></body></html>\n")


def write_html(path: str | Path, result: AuditResult, quantizer: Quantizer | None, verdicts: list[Verdict],
               comparison: Comparison | None = None, pairs: PairAccumulator | None = None,
               title: str | None = None, verdicts_b: list[Verdict] | None = None) -> Path:
    """Write the report atomically (a crash never leaves half a file) and return its path."""
    html = render_html(result, quantizer, verdicts, comparison, pairs, title, verdicts_b)
    atomic_write_text(path, html)
    return Path(path)


def write_report(path: str | Path, outcome, compared=None, title: str | None = None) -> Path:
    """The report of a pipeline `AuditOutcome` (with the pair statistics its audit gathered) and, when
    given, of a `CompareOutcome` whose side A it is."""
    steps = iter_write_report(path, outcome, compared, title)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


def iter_write_report(path: str | Path, outcome, compared=None, title: str | None = None
                      ) -> Generator[ReportStep, None, Path]:
    """`write_report`, yielding a `ReportStep` after each part; nothing is written until the last one
    (a caller that stops in between leaves no file)."""
    if outcome.verdicts is None:
        raise ValueError("no verdicts to report: the audit did not finish or its diagnosis failed")
    comparison = verdicts_b = None
    if compared is not None:
        comparison, verdicts_b = compared.comparison, compared.b.verdicts
    html = yield from iter_render_html(outcome.result, outcome.quantizer, outcome.verdicts, comparison,
                                       outcome.result.pairs, title, verdicts_b)
    atomic_write_text(path, html)
    return Path(path)


__all__ = ["ReportStep", "iter_render_html", "iter_write_report", "render_html", "write_html", "write_report"]
