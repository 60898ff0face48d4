"""The numbers of an audit, per layer, as the JSON report and the table on stdout show them.

Per-code data stay numpy arrays (a snapshot of a K = 65,536 x 8 audit is built every 80 ms while the GUI
streams); lists are made only when JSON is written."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from ...io.outputs import atomic_write_text
from ...quant import Quantizer
from .family import family_lines, layer_family, layer_usage
from .stats import AuditAccumulator


@dataclass(eq=False)
class LayerReport:
    layer: int
    counts: np.ndarray                  # int64 [K] frames per code
    used: int
    utilization: float
    perplexity: float
    entropy: float
    dead_codes: np.ndarray              # int64 codes unused on these features
    ema_dead_codes: np.ndarray | None   # int64 codes the checkpoint's EMA statistics call dead
    residual_norm: dict
    rel_error: float
    snr_db: float | None
    # Family-aware numbers (`family.layer_family`): per-table usage, FSQ level histograms, LFQ bit
    # statistics; plain JSON types. Empty for a one-table learned codebook.
    family: dict = field(default_factory=dict)

    @property
    def codebook_size(self) -> int:
        return int(self.counts.size)

    def to_dict(self) -> dict:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in ("counts", "dead_codes", "ema_dead_codes"):
            if data[name] is not None:
                data[name] = np.asarray(data[name]).tolist()
        return data


@dataclass
class AuditResult:
    quantizer: dict
    frames: int
    layers: list[LayerReport]
    input_norm: dict = field(default_factory=dict)
    complete: bool = True
    ema_dead_rule: str = ""
    sources: list[str] = field(default_factory=list)
    # Joint code histograms of consecutive layers, when the audit gathered them; not in the JSON.
    pairs: object = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "pairs"}
        data["layers"] = [layer.to_dict() for layer in self.layers]
        return _finite(data)

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    def write_json(self, path: str | Path) -> None:
        atomic_write_text(path, self.to_json())

    def table(self) -> str:
        head = (f"{'layer':>5} {'used/K':>13} {'util':>6} {'perplexity':>10} {'entropy':>7} {'dead':>6} "
                f"{'ema-dead':>8} {'resid':>9} {'rel.err':>8} {'SNR dB':>7}")
        rows = [head, "-" * len(head)]
        for r in self.layers:
            ema = "-" if r.ema_dead_codes is None else str(len(r.ema_dead_codes))
            snr = "inf" if r.snr_db is None else f"{r.snr_db:.2f}"
            rows.append(f"{r.layer:>5} {f'{r.used}/{r.codebook_size}':>13} {r.utilization:>6.1%} "
                        f"{r.perplexity:>10.1f} {r.entropy:>7.3f} {len(r.dead_codes):>6} {ema:>8} "
                        f"{r.residual_norm['mean']:>9.4g} {r.rel_error:>8.4f} {snr:>7}")
        for r in self.layers:
            rows.extend(family_lines(r.layer, r.family))
        return "\n".join(rows)


def build_result(acc: AuditAccumulator, quantizer: Quantizer, complete: bool = True,
                 sources: list[str] | None = None) -> AuditResult:
    """Turn accumulated sums into per-layer metrics."""
    input_sq = acc.input.sum_sq
    params = quantizer.family_params()
    layers = []
    for index, layer in enumerate(acc.layers):
        usage = layer_usage(layer.counts, int(params.get("tables", 1)))
        ema_dead = quantizer.ema_dead_codes(index) if index < quantizer.n_q else None
        rel_error = layer.residual.sum_sq / input_sq if input_sq > 0 else float("nan")
        snr = None if rel_error == 0 else (-10 * math.log10(rel_error) if rel_error == rel_error else float("nan"))
        layers.append(LayerReport(
            layer=index, counts=layer.counts.copy(), dead_codes=np.flatnonzero(layer.counts == 0),
            ema_dead_codes=None if ema_dead is None else ema_dead.cpu().numpy().astype(np.int64),
            residual_norm=layer.residual.summary(), rel_error=rel_error, snr_db=snr,
            family=layer_family(layer.counts, params), **usage))
    summary = quantizer.summary()
    described = {k: summary[k] for k in ("format", "n_q", "codebook_size", "dim")}
    # Per-layer sizes and rates, for formats where layers differ (SNAC levels, per-layer K).
    described.update(codebook_sizes=quantizer.codebook_sizes, layer_strides=list(quantizer.layer_strides))
    described.update(params)   # family, tables (and levels / bits ...): what the family rules need
    return AuditResult(quantizer=described,
                       frames=acc.frames, layers=layers, input_norm=acc.input.summary(), complete=complete,
                       ema_dead_rule=quantizer.dead_code_rule.describe() if quantizer.has_ema else "",
                       sources=sources or [], pairs=acc.pairs)


def _finite(obj):
    """JSON has no NaN: write null instead."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj
