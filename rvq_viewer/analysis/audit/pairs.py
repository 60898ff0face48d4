"""What consecutive stages share: the joint histogram of their codes, and the spread of each stage's input.

`PairAccumulator` gathers, per chunk of frames,
- for each pair of consecutive layers (i, i+1) the counts of code pairs (a, b), sparse: the pair packed
  as the int64 `a * K_{i+1} + b`, kept as sorted unique keys + counts;
- for each layer the moments (n, sum x, sum x x^T) of its input (the residual it quantizes), on one
  frame in `MOMENT_STRIDE`, so the diagnosis can compare a codebook's rank with its data's.
Everything is a sum, so `merge` is addition and two shards merge into the statistics of both.

The audit engine feeds it in its own pass (features are read once): `add_step(index, codes)` for each
layer of each piece of frames, and `add_moments(index, rows)` with every `MOMENT_STRIDE`-th row of the
residual that layer quantized.

Mutual information is the plug-in estimate I = H(a) + H(b) - H(a, b) in nats. From N frames and
m_a x m_b possible pairs it is biased upwards by about (m_a - 1)(m_b - 1) / 2N, which is large when N is
not much more than K²; `mutual_information` therefore also returns the plug-in MI of independent codes
with the same marginals and N (simulated, seeded), and the redundancy is scaled between that floor and
H(b): 0 = no more shared than chance, 1 = stage i+1's code is a function of stage i's.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ...quant import Quantizer

# One frame in this many enters the input covariance: enough for a D x D spectrum, cheap at D = 1024
# (1,024 of a 16,384-frame chunk: 1024 x 1024² ≈ 1 GFLOP per layer and chunk instead of 17).
MOMENT_STRIDE = 16
# Pending (key, count) entries kept before they are folded into the sorted table: amortises the sort.
_COMPACT_AT = 1 << 20
# Largest N for which the independence floor of the MI is simulated; beyond, Miller-Madow's analytic
# bias (m_a - 1)(m_b - 1) / 2N is used, which is accurate when N is large against m_a m_b.
NULL_SIMULATION_MAX = 20_000_000
NULL_SEED = 20251124


class _SparseCounts:
    """Counts of int64 keys: sorted unique keys and their counts, plus a pending list merged lazily."""

    def __init__(self):
        self.keys = np.zeros(0, dtype=np.int64)
        self.counts = np.zeros(0, dtype=np.int64)
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []
        self._pending_size = 0

    def add(self, keys: np.ndarray, counts: np.ndarray) -> None:
        self._pending.append((keys.astype(np.int64, copy=False), counts.astype(np.int64, copy=False)))
        self._pending_size += keys.size
        if self._pending_size > max(_COMPACT_AT, 2 * self.keys.size):
            self.compact()

    def compact(self) -> None:
        if not self._pending:
            return
        keys = np.concatenate([self.keys] + [k for k, _ in self._pending])
        counts = np.concatenate([self.counts] + [c for _, c in self._pending])
        self.keys, inverse = np.unique(keys, return_inverse=True)
        self.counts = np.bincount(inverse.ravel(), weights=counts, minlength=self.keys.size).astype(np.int64)
        self._pending, self._pending_size = [], 0

    def merge(self, other: "_SparseCounts") -> None:
        other.compact()
        self.add(other.keys.copy(), other.counts.copy())

    @property
    def total(self) -> int:
        self.compact()
        return int(self.counts.sum())


class _Moments:
    """n, sum x and sum x x^T of a stream of vectors (float64)."""

    def __init__(self, dim: int):
        self.count = 0
        self.total = np.zeros(dim)
        self.outer = np.zeros((dim, dim))

    def add(self, x: torch.Tensor) -> None:
        x = x.detach().double()
        self.count += int(x.shape[0])
        self.total += x.sum(dim=0).cpu().numpy()
        self.outer += (x.t() @ x).cpu().numpy()

    def merge(self, other: "_Moments") -> None:
        self.count += other.count
        self.total += other.total
        self.outer += other.outer


class PairAccumulator:
    """Joint code histograms of consecutive layers and per-layer input moments; mergeable."""

    def __init__(self, codebook_sizes: list[int], dims: list[int] | int | None = None,
                 layer_strides: list[int] | None = None, tables: int = 1):
        self.codebook_sizes = [int(k) for k in codebook_sizes]
        # Tables per layer (heads, groups): pairs are counted with their table's offset, and the MI is
        # taken within each table, so that the table a code belongs to is not counted as shared information.
        self.tables = max(1, int(tables))
        self.layer_strides = [int(s) for s in layer_strides] if layer_strides else [1] * len(self.codebook_sizes)
        self.pairs = [_SparseCounts() for _ in range(max(0, len(self.codebook_sizes) - 1))]
        if isinstance(dims, int):
            dims = [dims] * len(self.codebook_sizes)
        self.moments = [_Moments(d) for d in dims] if dims is not None else None
        self.frames = 0
        self._previous: torch.Tensor | None = None
        self._last_index = -1

    @classmethod
    def for_quantizer(cls, quantizer: Quantizer) -> "PairAccumulator":
        """With input moments per layer where the residual lives in the codebook's own space (the plain
        rule); a layer that projects or normalises its input has no such reference, so none is kept."""
        dims = [int(c.shape[1]) for c in quantizer.codebooks] if quantizer.plain_residual else None
        return cls(quantizer.codebook_sizes, dims, list(quantizer.layer_strides), quantizer.n_tables)

    # --- feeding --------------------------------------------------------------------------------
    def add_moments(self, index: int, rows: torch.Tensor) -> None:
        """Rows of the residual layer `index` quantized (the engine's every MOMENT_STRIDE-th frame)."""
        if self.moments is not None and rows.shape[0]:
            self.moments[index].add(rows)

    def add_step(self, index: int, codes: torch.Tensor) -> None:
        """Layer `index`'s codes for one piece of frames; call for 0, 1, ... in order."""
        if index == 0:
            self.frames += int(codes.shape[0])
        elif index != self._last_index + 1 or self._previous is None:
            raise ValueError(f"add_step: layer {index} after layer {self._last_index}; feed layers in order")
        if index > 0:
            k_b = self.codebook_sizes[index]
            before, after = self._aligned(index, self._previous, codes)
            packed = before.long() * k_b + after.long()
            keys, counts = torch.unique(packed, return_counts=True)
            self.pairs[index - 1].add(keys.cpu().numpy(), counts.cpu().numpy())
        last = index == len(self.codebook_sizes) - 1
        self._previous = None if last else codes
        self._last_index = -1 if last else index

    def _aligned(self, index: int, before: torch.Tensor, after: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Codes of layers index-1 and index paired by time. Equal counts pair position by position
        (heads are flattened frame-major alike); multi-rate layers (SNAC) are first repeated up to the
        residual's frame rate, so each pair is weighted by the residual frames it covers."""
        if before.shape[0] == after.shape[0]:
            return before, after
        before = before.repeat_interleave(self.layer_strides[index - 1])
        after = after.repeat_interleave(self.layer_strides[index])
        n = min(before.shape[0], after.shape[0])
        return before[:n], after[:n]

    def merge(self, other: "PairAccumulator") -> "PairAccumulator":
        if other.codebook_sizes != self.codebook_sizes:
            raise ValueError("cannot merge pair statistics of quantizers with different codebook sizes")
        for mine, theirs in zip(self.pairs, other.pairs):
            mine.merge(theirs)
        if self.moments is not None and other.moments is not None:
            for mine, theirs in zip(self.moments, other.moments):
                mine.merge(theirs)
        elif other.moments is None:
            self.moments = None
        self.frames += other.frames
        return self

    def copy(self) -> "PairAccumulator":
        """An independent copy (what `AuditAccumulator.copy` needs for streamed snapshots)."""
        clone = PairAccumulator(self.codebook_sizes, None, self.layer_strides, self.tables)
        if self.moments is not None:
            clone.moments = [_Moments(m.total.size) for m in self.moments]
        return clone.merge(self)

    # --- reading --------------------------------------------------------------------------------
    def joint(self, pair: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(codes of layer pair, codes of layer pair + 1, counts) of the observed code pairs."""
        table = self.pairs[pair]
        table.compact()
        k_b = self.codebook_sizes[pair + 1]
        return table.keys // k_b, table.keys % k_b, table.counts

    def input_spectrum(self, layer: int) -> np.ndarray | None:
        """Covariance eigenvalues of layer `layer`'s input (its residual), or None if not gathered."""
        if self.moments is None or self.moments[layer].count < 2:
            return None
        m = self.moments[layer]
        return spectrum_from_moments(m.count, m.total, m.outer)

    def mutual_information(self, pair: int) -> dict:
        """MI between the codes of layers `pair` and `pair + 1`, its independence floor, and the
        redundancy scaled between them (see the module docstring)."""
        a, b, counts = self.joint(pair)
        k_a, k_b = self.codebook_sizes[pair], self.codebook_sizes[pair + 1]
        t = self.tables
        if t == 1 or k_a % t or k_b % t:
            return mutual_information_from_joint(a, b, counts, k_a, k_b)
        ka, kb = k_a // t, k_b // t
        parts = []
        for table in range(t):
            keep = (a // ka == table) & (b // kb == table)
            parts.append(mutual_information_from_joint(a[keep] % ka, b[keep] % kb, counts[keep], ka, kb))
        frames = sum(p["frames"] for p in parts)
        out = {key: float(np.nanmean([p[key] for p in parts if p["frames"]])) if frames else float("nan")
               for key in parts[0] if key != "frames"}
        out["frames"] = frames
        return out


def _entropy(counts: np.ndarray) -> float:
    counts = counts[counts > 0].astype(np.float64)
    total = counts.sum()
    if total <= 0:
        return 0.0
    p = counts / total
    return float(-(p * np.log(p)).sum())


def _plugin_mi(a: np.ndarray, b: np.ndarray, counts: np.ndarray, k_a: int, k_b: int) -> tuple[float, float, float, float]:
    ca = np.bincount(a, weights=counts, minlength=k_a)
    cb = np.bincount(b, weights=counts, minlength=k_b)
    h_a, h_b, h_ab = _entropy(ca), _entropy(cb), _entropy(counts)
    return h_a, h_b, h_ab, max(0.0, h_a + h_b - h_ab)


def independence_floor(marginal_a: np.ndarray, marginal_b: np.ndarray, n: int,
                       seed: int = NULL_SEED, draws: int = 2) -> float:
    """Expected plug-in MI (nats) of n independent pairs with these marginal counts: the estimator's bias."""
    k_a, k_b = marginal_a.size, marginal_b.size
    m_a, m_b = int((marginal_a > 0).sum()), int((marginal_b > 0).sum())
    if n <= 0 or m_a < 2 or m_b < 2:
        return 0.0
    if n > NULL_SIMULATION_MAX:
        return (m_a - 1) * (m_b - 1) / (2.0 * n)
    rng = np.random.default_rng(seed)
    pa = marginal_a / marginal_a.sum()
    pb = marginal_b / marginal_b.sum()
    values = []
    for _ in range(draws):
        xa = rng.choice(k_a, size=n, p=pa)
        xb = rng.choice(k_b, size=n, p=pb)
        keys, c = np.unique(xa.astype(np.int64) * k_b + xb, return_counts=True)
        values.append(_plugin_mi(keys // k_b, keys % k_b, c, k_a, k_b)[3])
    return float(np.mean(values))


def mutual_information_from_joint(a: np.ndarray, b: np.ndarray, counts: np.ndarray, k_a: int, k_b: int) -> dict:
    """MI statistics of a sparse joint histogram (codes a, codes b, counts), in nats."""
    n = int(counts.sum())
    if n == 0:
        nan = float("nan")
        return {"frames": 0, "h_a": nan, "h_b": nan, "h_ab": nan, "mi": nan, "mi_floor": nan,
                "nmi": nan, "redundancy": nan, "resolution": nan}
    h_a, h_b, h_ab, mi = _plugin_mi(a, b, counts, k_a, k_b)
    floor = independence_floor(np.bincount(a, weights=counts, minlength=k_a),
                               np.bincount(b, weights=counts, minlength=k_b), n)
    floor = min(floor, h_b)
    span = h_b - floor
    redundancy = float(np.clip((mi - floor) / span, 0.0, 1.0)) if span > 1e-12 else float("nan")
    return {
        "frames": n, "h_a": h_a, "h_b": h_b, "h_ab": h_ab, "mi": mi, "mi_floor": floor,
        # I / sqrt(H_a H_b) of the plug-in values (Strehl & Ghosh's NMI), biased up like the MI.
        "nmi": mi / math.sqrt(h_a * h_b) if h_a > 0 and h_b > 0 else 0.0,
        "redundancy": redundancy,
        # Share of H(b) that the independence floor already takes: near 1 means too few frames to tell.
        "resolution": floor / h_b if h_b > 0 else float("nan"),
    }


def spectrum_from_moments(count: int, total: np.ndarray, outer: np.ndarray) -> np.ndarray:
    """Covariance eigenvalues (descending) from the sums a streaming pass keeps: n, sum x, sum x x^T."""
    if count < 2:
        return np.zeros(total.shape[0])
    mean = total / count
    cov = (outer - count * np.outer(mean, mean)) / (count - 1)
    cov = (cov + cov.T) / 2
    return np.sort(np.clip(np.linalg.eigvalsh(cov), 0.0, None))[::-1]
