"""The usage rules: unused codes, low perplexity, a few codes taking most frames. Family- and table-aware.

Each rule compares a table's counts with a uniform table of the same K on the same frames
(`thresholds.uniform_reference`), so it scales with K, a grid's prod(levels) or an LFQ's 2^d alike. What
differs by family is the words and the likely causes: an FSQ cell or an LFQ sign pattern is never
"EMA-dead", it is a grid cell or a pattern the projected inputs do not reach. A layer with several tables
(heads, groups) is judged table by table and never as one pooled count (vector-quantize-pytorch #109):
each rule gives one verdict for the layer, the worst table's, listing every table it holds for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..audit import LayerReport
from ..audit.family import split_tables
from ..audit.stats import usage_metrics
from .thresholds import (EMA_DECAY, EXPIRY, FSQ_LEVELS, FSQ_SCALE, KMEANS, LFQ_BITS, LFQ_ENTROPY, PPL_COLLAPSE,
                         PPL_WARN, SIMVQ_TRANSFORM, TOP_SHARE_COLLAPSE, TOP_SHARE_WARN_FACTOR, UTIL_COLLAPSE,
                         UTIL_WARN, severity_for, top_share, uniform_reference)
from .verdict import Verdict


@dataclass(frozen=True)
class Words:
    """How a family's usage verdicts speak: the thing counted, and the causes and remedies of each rule."""

    codes: str
    unused_cause: str
    unused_remedy: str
    flat_cause: str
    flat_remedy: str
    dominant_cause: str
    dominant_remedy: str


VQ_WORDS = Words(
    "codes",
    "codes initialised away from the data never win a frame, and nothing replaces them "
    "(random init without k-means, dead-code expiry off or with a threshold that never fires)",
    f"{KMEANS}; {EXPIRY}; or a smaller K, near the number of codes in use.",
    "usage concentrates on a few codes: the codebook did not spread over the data (random init, "
    "slow EMA) or dead codes were never revived",
    f"{KMEANS}; {EMA_DECAY}; {EXPIRY}; if the data holds no more, a smaller K near the perplexity costs nothing.",
    "a few codes near the centre of the data absorb most frames (random or too-narrow init; "
    "slow EMA updates keep the other codes from moving in)",
    f"{KMEANS}; {EMA_DECAY}; {EXPIRY}.")
SIMVQ_WORDS = Words(
    "codes",
    "the transformed codebook covers only part of the data: the frozen random codes are moved together "
    "by one linear map, which did not bring them to where the frames are",
    f"{SIMVQ_TRANSFORM}; or a smaller K, near the number of codes in use.",
    "usage concentrates on a few codes of the effective codebook", f"{SIMVQ_TRANSFORM}.",
    "a few codes of the effective codebook absorb most frames", f"{SIMVQ_TRANSFORM}.")
FSQ_WORDS = Words(
    "grid cells",
    "the projected inputs reach only part of the grid: some dimensions use few of their levels or sit at "
    "the edges (see the per-dimension level histograms); an FSQ cell has no EMA and cannot die, it is "
    "simply never reached",
    f"{FSQ_SCALE}; {FSQ_LEVELS}.",
    "the frames crowd into a few cells: the dimensions are correlated or use few levels",
    f"{FSQ_SCALE}; {FSQ_LEVELS}.",
    "a few grid cells take most frames (dimensions pinned or saturated together)",
    f"{FSQ_SCALE}; {FSQ_LEVELS}.")
LFQ_WORDS = Words(
    "sign patterns",
    "bits that rarely flip or flip together leave most of the 2^d sign patterns unreachable (see the bit "
    "balance and correlations); a pattern is never EMA-dead, it is simply never produced",
    f"{LFQ_ENTROPY}; {LFQ_BITS}.",
    "the frames crowd into a few sign patterns: bits unbalanced or correlated",
    f"{LFQ_ENTROPY}; {LFQ_BITS}.",
    "a few sign patterns take most frames (bits stuck together)", f"{LFQ_ENTROPY}.")
