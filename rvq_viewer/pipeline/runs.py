"""A monitored run through the pipeline: read every rank's database, merge the ranks, summarise each
window, diagnose any window, and follow the run while it is written.

    run = open_run("runs/exp1")          # a run directory, or one rank's database file
    run.poll()                           # read what was committed since (call again to follow)
    run.windows[-1]                      # WindowSummary of the newest window (ranks merged)
    run.verdicts_at(-1)                  # the diagnosis of that window, as an audit's
    run.to_dict()                        # what `rvq-viewer runs --json` writes

Reading never writes to the databases. Bad input (no database, a damaged or truncated one, a newer
schema) raises a one-line LoadError naming the file.
"""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..analysis.audit import AuditResult
from ..analysis.diagnosis import Verdict, diagnose
from ..analysis.runs import (LayerHistory, RankWindows, WindowSummary, layer_histories, merge_counts,
                             run_quantizer, summarize_window, window_result)
from ..errors import LoadError
from ..io.run_db import EventRecord, RunReader, WindowRow, run_files
from ..quant import DeadCodeRule, Quantizer


@dataclass
class RunUpdate:
    """What one `poll` found: indices of new or changed windows, and new events and drops."""

    windows: list[int] = field(default_factory=list)
    events: list[EventRecord] = field(default_factory=list)
    drops: int = 0

    def __bool__(self) -> bool:
        return bool(self.windows or self.events or self.drops)


