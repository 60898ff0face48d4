"""The monitor's background writer: turns each closed window into rows of the run database.

The training thread only copies (counts, and the quantizer module's state dict) off the device and
puts a `WindowItem` on a bounded queue; this thread waits for the copies, reads the state the way
rvq-viewer reads a checkpoint (`io.quantizer_from_state`), finds the window's events with the series'
own rule (`analysis.series.layer_events`: EMA sizes crossing the dead-code threshold, centroids that
jump), and commits the window in one transaction. It runs single-threaded and niced, and it never
raises into training: a failure is said once on stderr and the next window is tried again.
"""

from __future__ import annotations

import math
import queue
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..analysis.series import code_spacing, layer_events
from ..io.run_db import EventRecord, LayerRecord, RunWriter
from ..quant import Quantizer
from ..runtime import lower_thread_priority, work_alone
from .counting import CountsCopy


@dataclass
class StateCopy:
    """A module's state dict on its way to the host (valid once `ready()` returns)."""

    tensors: dict[str, torch.Tensor]
    event: object = None

    def ready(self) -> dict[str, torch.Tensor]:
        if self.event is not None:
            self.event.synchronize()
        return self.tensors


def copy_state(module: torch.nn.Module) -> StateCopy:
    """The module's tensors copied to the host without blocking the calling thread."""
    out, cuda = {}, False
    for key, value in module.state_dict().items():
        if not isinstance(value, torch.Tensor):
            continue
        if value.device.type == "cuda":
            out[key] = value.detach().to("cpu", non_blocking=True)
            cuda = True
        elif value.device.type == "cpu":
            out[key] = value.detach().clone()
        else:
            out[key] = value.detach().to("cpu")
    event = None
    if cuda:
        event = torch.cuda.Event()
        event.record()
    return StateCopy(out, event)


@dataclass
class WindowItem:
    step_from: int
    step_to: int
    steps: int
    counts: CountsCopy | None                  # None: an item that only carries drops
    state: StateCopy | None = None
    snapshot: bool = False
    drops: list[tuple[int, int]] = field(default_factory=list)   # windows dropped since the last one queued


STOP = object()
DROP_REASON = "the monitor's queue was full (the writer fell behind)"


class Writer(threading.Thread):
    """Owns the run database of one rank; fed through `queue` (bounded: the monitor drops rather than
    wait). `build(state)` reads a state dict into a Quantizer (None: counts only)."""

    def __init__(self, path: Path, meta: dict, layers: list[tuple[int, int | None]],
                 build: Callable[[dict], Quantizer] | None, queue_size: int, events: bool = True):
        super().__init__(name="rvq-monitor-writer", daemon=True)
        self.path = path
        self.meta = meta
        self.layers = layers
        self.build = build
        self.events = events
        self.queue: queue.Queue = queue.Queue(maxsize=max(1, int(queue_size)))
        self.sizes = [k for k, _ in layers]
        self.previous: Quantizer | None = None
        self.scales: list[float | None] = [None] * len(layers)
        self.written = 0
        self.failures: list[str] = []
        self._said = set()

    # --- the thread ------------------------------------------------------------------------------------
    def run(self) -> None:
        lower_thread_priority()
        work_alone()
        db = None
        try:
            db = RunWriter(self.path, self.meta, self.layers)
        except Exception as exc:  # noqa: BLE001 - said once; the queue is drained so training never waits
            self._fail(f"cannot write {self.path}: {exc}")
        while True:
            item = self.queue.get()
            try:
                if item is STOP:
                    return
                if db is not None:
                    self.write(db, item)
            except Exception as exc:  # noqa: BLE001 - one bad window must not stop the run's record
                self._fail(f"{self.path}: window {item.step_from}..{item.step_to} not written: "
                           f"{type(exc).__name__}: {exc}")
            finally:
                self.queue.task_done()
                if item is STOP and db is not None:
                    db.close()

    def _fail(self, text: str) -> None:
        self.failures.append(text)
        key = text.split(":")[0]
        if key not in self._said:
            self._said.add(key)
            print(f"rvq-viewer monitor: warning: {text}", file=sys.stderr)

    # --- one window ----------------------------------------------------------------------------------------
    def write(self, db: RunWriter, item: WindowItem) -> None:
        if item.counts is None:                      # only drops left to record (at close)
            db.write_drops(item.drops, DROP_REASON)
            return
        counts = item.counts.ready().numpy()
        quantizer = self._quantizer(item)
        records, start = [], 0
        for layer, k in enumerate(self.sizes):
            record = LayerRecord(layer, counts[start:start + k].copy())
            start += k
            if quantizer is not None and quantizer.has_ema and layer < quantizer.n_q:
                record.ema_size = quantizer.cluster_size[layer].cpu().numpy().astype(np.float32)
                record.ema_dead = int(quantizer.ema_dead_codes(layer).numel())
            records.append(record)
        events = self._events(item, quantizer, [r.counts for r in records]) if self.events else []
        codebooks = None
        if quantizer is not None and (item.snapshot or self.written == 0):
            codebooks = [c.detach().cpu().float().numpy() for c in quantizer.codebooks]
        db.write_window(item.step_from, item.step_to, item.steps, records, events, codebooks,
                        invalid=int(counts[start:].sum()))
        db.write_drops(item.drops, DROP_REASON)
        self.written += 1
        if quantizer is not None:
            self.previous = quantizer

    def _quantizer(self, item: WindowItem) -> Quantizer | None:
        if item.state is None or self.build is None:
            return None
        try:
            quantizer = self.build(item.state.ready())
        except Exception as exc:  # noqa: BLE001 - e.g. a layer not yet initialised: counts only this time
            self._fail(f"{self.path}: codebooks not read at step {item.step_to}: {exc}")
            return None
        if quantizer.codebook_sizes != self.sizes:
            self._fail(f"{self.path}: the module's codebooks changed size; counts only from step {item.step_to}")
            return None
        return quantizer

    def _events(self, item: WindowItem, quantizer: Quantizer | None, counts: list[np.ndarray]) -> list[EventRecord]:
        before = self.previous
        if quantizer is None or before is None:
            return []
        out = []
        for layer in range(min(before.n_q, quantizer.n_q)):
            if self.scales[layer] is None or item.snapshot:
                self.scales[layer] = code_spacing(before.codebooks[layer])
            for e in layer_events(item.step_to, layer, before, quantizer, self.scales[layer], counts[layer]):
                out.append(EventRecord(e.step, e.layer, e.code, e.kind, _finite(e.ema_size_before),
                                       _finite(e.ema_size_after), _finite(e.jump)))
        return out


def _finite(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None
