"""The rules that turn audit numbers into verdicts, and every threshold they use.

Each threshold is compared with a *reference that already carries K and the number of frames N*, so
one constant means the same at K = 1024 and K = 65,536:

- usage (utilization, perplexity) is divided by what a perfectly uniform codebook of the same K would
  show on the same N frames (expected utilization 1 - (1 - 1/K)^N, plug-in perplexity of N uniform
  draws). Uniform is the right target: by Gersho's high-resolution theory the optimal fixed-rate point
  density is p(x)^(D/(D+2)), so each cell's probability goes as p(x)^(2/(D+2)) - nearly equal for D >= 8;
- concentration is the share of frames taken by the top 1% of codes (ceil(K/100) codes), compared
  with their uniform share;
- the EMA dead-code threshold is divided by the uniform EMA share sum(N_k)/K (kaiidams/soundstream-
  pytorch#8: a fixed threshold has to scale with 1/K; Moshi's relative rule uses 0.1 x that share);
- near-duplicate centroids are measured against the codebook's own median nearest-neighbour distance;
- the effective rank of the centroids against the rank their data offers (min(used codes - 1, effective
  rank of the layer's input residual));
- a stage's SNR gain against the rate-distortion figure of its bit budget, 6.02 log2(K) / D dB;
- mutual information between stages is scaled between the estimator's independence floor and H(b).

The constants are starting points calibrated on published figures (see docs in each comment) and on the
demo quantizers; they are not standards, and the evidence of each verdict shows the numbers behind it.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from ...quant import Quantizer
from ..audit import AuditResult, LayerReport, PairAccumulator
from . import geometry
from .verdict import Verdict

# --- usage --------------------------------------------------------------------------------------
UTIL_WARN = 0.80
"""Utilization below 80% of the uniform reference is a warning. SimVQ (arXiv 2411.02038) reports 95.6%
for its LibriTTS codec and LlamaGen 97%: healthy trained codebooks sit above 90% (the healthy demo:
91-100%), so a fifth of the codes idle is already capacity lost."""
UTIL_COLLAPSE = 0.25
"""Below a quarter of the uniform reference is a collapse: the figures the literature calls collapsed
are VQGAN 1.4% at K = 65,536 (SimVQ), VQGAN-FC < 12% at K = 16,384 (VQGAN-LC 2406.11837) and
WavTokenizer 1.05 kbps 27%."""
PPL_WARN = 0.25
"""Perplexity below 25% of the uniform reference (fewer than K/4 codes in effective use) is a warning.
Speech dwells on steady vowels and low-energy frames, so a first stage runs below uniform (the healthy
demo: 0.56)."""
PPL_COLLAPSE = 0.10
"""Perplexity below 10% of the uniform reference is a collapse (the collapsed demo: 0.03-0.09)."""
TOP_SHARE_FRACTION = 0.01
"""The 'few codes' looked at: the top 1% of codes by frames, ceil(K/100) codes (1 code for K <= 100)."""
TOP_SHARE_WARN_FACTOR = 20.0
"""Warning when the top 1% of codes take 20x their uniform share (>= 20% of frames at K >= 100). The
healthy demo's first stage reaches 7x; the collapsed demo 24-52x."""
TOP_SHARE_COLLAPSE = 0.50
"""Collapse when the top 1% of codes take most (half) of the frames, whatever K."""
MIN_FRAMES_PER_CODE = 5.0
"""Below 5 frames per code, a uniform codebook already leaves e^-5 = 0.7% of codes unseen and the plug-in
perplexity is biased low; the usage rules still hold (they use the same-N reference) but say so."""

# --- EMA statistics ---------------------------------------------------------------------------------
EMA_THRESHOLD_INFO = 0.25
"""An EMA dead-code threshold of >= 0.25 x the uniform EMA share sum(N_k)/K catches rare but live codes
of a Zipf-like usage (Moshi uses 0.1 x that share); at 2 with K = 512 and batch 2048 it is 0.5 x."""
EMA_THRESHOLD_WARN = 1.0
"""At >= 1 x the uniform share, about half the codes sit under the threshold at every step, and are
replaced over and over: EnCodec's absolute 2 reaches this once K exceeds half the batch frames."""
DISAGREE_FRACTION = 0.05
"""EMA-dead and unused-on-features sets differ 'materially' when the difference exceeds 5% of K ..."""
DISAGREE_FACTOR = 2.0
"""... and (for codes unused on the features) twice what sampling would leave unused if the features
followed the checkpoint's EMA usage: sum over EMA-alive codes of (1 - p_k)^N."""

