"""Mergeable per-layer accumulators: two partial audits of two shards merge into the audit of both.

Everything kept is a sum or a histogram (code counts, squared-norm sums, a fixed log-spaced histogram
of norms for percentiles), so `merge` is addition and the order of chunks does not matter.
"""

from __future__ import annotations

import math

import numpy as np
import torch

# Norm histogram: 200 log-spaced bins per decade from 1e-8 to 1e8 (percentiles within ~1.2 %).
_LOG_LO, _LOG_HI, _PER_DECADE = -8.0, 8.0, 200
_N_BINS = int((_LOG_HI - _LOG_LO) * _PER_DECADE)


class NormHistogram:
    """Counts of L2 norms in fixed log-spaced bins (bin 0 also takes norms below 1e-8, zeros included)."""

    def __init__(self):
        self.counts = np.zeros(_N_BINS, dtype=np.int64)

    def add(self, norms: torch.Tensor) -> None:
        logs = torch.log10(norms.double().clamp(min=10 ** _LOG_LO))
        bins = ((logs - _LOG_LO) * _PER_DECADE).long().clamp(0, _N_BINS - 1)
        self.counts += torch.bincount(bins, minlength=_N_BINS).cpu().numpy()

    def merge(self, other: "NormHistogram") -> None:
        self.counts += other.counts

    def percentile(self, q: float) -> float:
        total = int(self.counts.sum())
        if total == 0:
            return float("nan")
        cumulative = np.cumsum(self.counts)
        target = q / 100.0 * total
        index = int(np.searchsorted(cumulative, target, side="left"))
        index = min(index, _N_BINS - 1)
        before = cumulative[index - 1] if index else 0
        inside = self.counts[index]
        fraction = (target - before) / inside if inside else 0.5
        # Geometric interpolation inside the bin.
        return float(10 ** (_LOG_LO + (index + fraction) / _PER_DECADE))


class NormStats:
    """Count, sum of norms, sum of squared norms and a histogram of the norms of many frames."""

    def __init__(self):
        self.count = 0
        self.sum = 0.0
        self.sum_sq = 0.0
        self.histogram = NormHistogram()

    def add(self, vectors: torch.Tensor) -> None:
        # Each frame's norm in one fused pass in the frames' own precision (float32 frames: relative
        # error ~1e-7, far below what is reported), summed over frames in double. Converting the whole
        # [N, D] block to double first cost ~10% of a small-D audit.
        if vectors.dtype not in (torch.float32, torch.float64):
            vectors = vectors.float()
        norms = torch.linalg.vector_norm(vectors, dim=1)
        self.add_norms(norms)

    def add_norms(self, norms: torch.Tensor) -> None:
        """Add frames by their L2 norms (a float64 vector)."""
        norms = norms.double()
        self.count += int(norms.numel())
        self.sum += float(norms.sum())
        self.sum_sq += float(norms.square().sum())
        self.histogram.add(norms)

    def merge(self, other: "NormStats") -> None:
        self.count += other.count
        self.sum += other.sum
        self.sum_sq += other.sum_sq
        self.histogram.merge(other.histogram)

    def summary(self) -> dict:
        mean = self.sum / self.count if self.count else float("nan")
        return {"mean": mean, "p5": self.histogram.percentile(5), "p50": self.histogram.percentile(50),
                "p95": self.histogram.percentile(95),
                "mean_sq": self.sum_sq / self.count if self.count else float("nan")}


class LayerAccumulator:
    """Code counts and residual norms of one layer."""

    def __init__(self, codebook_size: int):
        self.counts = np.zeros(codebook_size, dtype=np.int64)
        self.residual = NormStats()

    def add(self, codes: torch.Tensor, residual: torch.Tensor) -> None:
        self.add_codes(codes)
        self.residual.add(residual)

    def add_codes(self, codes: torch.Tensor) -> None:
        self.counts += torch.bincount(codes.flatten(), minlength=self.counts.size).cpu().numpy()

    def merge(self, other: "LayerAccumulator") -> None:
        if other.counts.size != self.counts.size:
            raise ValueError("cannot merge audits of codebooks of different sizes")
        self.counts += other.counts
        self.residual.merge(other.residual)


class AuditAccumulator:
    """Everything an audit gathers, for all layers."""

    def __init__(self, codebook_sizes: list[int], pairs=None):
        self.layers = [LayerAccumulator(k) for k in codebook_sizes]
        self.input = NormStats()
        # Optional joint code histograms of consecutive layers (`pairs.PairAccumulator`),
        # fed in the same pass so features are read once.
        self.pairs = pairs

    @property
    def frames(self) -> int:
        return self.input.count

    def merge(self, other: "AuditAccumulator") -> "AuditAccumulator":
        if len(other.layers) != len(self.layers):
            raise ValueError("cannot merge audits with different numbers of layers")
        self.input.merge(other.input)
        for mine, theirs in zip(self.layers, other.layers):
            mine.merge(theirs)
        if self.pairs is not None and other.pairs is not None:
            self.pairs.merge(other.pairs)
        else:
            self.pairs = None  # a partial joint histogram would mislead: keep none
        return self

    def copy(self) -> "AuditAccumulator":
        clone = AuditAccumulator([layer.counts.size for layer in self.layers])
        clone.merge(self)
        clone.pairs = None if self.pairs is None else self.pairs.copy()
        return clone


def usage_metrics(counts: np.ndarray) -> dict:
    """used, utilization, perplexity exp(H) and entropy H / log K of a code-count vector."""
    k = counts.size
    total = int(counts.sum())
    used = int((counts > 0).sum())
    if total == 0:
        return {"used": 0, "utilization": 0.0, "perplexity": 0.0, "entropy": 0.0}
    p = counts[counts > 0] / total
    entropy = float(-(p * np.log(p)).sum())
    return {"used": used, "utilization": used / k, "perplexity": math.exp(entropy),
            "entropy": entropy / math.log(k) if k > 1 else 0.0}
