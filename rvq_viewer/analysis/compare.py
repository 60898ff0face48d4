"""Compare two audits side by side: two quantizers (two checkpoints of one run, or two runs) on features,
or one quantizer on two feature sets. Qt-free.

`compare(result_a, result_b, quantizer_a, quantizer_b)` gives, per layer,
- the metric deltas (B - A) of utilization, perplexity, dead codes, residual error and SNR;
- both usage vectors, for histograms on one axis (`rank_frequency` normalises them by frames);
- each code of A matched to its nearest code of B (index, distance), and B's codes back to A,
  with the distances also in units of A's median nearest-neighbour spacing;
- one 2-D PCA projection fitted once on the centroids of both (used codes where usage is known),
  so the two sets share axes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from ..quant import Quantizer, nearest_neighbours
from .audit import AuditResult, LayerReport
from .pca import PcaProjection

METRICS = ("utilization", "used", "perplexity", "entropy", "dead", "ema_dead", "rel_error", "snr_db",
           "residual_mean")
"""Per-layer numbers compared; `dead` and `ema_dead` are counts."""
HIGHER_IS_BETTER = {"utilization": True, "used": True, "perplexity": True, "entropy": True, "dead": False,
                    "ema_dead": False, "rel_error": False, "snr_db": True, "residual_mean": False}
CLOSE_MATCH = 0.5
"""A code of A has a close match in B when B has a code nearer than half of A's median nearest-neighbour
distance: closer than A's own codes are to each other, so the two codes stand for the same region."""


def layer_metrics(report: LayerReport) -> dict:
    return {"utilization": report.utilization, "used": report.used, "perplexity": report.perplexity,
            "entropy": report.entropy, "dead": len(report.dead_codes),
            "ema_dead": None if report.ema_dead_codes is None else len(report.ema_dead_codes),
            "rel_error": report.rel_error, "snr_db": report.snr_db,
            "residual_mean": report.residual_norm.get("mean")}


@dataclass
class LayerDelta:
    layer: int
    a: dict
    b: dict
    delta: dict     # b - a, None where either side has no value


@dataclass
class CodeMatch:
    """A's codes matched to their nearest code in B, and B's back to A."""

    layer: int
    index: np.ndarray            # [K_a] nearest code of B for each code of A
    distance: np.ndarray         # [K_a] Euclidean distance to it
    reverse_index: np.ndarray    # [K_b] nearest code of A for each code of B
    reverse_distance: np.ndarray
    scale: float                 # A's median nearest-neighbour distance (the unit of `relative`)
    same_index_distance: np.ndarray | None = None   # |A_k - B_k| when both have K codes (one run's drift)

    @property
    def relative(self) -> np.ndarray:
        return self.distance / self.scale if self.scale > 0 else np.full_like(self.distance, np.nan)

    def summary(self) -> dict:
        mutual = int((self.reverse_index[self.index] == np.arange(self.index.size)).sum())
        close = self.distance < CLOSE_MATCH * self.scale if self.scale > 0 else self.distance == 0
        out = {"codes_a": int(self.index.size), "codes_b": int(self.reverse_index.size),
               "median_distance": float(np.median(self.distance)) if self.distance.size else float("nan"),
               "median_relative": float(np.median(self.relative)) if self.distance.size else float("nan"),
               "scale": self.scale, "close_fraction": float(close.mean()) if close.size else 0.0,
               "mutual_nearest": mutual,
               "b_codes_unmatched": int(self.reverse_index.size - np.unique(self.index).size)}
        if self.same_index_distance is not None:
            out["same_index_median_distance"] = float(np.median(self.same_index_distance))
            out["same_index_unchanged"] = int((self.same_index_distance == 0).sum())
        return out


@dataclass
class Projection:
    """A 2-D PCA fitted once on both centroid sets, so the two share axes."""

    layer: int
    pca: PcaProjection
    a: np.ndarray              # [K_a, 2]
    b: np.ndarray              # [K_b, 2]
    fitted_on: str             # "used codes" or "all codes"

    @property
    def components(self) -> np.ndarray:
        """[2, D] principal axes."""
        return self.pca.axes.T

    @property
    def explained(self) -> np.ndarray:
        return self.pca.explained

    def transform(self, x: np.ndarray) -> np.ndarray:
        return self.pca.transform(x)


@dataclass
class Comparison:
    kind: str                                  # "quantizers", "features" (one quantizer) or "audits"
    label_a: str
    label_b: str
    frames_a: int
    frames_b: int
    layers: list[LayerDelta]
    usage_a: list[np.ndarray]
    usage_b: list[np.ndarray]
    matches: list[CodeMatch | None]
    projections: list[Projection | None]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-ready: metrics, deltas and match summaries (not the per-code arrays)."""
        return _finite({
            "kind": self.kind, "label_a": self.label_a, "label_b": self.label_b,
            "frames_a": self.frames_a, "frames_b": self.frames_b,
            "layers": [{"layer": d.layer, "a": d.a, "b": d.b, "delta": d.delta} for d in self.layers],
            "matches": [None if m is None else m.summary() for m in self.matches],
            "projections": [None if p is None else {"explained": p.explained.tolist(), "fitted_on": p.fitted_on}
                            for p in self.projections],
            "notes": self.notes})

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    def table(self) -> str:
        head = (f"{'layer':>5} {'util A':>7} {'util B':>7} {'ppl A':>7} {'ppl B':>7} {'dead A':>6} {'dead B':>6} "
                f"{'SNR A':>6} {'SNR B':>6} {'match':>6}")
        rows = [head, "-" * len(head)]
        for d, m in zip(self.layers, self.matches):
            close = "-" if m is None else f"{m.summary()['close_fraction']:.0%}"
            snr = lambda v: "inf" if v is None else f"{v:.2f}"  # noqa: E731
            rows.append(f"{d.layer:>5} {d.a['utilization']:>7.1%} {d.b['utilization']:>7.1%} "
                        f"{d.a['perplexity']:>7.1f} {d.b['perplexity']:>7.1f} {d.a['dead']:>6} {d.b['dead']:>6} "
                        f"{snr(d.a['snr_db']):>6} {snr(d.b['snr_db']):>6} {close:>6}")
        return "\n".join(rows)


def rank_frequency(counts) -> np.ndarray:
    """Usage shares sorted from the most used code down (sums to 1): comparable across frame counts."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    return np.sort(counts)[::-1] / total if total > 0 else np.zeros_like(counts)