# --- geometry ------------------------------------------------------------------------------------------
DUP_FACTOR = 0.05
"""Two centroids are near duplicates when closer than 1/20 of the median nearest-neighbour distance.
For points spread with a smooth density in D dimensions, P(nn < f x median) ~ ln2 f^D: ~1e-11 at D = 8;
real codebooks are lumpier (the healthy demo's closest pair is at 0.08 x median), so 0.05 keeps a margin."""
DUP_WARN_FRACTION = 0.01
"""Warning when at least 1% of K codes (and at least 2) have a near duplicate; fewer is reported as info."""
LOW_RANK_RATIO = 0.25
"""Warning when the centroids' effective rank is below 25% of the rank available to them,
min(used - 1, effective rank of the layer's input). The healthy demo: 0.73-0.78; arXiv 2605.06870
finds trained VQ representations in 1-2% of the ambient rank, so the ambient D is not the reference."""

# --- stages --------------------------------------------------------------------------------------------
DB_PER_BIT = 20 * math.log10(2)
"""6.02 dB per bit per dimension: the rate-distortion slope of a Gaussian source, D(R) = s² 2^(-2R)."""
STAGE_GAIN_FRACTION = 0.25
"""A stage whose SNR gain is under 25% of 6.02 log2(K) / D dB (the white-Gaussian figure for its log2 K
bits over D dims) wastes most of its bits. Real residuals are not white, so real stages do better:
the healthy demo's last stage gains 1.6x the figure, the collapsed demo's 0.85x."""

# --- redundancy ----------------------------------------------------------------------------------------
REDUNDANCY_WARN = 0.5
"""Warning when more than half of stage i+1's code entropy above chance is predictable from stage i's
code. Consecutive stages always share some (the next residual lies inside the previous Voronoi cell):
the healthy demo has 0.10-0.29."""
MI_RESOLUTION_MAX = 0.5
"""When independent codes with the same marginals would already show an MI above half of H(b), the N
frames are too few to measure the MI (need N >> used_a x used_b): say so instead of judging."""

# --- remedies ----------------------------------------------------------------------------------------
KMEANS = "k-means init of each codebook on its own residuals (kmeans_init=True) instead of random vectors"
EXPIRY = "dead-code expiry with a relative threshold (usage < 0.1 x sum(N)/K, as Moshi) that scales with K"
EMA_DECAY = "a lower EMA decay (e.g. 0.99 -> 0.95) so centroids follow the residuals faster"


RULE_TITLES = {
    "summary": "Summary",
    "low_utilization": "Unused codes",
    "low_perplexity": "Low perplexity for K",
    "dominant_codes": "A few codes take most frames",
    "ema_dead_majority": "Most codes EMA-dead in the checkpoint",
    "ema_threshold_scale": "Dead-code threshold not scaled to K",
    "ema_disagreement": "EMA-dead and unused-on-features disagree",
    "duplicate_centroids": "Near-duplicate centroids",
    "low_rank": "Centroids in a low-dimensional subspace",
    "residual_grows": "Residual no longer shrinks",
    "stage_no_gain": "Stage adds little SNR",
    "redundant_stage": "Stage redundant with the previous one",
    "mi_unresolved": "Too few frames for inter-stage MI",
    "few_frames": "Few frames per code",
    "layer_ok": "Healthy layer",
}
"""A short name per rule id, for grouping verdicts of several layers under one heading."""


def _verdict(id: str, layer: int | None, severity: str, title: str, evidence: dict, message: str,
             cause: str, remedy: str, view: str) -> Verdict:
    return Verdict(id=id, layer=layer, severity=severity, title=title, evidence=evidence, message=message,
                   remedy=remedy, view=view, cause=cause)


def severity_for(value: float, warn: float, collapse: float | None, below: bool = True) -> str:
    """'collapse', 'warning' or 'ok' for `value` against thresholds (below=True: small is bad)."""
    if value != value:  # NaN
        return "ok"
    bad = (lambda t: value < t) if below else (lambda t: value >= t)
    if collapse is not None and bad(collapse):
        return "collapse"
    return "warning" if bad(warn) else "ok"


