"""Diagnosis: turn an audit into verdicts ("layer 2 collapsed: 20 of 512 codes used") with evidence,
a likely cause, a remedy and the app view that shows the evidence. Qt-free.

    result = run_audit(quantizer, source, device, pairs=True)   # pairs: redundancy and rank reference
    verdicts = diagnose(result, quantizer)
    exit_code_for(verdicts, "collapse")                   # 3 when a collapse verdict holds, else 0

The rules and every threshold live in `rules.py`, with where each comes from and how it scales with K.
"""

from __future__ import annotations

from pathlib import Path

from ...io.outputs import atomic_write_text
from ...quant import Quantizer
from ..audit import AuditResult, PairAccumulator
from . import family_rules, rules, thresholds
from .verdict import SEVERITIES, VIEWS, Verdict, severity_rank

EXIT_COLLAPSE = 3
"""Exit status of `audit --fail-on ...` when a verdict at or above the asked severity holds
(distinct from 2, bad input)."""
FAIL_ON = ("collapse", "warning", "never")


def diagnose(result: AuditResult, quantizer: Quantizer | None = None,
             pairs: PairAccumulator | None = None) -> list[Verdict]:
    """All verdicts for an audit, the whole-quantizer summary first, then by layer and rule.

    `quantizer` (the one audited) adds the checkpoint's EMA rules and the geometry of its centroids;
    `pairs` (the audit's `result.pairs` unless given) adds stage redundancy and the input rank reference.
    Every layer with no warning or collapse gets an `ok` verdict, so a panel lists every layer.
    """
    if pairs is None:
        pairs = result.pairs
    family = result.quantizer.get("family")
    learned = quantizer.family.learned if quantizer is not None else True
    layer_verdicts: list[Verdict] = []
    for report in result.layers:
        found = rules.usage_verdicts(report, result.frames, family) + family_rules.family_verdicts(report, family)
        # An implicit grid (FSQ, LFQ) has no learned rows: duplicates and rank say nothing about it.
        if quantizer is not None and report.layer < quantizer.n_q and learned:
            codebook = quantizer.codebooks[report.layer].detach().float().cpu()
            spectrum = pairs.input_spectrum(report.layer) if pairs is not None else None
            for verdict in (rules.ema_disagreement_verdict(report, quantizer),
                            rules.duplicate_verdict(report, codebook),
                            rules.rank_verdict(report, codebook, spectrum)):
                if verdict is not None:
                    found.append(verdict)
        layer_verdicts.extend(found)
    layer_verdicts.extend(rules.stage_verdicts(result, quantizer))
    if pairs is not None:
        layer_verdicts.extend(rules.redundancy_verdicts(pairs, len(result.layers)))
    for report in result.layers:
        if not any(v.layer == report.layer and v.rank >= severity_rank("warning") for v in layer_verdicts):
            layer_verdicts.append(rules.healthy_layer_verdict(report))

    whole = rules.quantizer_verdicts(result, quantizer, layer_verdicts)
    if quantizer is not None:
        threshold = rules.ema_threshold_verdict(quantizer)
        if threshold is not None:
            whole.append(threshold)
    layer_verdicts.sort(key=lambda v: (v.layer, -v.rank, v.id))
    return whole + layer_verdicts


def streaming_verdicts(result: AuditResult) -> list[Verdict]:
    """The verdicts an audit still streaming supports: the usage rules of `diagnose`, with the same
    thresholds, per layer (an `ok` verdict where none fires). On the same numbers `diagnose` gives the
    same usage verdicts and adds the EMA, geometry, stage and redundancy rules: when the audit completes
    a layer's mark can gain a verdict, never change for another threshold."""
    out: list[Verdict] = []
    family = result.quantizer.get("family")
    for report in result.layers:
        found = rules.usage_verdicts(report, result.frames, family) + family_rules.family_verdicts(report, family)
        out.extend(found or [rules.healthy_layer_verdict(report)])
    return out


def worst(verdicts: list[Verdict]) -> str:
    """The highest severity among `verdicts` ('ok' for none)."""
    return SEVERITIES[max((v.rank for v in verdicts), default=0)]


def exit_code_for(verdicts: list[Verdict], fail_on: str | None) -> int:
    """`EXIT_COLLAPSE` (3) when some verdict is at least as severe as `fail_on` ('collapse' or
    'warning'), 0 otherwise or for None/'never'."""
    if fail_on in (None, "never"):
        return 0
    if fail_on not in FAIL_ON:
        raise ValueError(f"--fail-on {fail_on!r}: use one of {', '.join(FAIL_ON)}")
    level = severity_rank(fail_on)
    return EXIT_COLLAPSE if any(v.rank >= level for v in verdicts) else 0


def report_dict(result: AuditResult, verdicts: list[Verdict]) -> dict:
    """The audit's JSON report with a `verdicts` list added."""
    data = result.to_dict()
    data["verdicts"] = [v.to_dict() for v in verdicts]
    return data


def write_json(path: str | Path, result: AuditResult, verdicts: list[Verdict]) -> None:
    """Write `report_dict` atomically (what `audit --json` writes once verdicts are on)."""
    import json
    atomic_write_text(path, json.dumps(report_dict(result, verdicts), allow_nan=False))


def format_verdicts(verdicts: list[Verdict], min_severity: str = "info") -> str:
    """Plain-text lines for a terminal: one per verdict at or above `min_severity` (and the summary),
    then what to try, once per rule."""
    level = severity_rank(min_severity)
    lines, remedies = [], {}
    for v in verdicts:
        if v.rank < level and v.id != "summary":
            continue
        where = "all" if v.layer is None else f"layer {v.layer}"
        lines.append(f"[{v.severity}] {where}: {v.title}")
        if v.severity in ("warning", "collapse") and v.remedy and v.id != "summary":
            remedies.setdefault(thresholds.RULE_TITLES.get(v.id, v.id), v.remedy)
    if remedies:
        lines.append("what to try:")
        lines.extend(f"  {name}: {remedy}" for name, remedy in remedies.items())
    return "\n".join(lines)


__all__ = ["EXIT_COLLAPSE", "FAIL_ON", "PairAccumulator", "SEVERITIES", "VIEWS", "Verdict", "diagnose",
           "exit_code_for", "format_verdicts", "report_dict", "severity_rank", "streaming_verdicts", "worst",
           "write_json"]
