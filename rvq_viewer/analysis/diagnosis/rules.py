"""The rules that turn audit numbers into verdicts. Every threshold they compare with, and why it is
where it is, lives in `thresholds.py`."""

from __future__ import annotations

import math

import numpy as np
import torch

from ...quant import Quantizer, family_named
from ..audit import AuditResult, LayerReport, PairAccumulator
from . import geometry, usage
from .thresholds import (DB_PER_BIT, DISAGREE_FACTOR, DISAGREE_FRACTION, DUP_FACTOR, DUP_WARN_FRACTION,
                         EMA_DEAD_MAJORITY, EMA_DECAY, EMA_THRESHOLD_INFO, EMA_THRESHOLD_WARN, EXPIRY, KMEANS,
                         LOW_RANK_RATIO, MIN_FRAMES_PER_CODE, MI_RESOLUTION_MAX, REDUNDANCY_WARN,
                         STAGE_GAIN_FRACTION, top_share, uniform_reference)
from .verdict import Verdict


def _verdict(id: str, layer: int | None, severity: str, title: str, evidence: dict, message: str,
             cause: str, remedy: str, view: str) -> Verdict:
    return Verdict(id=id, layer=layer, severity=severity, title=title, evidence=evidence, message=message,
                   remedy=remedy, view=view, cause=cause)


def _fmt_pct(x: float) -> str:
    return f"{100 * x:.1f}%"


# --- per-layer usage: `usage.py` (family- and table-aware) -----------------------------------------------
usage_verdicts = usage.usage_verdicts


def ema_threshold_verdict(quantizer: Quantizer) -> Verdict | None:
    """Is the checkpoint's dead-code rule scaled to K, and does it leave most codes dead? Needs EMA sizes."""
    if not quantizer.has_ema:
        return None
    rule = quantizer.dead_code_rule
    sizes = [cs.detach().double().cpu() for cs in quantizer.cluster_size]
    share = float(np.mean([float(cs.sum()) / cs.numel() for cs in sizes]))
    if share <= 0:
        return None
    ratio = rule.value if rule.kind == "relative" else rule.value / share
    below = float(np.mean([float(rule.dead_mask(cs).double().mean()) for cs in sizes]))
    evidence = {"threshold": rule.value, "relative": rule.kind == "relative", "uniform_share": share,
                "ratio": ratio, "fraction_below": below, "codebook_size": quantizer.codebook_size,
                "info_at": EMA_THRESHOLD_INFO, "warn_at": EMA_THRESHOLD_WARN, "majority_at": EMA_DEAD_MAJORITY}
    majority = below >= EMA_DEAD_MAJORITY and ratio < EMA_THRESHOLD_WARN   # else the scale explains it
    if ratio < EMA_THRESHOLD_INFO and not majority:
        return None
    scale = (f"The checkpoint's rule ({rule.describe()}) is {ratio:.2g}x the uniform EMA share of {share:.3g} "
             f"per code (sum of cluster sizes / K); {_fmt_pct(below)} of codes are under it.")
    if majority:
        return _verdict(
            "ema_dead_majority", None, "warning", f"{_fmt_pct(below)} of codes are EMA-dead in the checkpoint",
            evidence,
            scale + " Codes stay dead through training: dead-code expiry is off or does not keep up.",
            "dead-code expiry disabled (threshold 0) or replaced codes losing again at once (random init far "
            "from the data, high EMA decay)",
            f"{EXPIRY}; {KMEANS}.", "dead_codes")
    return _verdict(
        "ema_threshold_scale", None, "warning" if ratio >= EMA_THRESHOLD_WARN else "info",
        f"Dead-code threshold is {ratio:.2g}x the uniform EMA share",
        evidence,
        scale + f" Above {EMA_THRESHOLD_INFO}x, rare but live codes get replaced (Moshi uses 0.1x).",
        "an absolute threshold tuned for another K or batch size: the uniform share is batch frames / K, "
        "so the same threshold is harmless at K=512 with 8k-frame batches and expires everything at K=65,536",
        "lower the dead-code threshold or make it relative to the uniform share (0.1 x sum(N)/K, Moshi) "
        "so that it scales with K and batch size.",
        "dead_codes")