@functools.lru_cache(maxsize=64)
def uniform_reference(k: int, n: int, seed: int = 0) -> tuple[float, float]:
    """(utilization, plug-in perplexity) a uniform codebook of K codes shows on N frames.

    Utilization is exact in expectation; the perplexity is one seeded multinomial draw (its spread is
    tiny next to the thresholds: ~sqrt(K)/N relative)."""
    if k <= 0 or n <= 0:
        return 0.0, 0.0
    util = -math.expm1(n * math.log1p(-1.0 / k)) if k > 1 else 1.0
    counts = np.random.default_rng(seed).multinomial(n, np.full(k, 1.0 / k))
    p = counts[counts > 0] / n
    return float(util), float(math.exp(-(p * np.log(p)).sum()))


def top_share(counts: np.ndarray) -> tuple[int, float]:
    """(number of codes in the top 1%, share of frames they take)."""
    k = counts.size
    top = max(1, math.ceil(TOP_SHARE_FRACTION * k))
    total = counts.sum()
    share = float(np.sort(counts)[::-1][:top].sum() / total) if total > 0 else 0.0
    return top, share


def _fmt_pct(x: float) -> str:
    return f"{100 * x:.1f}%"


# --- per-layer usage ---------------------------------------------------------------------------------
def usage_verdicts(report: LayerReport, frames: int) -> list[Verdict]:
    counts = np.asarray(report.counts, dtype=np.int64)
    k = counts.size
    n = int(counts.sum()) or frames
    util_ref, ppl_ref = uniform_reference(k, n)
    layer = report.layer
    out = []

    util_ratio = report.utilization / util_ref if util_ref > 0 else float("nan")
    sev = severity_for(util_ratio, UTIL_WARN, UTIL_COLLAPSE)
    if sev != "ok":
        out.append(_verdict(
            "low_utilization", layer, sev,
            f"Layer {layer}: {len(report.dead_codes)} of {k} codes unused",
            {"used": report.used, "codebook_size": k, "utilization": report.utilization,
             "uniform_utilization": util_ref, "ratio": util_ratio, "frames": n,
             "warn_below": UTIL_WARN, "collapse_below": UTIL_COLLAPSE},
            f"{report.used} of {k} codes ({_fmt_pct(report.utilization)}) receive any of the {n} frames, "
            f"where a uniform codebook would use {_fmt_pct(util_ref)}: ratio {util_ratio:.2f} "
            f"(warning below {UTIL_WARN}, collapse below {UTIL_COLLAPSE}).",
            "codes initialised away from the data never win a frame, and nothing replaces them "
            "(random init without k-means, dead-code expiry off or with a threshold that never fires)",
            f"{KMEANS}; {EXPIRY}; or a smaller K, near the number of codes in use.",
            "dead_codes"))

    ppl_ratio = report.perplexity / ppl_ref if ppl_ref > 0 else float("nan")
    sev = severity_for(ppl_ratio, PPL_WARN, PPL_COLLAPSE)
    if sev != "ok":
        out.append(_verdict(
            "low_perplexity", layer, sev,
            f"Layer {layer}: perplexity {report.perplexity:.0f} of K={k}",
            {"perplexity": report.perplexity, "uniform_perplexity": ppl_ref, "ratio": ppl_ratio,
             "entropy_normalized": report.entropy, "bits": report.entropy * math.log2(k) if k > 1 else 0.0,
             "warn_below": PPL_WARN, "collapse_below": PPL_COLLAPSE},
            f"The codes behave like {report.perplexity:.0f} equally used codes out of {k} "
            f"({ppl_ratio:.2f} of a uniform codebook's {ppl_ref:.0f} on the same frames; warning below "
            f"{PPL_WARN}, collapse below {PPL_COLLAPSE}): the layer carries "
            f"{report.entropy * math.log2(k) if k > 1 else 0:.1f} of {math.log2(k) if k > 1 else 0:.1f} bits "
            f"(K = {max(2, 2 ** math.ceil(math.log2(max(2.0, report.perplexity))))} would hold them).",
            "usage concentrates on a few codes: the codebook did not spread over the data (random init, "
            "slow EMA) or dead codes were never revived",
            f"{KMEANS}; {EMA_DECAY}; {EXPIRY}; if the data holds no more, a smaller K near the perplexity "
            f"costs nothing.",
            "histogram"))

    top, share = top_share(counts)
    uniform_share = top / k
    warn_at = min(TOP_SHARE_WARN_FACTOR * uniform_share, TOP_SHARE_COLLAPSE)
    sev = "collapse" if share >= TOP_SHARE_COLLAPSE else ("warning" if share >= warn_at else "ok")
    # Below K = 8 one code's fair share is already near half the frames: the rule says nothing there.
    if sev != "ok" and n > 0 and uniform_share <= TOP_SHARE_COLLAPSE / 4:
        out.append(_verdict(
            "dominant_codes", layer, sev,
            f"Layer {layer}: {top} code{'s take' if top > 1 else ' takes'} {_fmt_pct(share)} of frames",
            {"top_codes": top, "top_share": share, "uniform_share": uniform_share,
             "factor": share / uniform_share, "warn_at": warn_at, "collapse_at": TOP_SHARE_COLLAPSE,
             "codes": [int(c) for c in np.argsort(counts)[::-1][:min(top, 20)]]},
            f"The top 1% of codes ({top}) take {_fmt_pct(share)} of the frames, {share / uniform_share:.0f}x "
            f"their uniform share (warning at {_fmt_pct(warn_at)}, collapse at {_fmt_pct(TOP_SHARE_COLLAPSE)}).",
            "a few codes near the centre of the data absorb most frames (random or too-narrow init; "
            "slow EMA updates keep the other codes from moving in)",
            f"{KMEANS}; {EMA_DECAY}; {EXPIRY}.",
            "histogram"))
    return out


