"""A monitored training run as numbers: each logging window summarised with the audit's own statistics,
and the diagnosis over time (when a layer first met a collapse rule, and whether it recovered).

A window's code counts become an `AuditResult` through the audit's `build_result` (so used codes,
utilization and perplexity are `usage_metrics`, the one implementation), and its per-layer health is
the diagnosis' usage rules (`streaming_verdicts`: the rules and thresholds of `analysis/diagnosis/`).
A run records no residuals, so the residual and stage rules have nothing to say about it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..quant import DeadCodeRule, Quantizer
from .audit import AuditAccumulator, AuditResult, build_result
from .diagnosis import SEVERITIES, streaming_verdicts
from .diagnosis.verdict import severity_rank


def run_quantizer(fmt: str, sizes: list[int], codebooks: list[np.ndarray] | None,
                  ema_sizes: list[np.ndarray] | None, rule: DeadCodeRule | None) -> Quantizer:
    """A window's quantizer: the codebooks of its snapshot and the EMA sizes at its end. Without a
    snapshot (a run that logged codes only) the tables are K x 1 zeros: enough to describe the layers, not
    to judge their geometry (callers then diagnose without a quantizer)."""
    tables = [torch.from_numpy(np.asarray(c, dtype=np.float32)) for c in codebooks] if codebooks is not None \
        else [torch.zeros(k, 1) for k in sizes]
    cluster = None
    if ema_sizes is not None and all(e is not None for e in ema_sizes):
        cluster = [torch.from_numpy(np.asarray(e, dtype=np.float32)) for e in ema_sizes]
    return Quantizer(format=fmt, codebooks=tables, cluster_size=cluster, dead_code_rule=rule or DeadCodeRule())


def window_result(counts: list[np.ndarray], quantizer: Quantizer) -> AuditResult:
    """The audit numbers of one window's code counts (no residuals: a run records none)."""
    acc = AuditAccumulator(quantizer.codebook_sizes)
    for layer, c in zip(acc.layers, counts):
        layer.counts = np.asarray(c, dtype=np.int64).copy()
    acc.input.count = max((int(c.sum()) for c in counts), default=0)
    return build_result(acc, quantizer)


@dataclass
class WindowSummary:
    """One window of the run (all ranks merged), per layer."""

    step_from: int
    step_to: int
    steps: int
    frames: list[int]
    used: list[int]
    utilization: list[float]
    perplexity: list[float]
    ema_dead: list[int | None]
    severity: list[str]                 # worst usage verdict of the layer in this window
    ranks: int = 1

    def rows(self) -> list[dict]:
        """The window's per-layer rows, as `rvq-viewer runs --json` writes them."""
        return [{"layer": i, "step_from": self.step_from, "step_to": self.step_to, "frames": self.frames[i],
                 "used": self.used[i], "utilization": self.utilization[i], "perplexity": self.perplexity[i],
                 "ema_dead": self.ema_dead[i], "severity": self.severity[i], "ranks": self.ranks}
                for i in range(len(self.frames))]


def summarize_window(step_from: int, step_to: int, steps: int, result: AuditResult,
                     ema_dead: list[int | None], ranks: int = 1) -> WindowSummary:
    worst = ["ok"] * len(result.layers)
    for verdict in streaming_verdicts(result):
        if verdict.layer is not None and severity_rank(verdict.severity) > severity_rank(worst[verdict.layer]):
            worst[verdict.layer] = verdict.severity
    layers = result.layers
    return WindowSummary(step_from, step_to, steps, [int(r.counts.sum()) for r in layers], [r.used for r in layers],
                         [r.utilization for r in layers], [r.perplexity for r in layers], list(ema_dead), worst, ranks)


@dataclass
class LayerHistory:
    """Diagnosis over time of one layer."""

    layer: int
    first_collapse_step: int | None = None     # step_to of the first window that met a collapse rule
    recovered_step: int | None = None          # step_from of the first healthy window after the last collapse
    collapsed_now: bool = False                # the newest window meets a collapse rule
    collapsed_windows: int = 0

    def to_dict(self) -> dict:
        return {"layer": self.layer, "first_collapse_step": self.first_collapse_step,
                "recovered_step": self.recovered_step, "collapsed_now": self.collapsed_now,
                "collapsed_windows": self.collapsed_windows}


def layer_histories(windows: list[WindowSummary], n_q: int) -> list[LayerHistory]:
    """When each layer first met a collapse rule and whether (from which step) it recovered."""
    out = [LayerHistory(layer) for layer in range(n_q)]
    for history in out:
        last_collapse = None
        for index, w in enumerate(windows):
            if w.severity[history.layer] == "collapse":
                history.collapsed_windows += 1
                last_collapse = index
                if history.first_collapse_step is None:
                    history.first_collapse_step = w.step_to
        if last_collapse is not None:
            history.collapsed_now = last_collapse == len(windows) - 1
            if not history.collapsed_now:
                history.recovered_step = windows[last_collapse + 1].step_from
    return out


@dataclass
class RankWindows:
    """Windows of several ranks gathered by the step that ends them (ranks of one run share boundaries)."""

    groups: dict[int, list[tuple[int, int]]] = field(default_factory=dict)   # step_to -> [(rank, window id)]

    def add(self, rank: int, window: int, step_to: int) -> None:
        members = self.groups.setdefault(int(step_to), [])
        if (rank, window) not in members:
            members.append((rank, window))
            members.sort()

    def ordered(self) -> list[tuple[int, list[tuple[int, int]]]]:
        return sorted(self.groups.items())


def merge_counts(parts: list[list[np.ndarray]]) -> list[np.ndarray]:
    """Per-layer counts of one window summed over ranks."""
    return [np.sum([p[layer] for p in parts], axis=0) for layer in range(len(parts[0]))]


__all__ = ["LayerHistory", "RankWindows", "SEVERITIES", "WindowSummary", "layer_histories", "merge_counts",
           "run_quantizer", "summarize_window", "window_result"]