def expected_unused(cluster_size: torch.Tensor, n: int, mask: np.ndarray) -> float:
    """Codes in `mask` expected to get no frame of N if frames followed the EMA usage."""
    p = cluster_size.detach().double().cpu().numpy()
    total = p.sum()
    if total <= 0:
        return float(mask.sum())
    p = p / total
    return float(np.exp(n * np.log1p(-np.clip(p[mask], 0, 1 - 1e-15))).sum())


def ema_disagreement_verdict(report: LayerReport, quantizer: Quantizer) -> Verdict | None:
    if report.ema_dead_codes is None or quantizer.cluster_size is None or report.layer >= quantizer.n_q:
        return None
    k = report.codebook_size
    counts = np.asarray(report.counts)
    n = int(counts.sum())
    ema_dead = np.zeros(k, dtype=bool)
    ema_dead[np.asarray(report.ema_dead_codes, dtype=np.int64)] = True
    unused = counts == 0
    ema_only = int((ema_dead & ~unused).sum())        # dead by the checkpoint, used on these features
    features_only = int((unused & ~ema_dead).sum())   # alive by the checkpoint, unused on these features
    expected = expected_unused(quantizer.cluster_size[report.layer], n, ~ema_dead)
    margin = DISAGREE_FRACTION * k
    shifted = features_only - expected > margin and features_only > DISAGREE_FACTOR * expected
    stale = ema_only > margin
    if not (shifted or stale):
        return None
    layer = report.layer
    evidence = {"ema_dead": int(ema_dead.sum()), "unused": int(unused.sum()), "both": int((ema_dead & unused).sum()),
                "ema_dead_but_used": ema_only, "unused_but_ema_alive": features_only,
                "expected_unused_if_training_data": expected, "frames": n, "margin": margin}
    parts = []
    if shifted:
        parts.append(f"{features_only} codes alive in the checkpoint's EMA receive no frame here, where "
                     f"features like the training data would leave ~{expected:.1f} unused: these features "
                     f"differ from the training data (another domain, or another normalisation)")
    if stale:
        parts.append(f"{ema_only} codes the checkpoint calls dead ({quantizer.dead_code_rule.describe()}) "
                     f"are used on these features: the EMA rule flags rare but live codes, or the "
                     f"features differ from the training data")
    if shifted:
        cause = ("the features are not the training distribution: a different domain or corpus, another "
                 "feature extractor, or a missing/different normalisation")
        remedy = ("check the features' normalisation and extractor against training; if the domain shift is "
                  "real, audit on in-domain data or fine-tune the codebooks on the new domain.")
    else:
        cause = "the dead-code threshold is high against the uniform share, or the EMA lags (high decay)"
        remedy = ("lower or relative dead-code threshold (0.1 x sum(N)/K, Moshi); a lower EMA decay makes the "
                  "cluster sizes follow usage faster.")
    return _verdict("ema_disagreement", layer, "warning" if shifted else "info",
                   f"Layer {layer}: EMA-dead ({int(ema_dead.sum())}) and unused ({int(unused.sum())}) disagree",
                   evidence, "; ".join(parts) + ".", cause, remedy, "dead_codes")


# --- geometry --------------------------------------------------------------------------------------------
def duplicate_verdict(report: LayerReport, codebook: torch.Tensor) -> Verdict | None:
    k = int(codebook.shape[0])
    dup = geometry.near_duplicates(codebook, DUP_FACTOR)
    n = int(dup.codes.size)
    if n < 2:
        return None
    counts = np.asarray(report.counts)
    dead_involved = int((counts[dup.codes] == 0).sum()) if counts.size == k else 0
    sev = "warning" if n >= max(2, DUP_WARN_FRACTION * k) else "info"
    layer = report.layer
    return _verdict(
        "duplicate_centroids", layer, sev,
        f"Layer {layer}: {n} codes have a near-duplicate",
        {"codes_with_duplicate": n, "exact_duplicates": dup.exact, "median_nn_distance": dup.median_nn,
         "threshold": dup.threshold, "factor": DUP_FACTOR, "fraction": n / k, "unused_among_them": dead_involved,
         "pairs": [[a, b, d] for a, b, d in dup.pairs[:20]]},
        f"{n} of {k} codes ({_fmt_pct(n / k)}) lie within {DUP_FACTOR} x the median nearest-neighbour distance "
        f"({dup.median_nn:.3g}) of another code; {dup.exact} are exact copies, {dead_involved} are unused on "
        f"these features. A copy splits its twin's frames or, when exact, never wins one (ties go to the "
        f"lowest index).",
        "codes initialised or re-initialised from the same frames (expiry sampling one frame for several "
        "dead codes, k-means init on too few frames), or two codes pulled onto one mode by the EMA",
        f"{KMEANS} on enough frames (>= 10 x K); when expiring dead codes, draw distinct frames for each; "
        f"or a smaller K.",
        "centroids")


def rank_verdict(report: LayerReport, codebook: torch.Tensor, input_spectrum: np.ndarray | None) -> Verdict | None:
    counts = np.asarray(report.counts)
    used = np.flatnonzero(counts > 0) if counts.size == codebook.shape[0] and counts.sum() > 0 \
        else np.arange(codebook.shape[0])
    if used.size < 3:
        return None
    spectrum = geometry.covariance_spectrum(codebook[torch.as_tensor(used)])
    erank = geometry.effective_rank(spectrum)
    pr = geometry.participation_ratio(spectrum)
    dim = int(codebook.shape[1])
    if input_spectrum is not None:
        data_rank = geometry.effective_rank(input_spectrum)
        data_pr = geometry.participation_ratio(input_spectrum)
        reference_name = "the effective rank of the residual it quantizes"
    else:
        data_rank, data_pr = float(dim), float("nan")
        reference_name = f"its dimension D={dim} (no input statistics were gathered)"
    available = min(used.size - 1, data_rank)
    ratio = erank / available if available > 0 else float("nan")
    if not ratio < LOW_RANK_RATIO:
        return None
    layer = report.layer
    return _verdict(
        "low_rank", layer, "warning",
        f"Layer {layer}: centroids span ~{erank:.1f} of {available:.0f} dimensions",
        {"effective_rank": erank, "participation_ratio": pr, "input_effective_rank": data_rank,
         "input_participation_ratio": data_pr, "available_rank": available, "ratio": ratio,
         "used_codes": int(used.size), "dim": dim, "warn_below": LOW_RANK_RATIO},
        f"The {used.size} used centroids have an effective rank of {erank:.1f} (participation ratio {pr:.1f}) "
        f"where {available:.1f} is available (the smaller of used codes - 1 and {reference_name}): ratio "
        f"{ratio:.2f}, warning below {LOW_RANK_RATIO}. The codebook lives in a low-dimensional subspace "
        f"and cannot follow the residual in the other directions.",
        "codes moved along a few directions only (random init of small norm with a slow EMA, a projection "
        "that squeezes the space, dimensional collapse)",
        f"{KMEANS}; if the residual itself is low-rank, a smaller codebook dimension (project_in) costs nothing; "
        f"{EMA_DECAY}.",
        "centroids")


# --- stages ----------------------------------------------------------------------------------------------
def stage_verdicts(result: AuditResult, quantizer: Quantizer | None) -> list[Verdict]:
    out = []
    previous = 0.0   # SNR in dB before any stage: the residual is the input itself
    # An implicit grid's first stage is not fitted to its input's scale (FSQ bounds it, LFQ keeps only
    # its sign): the stage rules judge the later stages, which refine a residual.
    learned = family_named(result.quantizer.get("family")).learned
    for report in result.layers:
        layer = report.layer
        snr = report.snr_db
        if snr is None or snr != snr:   # perfect reconstruction, or no frames
            break
        if layer == 0 and not learned:
            previous = snr
            continue
        gain = snr - previous
        k = usage.table_k(report)
        dim = int(quantizer.codebooks[layer].shape[1]) if quantizer is not None and layer < quantizer.n_q \
            else int(result.quantizer.get("dim", 1))
        budget = DB_PER_BIT * math.log2(k) / dim if k > 1 else 0.0
        evidence = {"snr_db": snr, "snr_before_db": previous, "gain_db": gain, "reference_gain_db": budget,
                    "ratio": gain / budget if budget > 0 else float("nan"), "fraction": STAGE_GAIN_FRACTION,
                    "residual_mean_sq": report.residual_norm.get("mean_sq")}
        if gain <= 0:
            out.append(_verdict(
                "residual_grows", layer, "warning", f"Layer {layer}: residual no longer shrinks ({gain:+.2f} dB)",
                evidence,
                f"After layer {layer} the residual energy is not smaller than before it (SNR {previous:.2f} -> "
                f"{snr:.2f} dB): the stage adds as much error as it removes.",
                "the stage's codes do not match its residual: it was trained on other residuals (e.g. a "
                "commitment loss that reaches only the first stage, facebookresearch/encodec#25), "
                "or its codebook has no code near zero for residuals it cannot improve",
                f"use fewer layers (drop layer {layer} and those after it), or retrain the later stages "
                f"with k-means init on their own residuals.",
                "residuals"))
        elif budget > 0 and gain < STAGE_GAIN_FRACTION * budget:
            out.append(_verdict(
                "stage_no_gain", layer, "warning", f"Layer {layer}: adds only {gain:.2f} dB",
                evidence,
                f"Layer {layer} raises the SNR by {gain:.3f} dB, under {STAGE_GAIN_FRACTION} x the "
                f"{budget:.2f} dB that log2(K)={math.log2(k):.0f} bits over D={dim} dims buy on a white "
                f"Gaussian residual (6.02 dB per bit per dimension).",
                "the stage's codebook barely fits its residual (collapsed or untrained later stage)",
                f"fewer layers (the bits of layer {layer} buy little), or a larger K in earlier layers; "
                f"{KMEANS}.",
                "residuals"))
        previous = snr
    return out