# --- EMA statistics ------------------------------------------------------------------------------------
EMA_DEAD_MAJORITY = 0.5
"""When at least half the codes sit under the checkpoint's own dead-code rule, expiry is off (a threshold
of 0 disables it in EnCodec-style trainers) or cannot keep up: a warning whatever the threshold's scale."""


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
    for report in result.layers:
        layer = report.layer
        snr = report.snr_db
        if snr is None or snr != snr:   # perfect reconstruction, or no frames
            break
        gain = snr - previous
        k = report.codebook_size
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
    k = max((r.codebook_size for r in result.layers), default=0)
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
    bits = sum(r.entropy * math.log2(r.codebook_size) for r in result.layers if r.codebook_size > 1)
    budget = sum(math.log2(r.codebook_size) for r in result.layers if r.codebook_size > 1)
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
    util_ref, ppl_ref = uniform_reference(k, n) if n else (0.0, 0.0)
    _, share = top_share(np.asarray(report.counts))
    return _verdict(
        "layer_ok", report.layer, "ok", f"Layer {report.layer}: healthy",
        {"utilization": report.utilization, "utilization_ratio": report.utilization / util_ref if util_ref else 0.0,
         "perplexity": report.perplexity, "perplexity_ratio": report.perplexity / ppl_ref if ppl_ref else 0.0,
         "top_share": share, "snr_db": report.snr_db},
        f"{report.used}/{k} codes used ({_fmt_pct(report.utilization)}), perplexity {report.perplexity:.0f}, "
        f"top 1% of codes take {_fmt_pct(share)} of frames.",
        "", "nothing to change.", "histogram")


def threshold_table() -> list[tuple[str, float, str]]:
    """(name, value, documentation) of every threshold constant above, read from this module's source, so
    the report and the app show the rules exactly as they are written here."""
    import ast
    import inspect
    import sys

    module = sys.modules[__name__]
    tree = ast.parse(inspect.getsource(module))
    out = []
    body = tree.body
    for node, after in zip(body, body[1:] + [None]):
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            continue
        name = node.targets[0].id
        value = getattr(module, name, None)
        if not name.isupper() or isinstance(value, str) or not isinstance(value, (int, float)):
            continue
        doc = ""
        if isinstance(after, ast.Expr) and isinstance(getattr(after, "value", None), ast.Constant) \
                and isinstance(after.value.value, str):
            doc = " ".join(after.value.value.split())
        out.append((name, value, doc))
    return out
