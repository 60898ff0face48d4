"""LFQ statistics from the code counts of a d-bit table: balance, entropy and correlation of the bits.

Code k's bit j is (k >> (d-1-j)) & 1 (dimension 0 the highest bit, as vector-quantize-pytorch's `mask`),
so every statistic of the bits over the frames is a weighted sum over the used codes: no extra pass over
the frames, and shards still merge (the counts do). The cost is O(used codes x d²).
"""

from __future__ import annotations

import math

import numpy as np


def _bits_of(codes: np.ndarray, bits: int) -> np.ndarray:
    shifts = np.arange(bits - 1, -1, -1, dtype=np.int64)
    return ((codes[:, None] >> shifts) & 1).astype(np.float64)


def binary_entropy(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -(p * np.log2(p) + (1 - p) * np.log2(1 - p))
    return np.nan_to_num(h, nan=0.0)


def bit_stats(counts: np.ndarray, bits: int) -> dict:
    """Per bit: the share of frames with it set (`ones`), its entropy in bits and whether it is dead (never
    flips on these frames); per pair, the Pearson (phi) correlation of the two bits. Also the code entropy
    against the sum of the bit entropies: their difference is what correlations between bits cost."""
    counts = np.asarray(counts, dtype=np.int64)
    used = np.flatnonzero(counts)
    weights = counts[used].astype(np.float64)
    total = float(weights.sum())
    if total == 0:
        zeros = [0.0] * bits
        return {"bits": bits, "frames": 0, "ones": zeros, "entropy": zeros, "dead": [], "always_one": [],
                "always_zero": [], "correlation": [[0.0] * bits for _ in range(bits)], "max_abs_correlation": 0.0,
                "most_correlated": [], "bit_entropy_sum": 0.0, "code_entropy": 0.0}
    b = _bits_of(used, bits)
    ones = (weights @ b) / total
    joint = (b * weights[:, None]).T @ b / total           # E[b_i b_j]
    var = ones * (1 - ones)
    cov = joint - np.outer(ones, ones)
    denom = np.sqrt(np.outer(var, var))
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = np.where(denom > 0, cov / denom, 0.0)
    np.fill_diagonal(corr, np.where(var > 0, 1.0, 0.0))
    off = np.abs(corr - np.diag(np.diag(corr)))
    i, j = np.unravel_index(int(off.argmax()), off.shape) if bits > 1 else (0, 0)
    entropy = binary_entropy(ones)
    p = weights / total
    return {"bits": bits, "frames": int(total), "ones": [float(v) for v in ones],
            "entropy": [float(v) for v in entropy],
            "always_one": [int(k) for k in np.flatnonzero(ones >= 1.0)],
            "always_zero": [int(k) for k in np.flatnonzero(ones <= 0.0)],
            "dead": [int(k) for k in np.flatnonzero((ones <= 0.0) | (ones >= 1.0))],
            "correlation": [[float(v) for v in row] for row in corr],
            "max_abs_correlation": float(off.max()) if bits > 1 else 0.0,
            "most_correlated": [int(min(i, j)), int(max(i, j))] if bits > 1 else [],
            "bit_entropy_sum": float(entropy.sum()), "code_entropy": float(-(p * np.log2(p)).sum()),
            "max_bits": float(bits), "log2_codes": math.log2(counts.size) if counts.size else 0.0}