def _same_tables(qa: Quantizer, qb: Quantizer) -> bool:
    if qa is qb:
        return True
    if qa.codebook_sizes != qb.codebook_sizes or qa.n_q != qb.n_q:
        return False
    return all(torch.equal(a.cpu(), b.cpu()) for a, b in zip(qa.codebooks, qb.codebooks))


def match_codes(table_a, table_b, layer: int = 0, should_stop: Callable[[], bool] | None = None) -> CodeMatch:
    """Nearest code of B for each code of A (and back), with A's spacing as the unit."""
    a = torch.as_tensor(np.asarray(table_a) if not isinstance(table_a, torch.Tensor) else table_a).float().cpu()
    b = torch.as_tensor(np.asarray(table_b) if not isinstance(table_b, torch.Tensor) else table_b).float().cpu()
    index, distance = nearest_neighbours(a, b, should_stop=should_stop)
    reverse_index, reverse_distance = nearest_neighbours(b, a, should_stop=should_stop)
    _, own = nearest_neighbours(a, should_stop=should_stop)
    finite = own[np.isfinite(own)]
    scale = float(np.median(finite)) if finite.size else float("nan")
    same = None
    if a.shape == b.shape:
        same = (a.double() - b.double()).pow(2).sum(dim=1).sqrt().numpy()
    return CodeMatch(layer, index, distance, reverse_index, reverse_distance, scale, same)


def joint_projection(table_a, table_b, layer: int = 0, used_a: np.ndarray | None = None,
                     used_b: np.ndarray | None = None) -> Projection:
    """PCA to 2-D fitted once on both sets (on their used codes when given and >= 3 of them)."""
    a = np.asarray(table_a.detach().cpu() if isinstance(table_a, torch.Tensor) else table_a, dtype=np.float32)
    b = np.asarray(table_b.detach().cpu() if isinstance(table_b, torch.Tensor) else table_b, dtype=np.float32)
    fit, fitted_on = np.concatenate([a, b]), "all codes"
    if used_a is not None and used_b is not None:
        chosen = np.concatenate([a[used_a], b[used_b]])
        if chosen.shape[0] >= 3:
            fit, fitted_on = chosen, "used codes"
    pca = PcaProjection.fit(fit)
    return Projection(layer, pca, pca.transform(a), pca.transform(b), fitted_on)


def compare(result_a: AuditResult, result_b: AuditResult, quantizer_a: Quantizer | None = None,
            quantizer_b: Quantizer | None = None, label_a: str = "A", label_b: str = "B",
            should_stop: Callable[[], bool] | None = None) -> Comparison:
    """Side-by-side numbers of two audits (see the module docstring).

    `should_stop` is asked between distance blocks of the code matching (seconds per layer at large K);
    when it says so, CancelledError is raised."""
    notes = []
    n = min(len(result_a.layers), len(result_b.layers))
    if len(result_a.layers) != len(result_b.layers):
        notes.append(f"A has {len(result_a.layers)} layers and B {len(result_b.layers)}: "
                     f"the first {n} are compared")
    if quantizer_a is not None and quantizer_b is not None:
        kind = "features" if _same_tables(quantizer_a, quantizer_b) else "quantizers"
    else:
        kind = "audits"
    layers, matches, projections = [], [], []
    for i in range(n):
        ra, rb = result_a.layers[i], result_b.layers[i]
        ma, mb = layer_metrics(ra), layer_metrics(rb)
        delta = {k: (None if ma[k] is None or mb[k] is None else mb[k] - ma[k]) for k in METRICS}
        layers.append(LayerDelta(i, ma, mb, delta))
        match = projection = None
        if quantizer_a is not None and quantizer_b is not None and i < quantizer_a.n_q and i < quantizer_b.n_q:
            ta, tb = quantizer_a.codebooks[i].cpu(), quantizer_b.codebooks[i].cpu()
            if ta.shape[1] != tb.shape[1]:
                notes.append(f"layer {i}: codebook dimensions differ ({ta.shape[1]} vs {tb.shape[1]}): "
                             f"no matching or joint projection")
            else:
                match = match_codes(ta, tb, i, should_stop)
                ca, cb = np.asarray(ra.counts), np.asarray(rb.counts)
                used_a = np.flatnonzero(ca > 0) if ca.size == ta.shape[0] else None
                used_b = np.flatnonzero(cb > 0) if cb.size == tb.shape[0] else None
                projection = joint_projection(ta, tb, i, used_a, used_b)
        matches.append(match)
        projections.append(projection)
    return Comparison(kind, label_a, label_b, result_a.frames, result_b.frames, layers,
                      [np.asarray(r.counts) for r in result_a.layers[:n]],
                      [np.asarray(r.counts) for r in result_b.layers[:n]], matches, projections, notes)


def _finite(obj):
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    return obj
