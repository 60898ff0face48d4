"""Family-aware numbers of one layer, from its code counts and the quantizer's `family_params()`.

- Several tables per layer (vector-quantize-pytorch heads with separate codebooks, groups; FSQ/LFQ
  `num_codebooks`): usage per table, and the layer's utilization, perplexity and entropy are the mean over
  its tables, never one pooled count over all of them (vector-quantize-pytorch #109: pooling K codes of
  h heads reads as one codebook of h*K and mixes the heads' distributions);
- FSQ: per table, the grid's cells used and each dimension's level histogram (`grid.py`);
- LFQ: per table, each bit's balance, entropy, deadness and the bits' correlations (`bits.py`).
Everything comes from the counts, so it is as mergeable as they are.
"""

from __future__ import annotations

import numpy as np

from .bits import bit_stats
from .grid import grid_stats
from .stats import usage_metrics


def split_tables(counts: np.ndarray, tables: int) -> list[np.ndarray]:
    """A layer's counts cut into its `tables` tables (code t*K + k is table t's code k)."""
    counts = np.asarray(counts)
    if tables <= 1 or counts.size % tables:
        return [counts]
    return list(counts.reshape(tables, -1))


def layer_usage(counts: np.ndarray, tables: int) -> dict:
    """used (summed over tables), and utilization, perplexity and entropy as the mean over tables."""
    parts = split_tables(counts, tables)
    if len(parts) == 1:
        return usage_metrics(np.asarray(counts))
    metrics = [usage_metrics(p) for p in parts]
    return {"used": int(sum(m["used"] for m in metrics)),
            **{name: float(np.mean([m[name] for m in metrics])) for name in ("utilization", "perplexity", "entropy")}}


def layer_family(counts: np.ndarray, params: dict) -> dict:
    """The family section of a layer's report (empty for a one-table learned codebook)."""
    family = params.get("family", "vq")
    parts = split_tables(counts, int(params.get("tables", 1)))
    out: dict = {}
    if len(parts) > 1:
        names = params.get("table_names") or [f"table {t}" for t in range(len(parts))]
        out["tables"] = [dict(usage_metrics(p), name=names[t], table=t, codes=int(p.size), frames=int(p.sum()))
                         for t, p in enumerate(parts)]
    if family == "fsq" and params.get("levels"):
        out["grids"] = [grid_stats(p, params["levels"]) for p in parts]
    elif family == "lfq" and params.get("bits"):
        out["bit_stats"] = [bit_stats(p, int(params["bits"])) for p in parts]
    if out:
        out["family"] = family
    return out


def family_lines(layer: int, section: dict) -> list[str]:
    """Plain-text lines for the terminal table: per table, per FSQ dimension, per LFQ bit summary."""
    lines = []
    for t in section.get("tables", []):
        lines.append(f"{layer:>5} {t['name']}: {t['used']}/{t['codes']} used ({t['utilization']:.1%}), "
                     f"perplexity {t['perplexity']:.1f}")
    for grid in section.get("grids", []):
        dims = " ".join(f"{d['levels_used']}/{d['levels']}:{d['bits']:.1f}b" for d in grid["dims"])
        lines.append(f"{layer:>5} grid {grid['cells_used']}/{grid['cells']} cells; per dim levels used:bits {dims}")
    for bits in section.get("bit_stats", []):
        ones = bits["ones"]
        dead = ", ".join(str(b) for b in bits["dead"]) or "none"
        pair = bits["most_correlated"]
        lines.append(f"{layer:>5} bits: ones {min(ones):.2f}-{max(ones):.2f}, dead {dead}, max |corr| "
                     f"{bits['max_abs_correlation']:.2f}" + (f" (bits {pair[0]}, {pair[1]})" if pair else ""))
    return lines