class Run:
    """Every rank's database of one run, merged. `windows[i]` summarises the i-th window by step."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.lock = threading.RLock()        # one reader thread at a time (the app polls and shows windows)
        self.readers = [RunReader(p) for p in run_files(self.path)]
        first = self.readers[0]
        for reader in self.readers[1:]:
            if reader.layers != first.layers:
                raise LoadError(f"not the same quantizer as {first.path.name}: n_q/K/D differ", reader.path)
        self.meta = dict(first.meta)
        self.windows: list[WindowSummary] = []
        self.keys: list[list[tuple[int, int]]] = []     # per window: (reader index, window id) merged in it
        self.events: list[EventRecord] = []
        self.drops: list[tuple[int, int, int, str]] = []
        self._groups = RankWindows()
        self._rows: dict[tuple[int, int], WindowRow] = {}
        self._last_window = [-1] * len(self.readers)
        self._last_event = [-1] * len(self.readers)
        self._seen_events: set[tuple] = set()
        self._drops_seen = [0] * len(self.readers)
        self._snapshots: list[list[tuple[int, int]]] = [[] for _ in self.readers]

    # --- what the run is -----------------------------------------------------------------------------
    @property
    def files(self) -> list[Path]:
        return [r.path for r in self.readers]

    @property
    def codebook_sizes(self) -> list[int]:
        return self.readers[0].codebook_sizes

    @property
    def n_q(self) -> int:
        return len(self.codebook_sizes)

    @property
    def format(self) -> str:
        return str(self.meta.get("format") or self.meta.get("family") or "monitored run")

    @property
    def dead_code_rule(self) -> DeadCodeRule | None:
        rule = self.meta.get("dead_code_rule")
        if not isinstance(rule, dict):
            return None
        try:
            return DeadCodeRule(str(rule.get("kind", "absolute")), float(rule.get("value", 2.0)), str(rule.get("origin", "")))
        except (TypeError, ValueError):
            raise LoadError("the dead-code rule in the run's metadata is damaged", self.readers[0].path) from None

    @property
    def steps(self) -> list[int]:
        return [w.step_to for w in self.windows]

    def describe(self) -> str:
        ranks = f"{len(self.readers)} rank{'s' if len(self.readers) > 1 else ''}"
        span = f"steps {self.windows[0].step_from:,}..{self.windows[-1].step_to:,}" if self.windows else "no window yet"
        sizes = sorted(set(self.codebook_sizes))
        return (f"{self.format}: n_q {self.n_q} × K {'/'.join(f'{k:,}' for k in sizes)}; {len(self.windows):,} windows, "
                f"{span}, {ranks}")

    # --- reading -----------------------------------------------------------------------------------------
    def poll(self) -> RunUpdate:
        """Read what every rank committed since the last poll; summarise new and changed windows."""
        update = RunUpdate()
        touched: set[int] = set()
        for index, reader in enumerate(self.readers):
            reader.refresh()
            for row in reader.windows(self._last_window[index]):
                self._rows[(index, row.id)] = row
                self._groups.add(index, row.id, row.step_to)
                self._last_window[index] = row.id
                touched.add(row.step_to)
            for event_id, event in reader.events(self._last_event[index]):
                self._last_event[index] = event_id
                key = (event.step, event.layer, event.code, event.kind)
                if key not in self._seen_events:
                    self._seen_events.add(key)
                    update.events.append(event)
            drops = reader.drops()
            update.drops += len(drops) - self._drops_seen[index]
            self.drops.extend(drops[self._drops_seen[index]:])
            self._drops_seen[index] = len(drops)
            if touched:
                self._snapshots[index] = reader.snapshot_windows()
        self.events.extend(update.events)
        if touched:
            ordered = self._groups.ordered()
            steps = [step for step, _ in ordered]
            self.keys = [members for _, members in ordered]
            old = {w.step_to: w for w in self.windows}
            self.windows = [old.get(step) for step in steps]
            for step in touched:
                i = bisect.bisect_left(steps, step)
                self.windows[i] = self._summarize(i)
            update.windows = sorted(bisect.bisect_left(steps, s) for s in touched)
        return update

    def _summarize(self, index: int) -> WindowSummary:
        rows = [self._rows[key] for key in self.keys[index]]
        counts, ema_sizes, ema_dead = self.window_data(index)
        quantizer = run_quantizer(self.format, self.codebook_sizes, None, ema_sizes, self.dead_code_rule)
        result = window_result(counts, quantizer)
        return summarize_window(min(r.step_from for r in rows), max(r.step_to for r in rows),
                                max(r.steps for r in rows), result, ema_dead, ranks=len(rows))

    def window_data(self, index: int) -> tuple[list[np.ndarray], list[np.ndarray] | None, list[int | None]]:
        """(counts summed over ranks, EMA sizes and EMA-dead counts of the lowest rank) of window `index`."""
        parts = [self.readers[r].window_layers(w) for r, w in self.keys[index]]
        for (r, w), part in zip(self.keys[index], parts):
            if len(part) != self.n_q:
                raise LoadError(f"window {w} holds {len(part)} of {self.n_q} layers", self.readers[r].path)
        counts = merge_counts([[row.counts for row in part] for part in parts])
        first = parts[0]
        ema = [row.ema_size for row in first] if all(row.ema_size is not None for row in first) else None
        return counts, ema, [row.ema_dead for row in first]

    def snapshot_for(self, index: int) -> tuple[int, list[np.ndarray]] | None:
        """(step, codebooks) of the newest snapshot at or before window `index` (lowest rank first)."""
        step_to = self.windows[index].step_to
        for r, snaps in enumerate(self._snapshots):
            before = [(w, s) for w, s in snaps if s <= step_to]
            if before:
                window, step = before[-1]
                return step, self.readers[r].snapshot(window)
        return None

    def quantizer_at(self, index: int) -> tuple[Quantizer, int | None]:
        """The quantizer of window `index` (codebooks of its snapshot, EMA sizes at its end) and the
        snapshot's step (None: no snapshot; placeholder tables)."""
        _, ema_sizes, _ = self.window_data(index)
        snap = self.snapshot_for(index)
        codebooks = None if snap is None else snap[1]
        return run_quantizer(self.format, self.codebook_sizes, codebooks, ema_sizes, self.dead_code_rule), \
            None if snap is None else snap[0]

    def result_at(self, index: int, quantizer: Quantizer | None = None) -> AuditResult:
        counts, _, _ = self.window_data(index)
        quantizer = quantizer or self.quantizer_at(index)[0]
        result = window_result(counts, quantizer)
        w = self.windows[index]
        result.sources = [f"{p} (steps {w.step_from}..{w.step_to})" for p in self.files]
        return result

    def verdicts_at(self, index: int) -> tuple[AuditResult, list[Verdict], Quantizer, int | None]:
        """The whole diagnosis of window `index`, as an audit's (geometry from its snapshot's codebooks,
        the EMA rules from its EMA sizes; no residual rules: a run records no residuals)."""
        quantizer, snap_step = self.quantizer_at(index)
        result = self.result_at(index, quantizer)
        return result, diagnose(result, quantizer if snap_step is not None else None), quantizer, snap_step

    def histories(self) -> list[LayerHistory]:
        return layer_histories(self.windows, self.n_q)

    def to_dict(self, verdicts: list[Verdict] | None = None) -> dict:
        """The run's summaries, as `rvq-viewer runs --json` writes them."""
        return {"run": str(self.path), "files": [str(p) for p in self.files], "format": self.format,
                "codebook_sizes": self.codebook_sizes, "meta": self.meta,
                "windows": [row for w in self.windows for row in w.rows()],
                "events": [{"step": e.step, "layer": e.layer, "code": e.code, "kind": e.kind,
                            "ema_size_before": e.ema_size_before, "ema_size_after": e.ema_size_after, "jump": e.jump}
                           for e in sorted(self.events, key=lambda e: (e.step, e.layer, e.code, e.kind))],
                "drops": [{"step_from": a, "step_to": b, "windows": n, "reason": why} for a, b, n, why in self.drops],
                "layers": [h.to_dict() for h in self.histories()],
                "verdicts": [v.to_dict() for v in verdicts or []]}

    def close(self) -> None:
        for reader in self.readers:
            reader.close()


def open_run(path: str | Path) -> Run:
    """Open a run directory (or one rank's database) and read everything committed so far."""
    run = Run(path)
    try:
        run.poll()
    except Exception:
        run.close()
        raise
    return run
