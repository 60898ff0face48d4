"""The exported tables, as typed rows: numbers stay numbers (no "66 / 512", "12.9%" or "✖ collapsed"),
so a spreadsheet or pandas reads them as they are. The GUI's CSV exports and `Everything to a folder`
write these."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..io import atomic_path
from .session import DeadCodeTable, Session, Snapshot, snapshot_health

OVERVIEW_HEADER = ["layer", "codebook_size", "used", "utilization", "perplexity", "entropy", "dead", "ema_dead",
                   "residual_mean", "rel_error", "snr_db", "health", "verdict"]
DEAD_CODES_HEADER = ["layer", "code", "uses", "unused", "ema_dead", "ema_size", "norm", "nearest_live",
                     "distance", "died_at_step"]
USAGE_HEADER = ["layer", "code", "uses", "share", "rank", "dead", "ema_size", "norm"]


def _number(value):
    """A float for the CSV, or "" where there is none (NaN, infinite, missing)."""
    if value is None:
        return ""
    value = float(value)
    return value if np.isfinite(value) else ""


def _words(label: str) -> str:
    """A health label without its mark ("✖ collapsed" -> "collapsed"; "–" -> "")."""
    if label and not label[0].isalnum():
        label = label[1:]
    return label.strip()


def overview_rows(snapshot: Snapshot) -> list[list]:
    """One row per layer: what the Overview table shows, typed. `health` is ok / warn / bad / unknown,
    `verdict` the label beside it ("collapsed", "healthy (so far)", ...)."""
    rows = []
    for index, rep in enumerate(snapshot.result.layers):
        health = snapshot_health(snapshot, index)
        ema = "" if rep.ema_dead_codes is None else len(rep.ema_dead_codes)
        snr = "inf" if rep.snr_db is None else _number(rep.snr_db)
        rows.append([rep.layer, rep.codebook_size, rep.used, _number(rep.utilization), _number(rep.perplexity),
                     _number(rep.entropy), len(rep.dead_codes), ema, _number(rep.residual_norm.get("mean")),
                     _number(rep.rel_error), snr, health.level, _words(health.label)])
    return rows


def dead_code_rows(table: DeadCodeTable, died_at: dict | None = None, order: np.ndarray | None = None) -> list[list]:
    """One row per code of a dead-code table (in `order`, default by code)."""
    rows = []
    for i in (range(len(table)) if order is None else order):
        code = int(table.codes[i])
        ema = "" if table.ema_size is None else _number(table.ema_size[i])
        neighbour = int(table.neighbour[i])
        died = "" if not died_at or (table.layer, code) not in died_at else died_at[(table.layer, code)]
        rows.append([table.layer, code, int(table.counts[i]), bool(table.unused[i]), bool(table.ema_dead[i]), ema,
                     _number(table.norm[i]), "" if neighbour < 0 else neighbour,
                     "" if neighbour < 0 else _number(table.distance[i]), died])
    return rows


def usage_rows(session: Session, snapshot: Snapshot, layer: int) -> list[list]:
    """One row per code of `layer`: uses, share of frames, rank by use (1 = most used), dead."""
    counts = snapshot.counts[layer]
    total = max(1, int(counts.sum()))
    order = np.argsort(-counts, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(1, counts.size + 1)
    ema = session.ema_sizes[layer] if session.ema_sizes is not None else None
    norms = session.norms[layer]
    return [[layer, code, int(counts[code]), float(counts[code]) / total, int(rank[code]), bool(counts[code] == 0),
             "" if ema is None else _number(ema[code]), _number(norms[code])] for code in range(counts.size)]


def write_csv(path: str | Path, header: list[str], rows) -> None:
    """A CSV file, written atomically (a failure never leaves half a table)."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(header)
            writer.writerows(rows)
