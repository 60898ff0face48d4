"""Every threshold the diagnosis uses, with where it comes from: the one set all clients apply.

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

# --- implicit grids: FSQ and LFQ ----------------------------------------------------------------------
# An FSQ or LFQ grid has no learned rows to go dead: its failure is a dimension (or a bit) that stops
# carrying information. Each rule compares a dimension with what its own size allows (log2 L bits for L
# levels, 1 bit per LFQ bit), so one constant means the same for L = 3 and L = 17, d = 4 and d = 18; the
# share of grid cells used goes through the usage rules above, with K = prod(levels) or 2^d.
BIT_RULE_MIN_FRAMES = 32
"""The per-dimension rules judge only on at least 32 frames: a balanced bit (or a dimension spread over
its levels) stays constant by chance with probability <= 2^-31 there; below, they are silent."""
FSQ_DIM_BITS_WARN = 0.5
"""Warning when an FSQ dimension carries under half of its log2 L bits (entropy of its level histogram):
5 levels used as 2 is 1 bit of 2.32. FSQ (Mentzer et al. 2023, arXiv 2309.15505) reports near-complete
codebook usage because each dimension spreads over its levels; a dimension at half has lost half its
rate. A dimension pinned at one level (0 bits) is a collapse: the grid is L_j times smaller than it looks."""
FSQ_EDGE_SHARE_WARN = 0.9
"""Warning when 90% of a dimension's frames sit at its two edge levels while a uniform use would put at
most half there (L >= 4): the bounding tanh saturates, so the dimension works as a binary one (the
projected input is too large for the bound; arXiv 2411.19842 s3.2 on FSQ's edge behaviour)."""
LFQ_BIT_ENTROPY_WARN = 0.5
"""Warning when an LFQ bit carries under 0.5 bit (set on fewer than 11% or more than 89% of frames). LFQ
(MAGVIT-v2, arXiv 2310.05737) trains with an entropy penalty whose batch term is highest for balanced,
independent bits; users see utilization fall when that term loses (vector-quantize-pytorch #154). A bit
that never flips (a dead bit) is a collapse: half of the 2^d codes can never be chosen."""
LFQ_CORRELATION_WARN = 0.8
"""Warning when two LFQ bits correlate with |phi| >= 0.8 (on N frames independent bits show |phi| ~
1/sqrt(N)): the pair carries little more than one bit, and a quarter of the codes go mostly unused."""

# --- remedies ----------------------------------------------------------------------------------------
KMEANS = "k-means init of each codebook on its own residuals (kmeans_init=True) instead of random vectors"
EXPIRY = "dead-code expiry with a relative threshold (usage < 0.1 x sum(N)/K, as Moshi) that scales with K"
EMA_DECAY = "a lower EMA decay (e.g. 0.99 -> 0.95) so centroids follow the residuals faster"
FSQ_LEVELS = ("levels the data fills (fewer on dimensions that use few; the FSQ paper's [8,5,5,5] for 2^10 "
              "cells), or fewer dimensions")
FSQ_SCALE = "a normalisation (LayerNorm) or a smaller scale before project_in, so each dimension spans its range"
LFQ_ENTROPY = ("a larger entropy_loss_weight or diversity_gamma (the batch-entropy term spreads the codes, "
               "vector-quantize-pytorch #154), or orthogonal_rotation=True")
LFQ_BITS = "fewer bits (codebook_size), so that each bit stays informative"
SIMVQ_TRANSFORM = ("check that code_transform trains (it moves the whole frozen codebook at once) and that the "
                   "input is normalised like the frozen codes")


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
    "fsq_pinned_dimension": "FSQ dimension pinned at one level",
    "fsq_narrow_dimension": "FSQ dimension using few of its levels",
    "fsq_saturated_dimension": "FSQ dimension stuck at its edge levels",
    "lfq_dead_bit": "LFQ bit that never flips",
    "lfq_unbalanced_bit": "LFQ bit rarely set or rarely clear",
    "lfq_correlated_bits": "LFQ bits that move together",
    "layer_ok": "Healthy layer",
}
"""A short name per rule id, for grouping verdicts of several layers under one heading."""

EMA_DEAD_MAJORITY = 0.5
"""When at least half the codes sit under the checkpoint's own dead-code rule, expiry is off (a threshold
of 0 disables it in EnCodec-style trainers) or cannot keep up: a warning whatever the threshold's scale."""


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