# --- redundancy --------------------------------------------------------------------------------------------
def redundancy_verdicts(pairs: PairAccumulator, n_layers: int) -> list[Verdict]:
    out = []
    for i in range(min(len(pairs.pairs), n_layers - 1)):
        mi = pairs.mutual_information(i)
        if mi["frames"] == 0:
            continue
        layer = i + 1
        evidence = {k: mi[k] for k in ("mi", "mi_floor", "nmi", "redundancy", "resolution", "h_a", "h_b", "frames")}
        evidence["warn_at"] = REDUNDANCY_WARN
        red = mi["redundancy"]
        if red == red and red >= REDUNDANCY_WARN:
            out.append(_verdict(
                "redundant_stage", layer, "warning",
                f"Layer {layer}: {_fmt_pct(red)} predictable from layer {i}",
                evidence,
                f"The codes of layers {i} and {layer} share {mi['mi']:.2f} nats of mutual information (chance "
                f"alone: {mi['mi_floor']:.2f}) of layer {layer}'s {mi['h_b']:.2f}: {_fmt_pct(red)} of what "
                f"layer {layer} says above chance is already said by layer {i} (warning at "
                f"{_fmt_pct(REDUNDANCY_WARN)}).",
                f"layer {layer} refines layer {i}'s choice instead of coding new information: its codebook "
                f"mirrors the previous one (e.g. a scaled copy), or the residual still carries the "
                f"previous stage's cell",
                f"fewer layers (merge the two stages into one larger codebook), or a larger K in layer {i}.",
                "overview"))
        elif mi["resolution"] == mi["resolution"] and mi["resolution"] > MI_RESOLUTION_MAX:
            out.append(_verdict(
                "mi_unresolved", layer, "info",
                f"Layers {i}-{layer}: too few frames to measure their redundancy",
                evidence,
                f"Independent codes with these marginals would already show {mi['mi_floor']:.2f} of "
                f"H={mi['h_b']:.2f} nats on {mi['frames']} frames: the joint histogram has too few frames per "
                f"cell (need N well above used codes of layer {i} x layer {layer}).",
                "a small feature set for this K", "audit on more frames.", "overview"))
    return out