WORDS = {"vq": VQ_WORDS, "simvq": SIMVQ_WORDS, "fsq": FSQ_WORDS, "lfq": LFQ_WORDS}


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def table_usage_verdicts(layer: int, counts: np.ndarray, frames: int, words: Words, label: str = "",
                         offset: int = 0) -> list[Verdict]:
    """The three usage rules on one table's counts (`label` names the table in titles, `offset` turns its
    code indices into the layer's)."""
    counts = np.asarray(counts, dtype=np.int64)
    k = counts.size
    n = int(counts.sum()) or frames
    usage = usage_metrics(counts)
    util_ref, ppl_ref = uniform_reference(k, n)
    where = f"Layer {layer}{label}"
    things = words.codes
    out = []

    util_ratio = usage["utilization"] / util_ref if util_ref > 0 else float("nan")
    sev = severity_for(util_ratio, UTIL_WARN, UTIL_COLLAPSE)
    if sev != "ok":
        out.append(Verdict(
            "low_utilization", layer, sev, f"{where}: {k - usage['used']} of {k} {things} unused",
            {"used": usage["used"], "codebook_size": k, "utilization": usage["utilization"],
             "uniform_utilization": util_ref, "ratio": util_ratio, "frames": n,
             "warn_below": UTIL_WARN, "collapse_below": UTIL_COLLAPSE},
            f"{usage['used']} of {k} {things} ({_pct(usage['utilization'])}) receive any of the {n} frames, "
            f"where a uniform codebook would use {_pct(util_ref)}: ratio {util_ratio:.2f} "
            f"(warning below {UTIL_WARN}, collapse below {UTIL_COLLAPSE}).",
            words.unused_remedy, "dead_codes", words.unused_cause))

    ppl = usage["perplexity"]
    ppl_ratio = ppl / ppl_ref if ppl_ref > 0 else float("nan")
    sev = severity_for(ppl_ratio, PPL_WARN, PPL_COLLAPSE)
    if sev != "ok":
        bits = usage["entropy"] * math.log2(k) if k > 1 else 0.0
        out.append(Verdict(
            "low_perplexity", layer, sev, f"{where}: perplexity {ppl:.0f} of K={k}",
            {"perplexity": ppl, "uniform_perplexity": ppl_ref, "ratio": ppl_ratio,
             "entropy_normalized": usage["entropy"], "bits": bits, "warn_below": PPL_WARN,
             "collapse_below": PPL_COLLAPSE},
            f"The {things} behave like {ppl:.0f} equally used {things} out of {k} "
            f"({ppl_ratio:.2f} of a uniform codebook's {ppl_ref:.0f} on the same frames; warning below "
            f"{PPL_WARN}, collapse below {PPL_COLLAPSE}): the layer carries {bits:.1f} of "
            f"{math.log2(k) if k > 1 else 0:.1f} bits (K = {max(2, 2 ** math.ceil(math.log2(max(2.0, ppl))))} "
            f"would hold them).",
            words.flat_remedy, "histogram", words.flat_cause))

    top, share = top_share(counts)
    uniform_share = top / k
    warn_at = min(TOP_SHARE_WARN_FACTOR * uniform_share, TOP_SHARE_COLLAPSE)
    sev = "collapse" if share >= TOP_SHARE_COLLAPSE else ("warning" if share >= warn_at else "ok")
    # Below K = 8 one code's fair share is already near half the frames: the rule says nothing there.
    if sev != "ok" and n > 0 and uniform_share <= TOP_SHARE_COLLAPSE / 4:
        out.append(Verdict(
            "dominant_codes", layer, sev,
            f"{where}: {top} {things if top > 1 else things[:-1]} take{'' if top > 1 else 's'} {_pct(share)} of frames",
            {"top_codes": top, "top_share": share, "uniform_share": uniform_share,
             "factor": share / uniform_share, "warn_at": warn_at, "collapse_at": TOP_SHARE_COLLAPSE,
             "codes": [int(c) + offset for c in np.argsort(counts)[::-1][:min(top, 20)]]},
            f"The top 1% of {things} ({top}) take {_pct(share)} of the frames, {share / uniform_share:.0f}x "
            f"their uniform share (warning at {_pct(warn_at)}, collapse at {_pct(TOP_SHARE_COLLAPSE)}).",
            words.dominant_remedy, "histogram", words.dominant_cause))
    return out


def usage_verdicts(report: LayerReport, frames: int, family: str | None = None) -> list[Verdict]:
    """The usage rules on one layer: on its one table, or table by table (the worst table's verdict per
    rule, with every table it holds for in `evidence['tables']`)."""
    words = WORDS.get(family or "vq", VQ_WORDS)
    tables = report.family.get("tables") if isinstance(report.family, dict) else None
    if not tables:
        return table_usage_verdicts(report.layer, report.counts, frames, words)
    parts = split_tables(report.counts, len(tables))
    found: dict[str, list[tuple[str, Verdict]]] = {}
    for t, (info, part) in enumerate(zip(tables, parts)):
        for v in table_usage_verdicts(report.layer, part, frames, words, f" ({info['name']})", t * part.size):
            found.setdefault(v.id, []).append((info["name"], v))
    out = []
    for rule, hits in found.items():
        name, worst = max(hits, key=lambda h: (h[1].rank, -h[1].evidence.get("ratio", 0.0)))
        worst.evidence["tables"] = [{"table": n, "severity": v.severity, "ratio": v.evidence.get("ratio")}
                                    for n, v in hits]
        worst.evidence["tables_total"] = len(tables)
        if len(hits) > 1:
            worst.title += f" (and {len(hits) - 1} more of {len(tables)} tables)"
        worst.message += " Tables are judged one by one, never pooled."
        out.append(worst)
    return out


def table_k(report: LayerReport) -> int:
    """Codes in one of the layer's tables (K, not tables x K)."""
    tables = len(report.family.get("tables", [])) if isinstance(report.family, dict) else 0
    return report.codebook_size // tables if tables > 1 else report.codebook_size


def layer_bits(report: LayerReport) -> tuple[float, float]:
    """(bits the layer's codes carry per frame, its budget): summed over tables, log2 K per table."""
    tables = report.family.get("tables") if isinstance(report.family, dict) else None
    if not tables:
        k = report.codebook_size
        return (report.entropy * math.log2(k), math.log2(k)) if k > 1 else (0.0, 0.0)
    k = table_k(report)
    if k <= 1:
        return 0.0, 0.0
    return sum(t["entropy"] * math.log2(k) for t in tables), len(tables) * math.log2(k)
