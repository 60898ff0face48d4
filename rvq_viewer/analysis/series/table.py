"""The events of a checkpoint series as numpy columns, and what the timeline derives from them.

- `EventTable`: the events as parallel arrays, so a GUI never keeps hundreds of thousands of `Event`
  objects; `aggregate()` folds them into one mark per (step, layer, kind) with counts and distinct codes
  when there are too many to draw one by one.
- `died_at_steps`: for each code EMA-dead at a reference checkpoint, the step at which it last died.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

EVENT_KINDS = ("died", "revived", "replaced")
KIND_ID = {kind: i for i, kind in enumerate(EVENT_KINDS)}


@dataclass
class EventTable:
    """Events of a series as parallel numpy columns, sorted by (step, layer, kind, code)."""

    steps: np.ndarray          # int64
    layers: np.ndarray         # int32
    codes: np.ndarray          # int64
    kinds: np.ndarray          # int8, index into EVENT_KINDS
    size_before: np.ndarray    # float32 (nan: unknown)
    size_after: np.ndarray     # float32
    jump: np.ndarray           # float32

    def __len__(self) -> int:
        return int(self.steps.size)

    @classmethod
    def empty(cls) -> "EventTable":
        z = np.zeros(0)
        return cls(z.astype(np.int64), z.astype(np.int32), z.astype(np.int64), z.astype(np.int8),
                   z.astype(np.float32), z.astype(np.float32), z.astype(np.float32))

    @classmethod
    def from_events(cls, events) -> "EventTable":
        """From `series.Event`s (or anything with step, layer, code, kind, ema_size_*, jump)."""
        if not events:
            return cls.empty()

        def col(get, dtype):
            return np.fromiter((get(e) for e in events), dtype=dtype, count=len(events))

        nan = float("nan")
        table = cls(col(lambda e: e.step, np.int64), col(lambda e: e.layer, np.int32),
                    col(lambda e: e.code, np.int64), col(lambda e: KIND_ID[e.kind], np.int8),
                    col(lambda e: nan if e.ema_size_before is None else e.ema_size_before, np.float32),
                    col(lambda e: nan if e.ema_size_after is None else e.ema_size_after, np.float32),
                    col(lambda e: nan if e.jump is None else e.jump, np.float32))
        return table.sorted()

    def sorted(self) -> "EventTable":
        order = np.lexsort((self.codes, self.kinds, self.layers, self.steps))
        return EventTable(*(getattr(self, f.name)[order] for f in fields(self)))

    def counts_by_kind(self) -> dict[str, int]:
        found = np.bincount(self.kinds.astype(np.int64), minlength=len(EVENT_KINDS))
        return {kind: int(found[i]) for i, kind in enumerate(EVENT_KINDS)}

    def group_keys(self) -> np.ndarray:
        """One int64 key per event for its (step, layer, kind) group (sortable like the table)."""
        return (self.steps * 1_000_000 + self.layers.astype(np.int64) * 10) + self.kinds

    def aggregate(self) -> "AggregatedEvents":
        """One mark per (step, layer, kind): how many events and how many distinct codes."""
        if len(self) == 0:
            z = np.zeros(0, dtype=np.int64)
            return AggregatedEvents(z, z.astype(np.int32), z.astype(np.int8), z, z, z)
        keys = self.group_keys()
        starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
        ends = np.r_[starts[1:], len(keys)]
        counts = ends - starts
        # distinct codes: the table is sorted by code inside each group, so count code changes
        new_code = np.r_[True, (self.codes[1:] != self.codes[:-1]) | (keys[1:] != keys[:-1])]
        distinct = np.add.reduceat(new_code.astype(np.int64), starts)
        return AggregatedEvents(self.steps[starts], self.layers[starts], self.kinds[starts], counts,
                                distinct, starts)

    def group(self, step: int, layer: int, kind: int | str) -> np.ndarray:
        """Row indices of the events of one (step, layer, kind) mark."""
        kind = KIND_ID[kind] if isinstance(kind, str) else int(kind)
        keys = self.group_keys()
        key = int(step) * 1_000_000 + int(layer) * 10 + kind
        lo, hi = np.searchsorted(keys, key, "left"), np.searchsorted(keys, key, "right")
        return np.arange(lo, hi)

    def codes_at(self, step: int, layer: int, kind: int | str) -> np.ndarray:
        """Distinct codes of one mark, ascending."""
        return np.unique(self.codes[self.group(step, layer, kind)])

    def of_code(self, layer: int, code: int) -> np.ndarray:
        """Row indices of every event of one code, by step."""
        return np.flatnonzero((self.layers == layer) & (self.codes == code))

    def describe_row(self, row: int) -> str:
        kind = EVENT_KINDS[int(self.kinds[row])]
        text = f"step {int(self.steps[row])}: {kind}"
        before, after, jump = (float(v[row]) for v in (self.size_before, self.size_after, self.jump))
        if not math.isnan(before) and not math.isnan(after):
            text += f" (EMA size {before:.3g} → {after:.3g})"
        if not math.isnan(jump):
            text += f", moved {jump:.2g}× the median code spacing"
        return text


@dataclass
class AggregatedEvents:
    """Marks of `EventTable.aggregate()`: parallel arrays, one entry per (step, layer, kind)."""

    steps: np.ndarray
    layers: np.ndarray
    kinds: np.ndarray
    counts: np.ndarray        # events in the mark
    distinct: np.ndarray      # distinct codes in the mark
    first_row: np.ndarray     # the mark's first row in the EventTable

    def __len__(self) -> int:
        return int(self.steps.size)


def summary_arrays(summaries, steps: list[int], n_q: int) -> dict[str, np.ndarray]:
    """`series.Summary` objects -> [S, L] float arrays 'ema_dead', 'used', 'perplexity' (nan: unknown)."""
    index = {s: i for i, s in enumerate(steps)}
    out = {name: np.full((len(steps), n_q), np.nan) for name in ("ema_dead", "used", "perplexity")}
    for s in summaries:
        i = index.get(s.step)
        if i is None or not 0 <= s.layer < n_q:
            continue
        for name in out:
            value = getattr(s, name)
            if value is not None:
                out[name][i, s.layer] = float(value)
    return out


def died_at_steps(dead: np.ndarray, steps: list[int] | np.ndarray,
                  reference: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """When did each code that is dead at checkpoint `reference` die?

    `dead` is [S, K] bool (EMA-dead per checkpoint, steps ascending). Returns (codes, step) for every
    code dead at `reference`: the step of the checkpoint that starts its current run of deadness.
    A code dead since the first checkpoint gets the first step (it died then or earlier).
    """
    dead = np.asarray(dead, dtype=bool)
    steps = np.asarray(steps)
    r = reference % dead.shape[0]
    window = dead[: r + 1]
    onset = window.copy()
    onset[1:] &= ~window[:-1]
    codes = np.flatnonzero(window[r])
    if codes.size == 0:
        return codes, np.zeros(0, dtype=np.int64)
    # last onset at or before r, per code: flip rows, first True
    last = r - np.argmax(onset[::-1][:, codes], axis=0)
    return codes, steps[last].astype(np.int64)


def died_at_mapping(dead_masks: list[np.ndarray], steps, reference: int = -1) -> dict[tuple[int, int], int]:
    """`died_at_steps` for every layer, as {(layer, code): step}."""
    out: dict[tuple[int, int], int] = {}
    for layer, mask in enumerate(dead_masks):
        codes, when = died_at_steps(mask, steps, reference)
        out.update({(layer, int(c)): int(s) for c, s in zip(codes, when)})
    return out