def quantizer_verdicts(result: AuditResult, quantizer: Quantizer | None,
                       layer_verdicts: list[Verdict]) -> list[Verdict]:
    """The whole-quantizer verdicts: frames per code and the summary (first in the list)."""
    out = []
    k = max((usage.table_k(r) for r in result.layers), default=0)
    frames = result.frames
    if k and frames < MIN_FRAMES_PER_CODE * k:
        util, ppl = uniform_reference(k, max(frames, 1))
        out.append(_verdict(
            "few_frames", None, "info", f"{frames} frames for K={k}: {frames / k:.2g} per code",
            {"frames": frames, "codebook_size": k, "frames_per_code": frames / k,
             "uniform_utilization": util, "uniform_perplexity": ppl, "min_frames_per_code": MIN_FRAMES_PER_CODE},
            f"Even a uniform codebook would use only {_fmt_pct(util)} of its codes on {frames} frames "
            f"(perplexity {ppl:.0f}). The usage rules compare with that reference, but dead-code counts "
            f"here mostly measure the sample size.",
            "a feature set small for K", f"audit on at least {int(MIN_FRAMES_PER_CODE * k)} frames.", "overview"))

    order = {"ok": 0, "info": 1, "warning": 2, "collapse": 3}
    worst = max((order[v.severity] for v in layer_verdicts), default=0)
    collapsed = sorted({v.layer for v in layer_verdicts if v.severity == "collapse" and v.layer is not None})
    warned = sorted({v.layer for v in layer_verdicts if v.severity == "warning" and v.layer is not None})
    entropies = [r.entropy for r in result.layers]
    bits = sum(usage.layer_bits(r)[0] for r in result.layers)
    budget = sum(usage.layer_bits(r)[1] for r in result.layers)
    evidence = {"n_q": len(result.layers), "codebook_size": k, "frames": frames,
                "effective_percentage": float(np.mean(entropies)) if entropies else 0.0,
                "bits_used": bits, "bits_budget": budget,
                "mean_utilization": float(np.mean([r.utilization for r in result.layers])) if result.layers else 0.0,
                "final_snr_db": result.layers[-1].snr_db if result.layers else None,
                "collapsed_layers": collapsed, "warning_layers": warned}
    names = lambda layers: ", ".join(str(x) for x in layers)  # noqa: E731
    note = "" if result.complete else " (partial audit: the run stopped before the end of the features)"
    if worst >= 3:
        title = f"Collapsed: layer{'s' if len(collapsed) > 1 else ''} {names(collapsed)}"
        message = (f"{len(collapsed)} of {len(result.layers)} layers meet a collapse rule; the codes carry "
                   f"{bits:.1f} of {budget:.0f} bits per frame (DAC effective percentage "
                   f"{_fmt_pct(evidence['effective_percentage'])}){note}.")
        severity, view = "collapse", "histogram"
        cause = "see the layer verdicts: usually random init without k-means and no dead-code expiry"
        remedy = f"{KMEANS}; {EXPIRY}."
    elif worst == 2:
        title = f"Warnings on layer{'s' if len(warned) > 1 else ''} {names(warned)}" if warned else "Warnings"
        message = (f"No collapse; {len(warned)} layer(s) with warnings. The codes carry {bits:.1f} of "
                   f"{budget:.0f} bits per frame (DAC effective percentage "
                   f"{_fmt_pct(evidence['effective_percentage'])}){note}.")
        severity, view = "warning", "overview"
        cause, remedy = "see the layer verdicts", "see the layer verdicts."
    else:
        title = "Healthy: no collapse or warning"
        message = (f"All {len(result.layers)} layers pass the usage, geometry and stage rules on {frames} frames; "
                   f"the codes carry {bits:.1f} of {budget:.0f} bits per frame (DAC effective percentage "
                   f"{_fmt_pct(evidence['effective_percentage'])}){note}.")
        severity, view, cause, remedy = "ok", "overview", "", "nothing to change."
    out.insert(0, _verdict("summary", None, severity, title, evidence, message, cause, remedy, view))
    return out


def healthy_layer_verdict(report: LayerReport) -> Verdict:
    k = report.codebook_size
    n = int(sum(report.counts))
    tables = max(1, k // usage.table_k(report))
    k, n = k // tables, n // tables          # utilization and perplexity are means over the tables
    util_ref, ppl_ref = uniform_reference(k, n) if n else (0.0, 0.0)
    _, share = top_share(np.asarray(report.counts))
    return _verdict(
        "layer_ok", report.layer, "ok", f"Layer {report.layer}: healthy",
        {"utilization": report.utilization, "utilization_ratio": report.utilization / util_ref if util_ref else 0.0,
         "perplexity": report.perplexity, "perplexity_ratio": report.perplexity / ppl_ref if ppl_ref else 0.0,
         "top_share": share, "snr_db": report.snr_db},
        f"{report.used}/{report.codebook_size} codes used ({_fmt_pct(report.utilization)}), perplexity "
        f"{report.perplexity:.0f}{f' (mean of {tables} tables)' if tables > 1 else ''}, "
        f"top 1% of codes take {_fmt_pct(share)} of frames.",
        "", "nothing to change.", "histogram")
