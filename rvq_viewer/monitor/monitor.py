"""`CodebookMonitor`: watch the codebooks of a quantizer while the user's own training runs.

    from rvq_viewer.monitor import CodebookMonitor
    mon = CodebookMonitor("runs/exp1"); mon.attach(model.quantizer)     # that is all

Every training-mode call of the module counts its codes (taken from the module's own output, see
`adapters.py`) into the open logging window, on the module's device. Every `every` steps the window
closes: its counts and the module's state dict are copied off the device (no wait) and queued for the
writer thread, which records counts, EMA cluster sizes, events and, every `snapshot_every` windows, the
codebooks in `RUN_DIR/rvq-monitor.rank<R>.sqlite` (`rvq_viewer.io.run_db`). When the queue is full the
window is dropped, and the drop recorded, rather than training made to wait. `close()` (or the end of
the process) writes the last window and waits for the writer.

Steps: each training-mode call of the attached module is one step, unless the loop says which step it
is at with `set_step(n)` (the Lightning and Hugging Face callbacks do), or logs codes itself with
`log(step, codes)`.
"""

from __future__ import annotations

import atexit
import os
import socket
import sys
import time
import warnings
import weakref
from pathlib import Path
from typing import Any

import torch

from ..errors import RvqViewerError
from ..io.run_db import SCHEMA_VERSION, run_file_name
from ..version import __version__
from .adapters import Adapter, extract, find_adapter, split_layers, LAYERS_FIRST, PER_LAYER_LIST
from .counting import WindowCounts
from .writer import STOP, WindowItem, Writer, copy_state

DEFAULT_EVERY = 100
DEFAULT_SNAPSHOT_EVERY = 10
DEFAULT_QUEUE = 8
CLOSE_TIMEOUT_S = 120.0


class MonitorError(RvqViewerError):
    """The monitor was asked something it cannot do (an unknown module, codes of no known size)."""


def current_rank() -> tuple[int, int]:
    """(rank, world size) under torch.distributed, else from the launcher's environment, else (0, 1)."""
    dist = getattr(torch, "distributed", None)
    if dist is not None and dist.is_available() and dist.is_initialized():
        return int(dist.get_rank()), int(dist.get_world_size())
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


class CodebookMonitor:
    """Records a training run's code usage into a run directory. See the module docstring.

    `every`: steps per logging window. `snapshot_every`: windows between snapshots of the codebooks
    (the first and the last window always carry one). `ranks`: "all" (each rank writes its own file) or
    "zero" (only rank 0 records). `queue_size`: windows waiting for the writer before one is dropped.
    `codebook_size` (an int or one per layer): for `log()` without an attached module.
    `train_only`: count only calls made in training mode (validation passes are not training steps).
    """

    def __init__(self, run_dir: str | Path, every: int = DEFAULT_EVERY,
                 snapshot_every: int = DEFAULT_SNAPSHOT_EVERY, ranks: str = "all", rank: int | None = None,
                 queue_size: int = DEFAULT_QUEUE, codebook_size: int | list[int] | None = None,
                 train_only: bool = True, events: bool = True):
        if ranks not in ("all", "zero"):
            raise MonitorError(f"ranks={ranks!r}: use 'all' (one file per rank) or 'zero' (rank 0 only)")
        if int(every) < 1 or int(snapshot_every) < 1:
            raise MonitorError("every and snapshot_every must be at least 1")
        self.run_dir = Path(run_dir)
        self.every = int(every)
        self.snapshot_every = int(snapshot_every)
        self.ranks = ranks
        self.rank = rank
        self.world_size = None
        self.queue_size = queue_size
        self.train_only = train_only
        self.events = events
        self.sizes: list[int] | None = None if codebook_size is None or isinstance(codebook_size, int) \
            else [int(k) for k in codebook_size]
        self._size_for_all = codebook_size if isinstance(codebook_size, int) else None
        self.dropped = 0                       # windows dropped because the writer fell behind
        self.module: torch.nn.Module | None = None
        self.adapter: Adapter | None = None
        self.quantizer = None                  # the module read as rvq-viewer reads a checkpoint
        self._options: dict = {}
        self._handles: list[Any] = []
        self._counts: WindowCounts | None = None
        self._writer: Writer | None = None
        self._window: list[int] | None = None  # [step_from, last step, steps seen]
        self._windows = 0
        self._pending_drops: list[tuple[int, int]] = []
        self._auto_step = 0
        self._manual_step: int | None = None
        self._inert = False
        self._closed = False
        self._failed = False
        self._tables: tuple[list[int] | None, int | None] = (None, None)
        self._described = False
        atexit.register(_close_at_exit, weakref.ref(self))

    # --- public interface -------------------------------------------------------------------------------
    def attach(self, module: torch.nn.Module, adapter: Adapter | None = None, format: str | None = None,
               **load_options) -> "CodebookMonitor":
        """Watch `module` (the quantizer itself, e.g. `model.quantizer`): its codes through a forward hook
        (or its `encode`, for codecs without a forward), its codebooks and EMA sizes from its state dict.
        `format` and `load_options` are rvq-viewer's loader options (`rvq-viewer info --help`)."""
        if self.module is not None:
            raise MonitorError("this monitor already watches a module: one monitor per quantizer")
        adapter = adapter or find_adapter(module)
        if adapter is None:
            raise MonitorError(f"{type(module).__module__}.{type(module).__name__}: not a quantizer module "
                               "rvq-viewer knows; attach the quantizer itself (e.g. model.quantizer), or "
                               "count codes with log(step, codes) and codebook_size=")
        self.module, self.adapter = module, adapter
        self._options = {**adapter.options_for(module), **load_options}
        if format:
            self._options["format"] = format
        if adapter.method == "forward":
            self._handles.append(module.register_forward_pre_hook(self._pre_hook))
            self._handles.append(module.register_forward_hook(self._hook))
        else:
            self._handles.append(_wrap_method(module, adapter.method, self._before, self._observe))
        return self

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def set_step(self, step: int) -> None:
        """The training step the next calls belong to (instead of one step per call)."""
        self._manual_step = int(step)

    def log(self, step: int, codes) -> None:
        """Count codes of one step: `[n_q, N]` (or `[n_q, B, T]`, or a list of per-layer tensors)."""
        if self._closed or self._inert:
            return
        layers = split_layers(codes, PER_LAYER_LIST if isinstance(codes, (list, tuple)) else LAYERS_FIRST)
        self._add(int(step), layers)

    def flush(self) -> None:
        """Close the open window and wait until the writer has committed everything queued."""
        if self._window is not None:
            self._close_window()
        if self._writer is not None and self._writer.is_alive():
            self._writer.queue.join()

    def close(self) -> None:
        """Write the last window (with a snapshot), wait for the writer, and stop watching."""
        if self._closed:
            return
        self._closed = True
        self.detach()
        if self._window is not None:
            self._close_window(final=True)
        writer = self._writer
        if writer is not None and writer.is_alive():
            if self._pending_drops:            # dropped windows with no later window to carry them
                writer.queue.put(WindowItem(0, 0, 0, None, drops=self._pending_drops))
            writer.queue.put(STOP)
            writer.join(CLOSE_TIMEOUT_S)

    @property
    def path(self) -> Path | None:
        """The database this rank writes (None before the first step or on a rank that does not record)."""
        return None if self.rank is None or self._inert else self.run_dir / run_file_name(self.rank)

    def __enter__(self) -> "CodebookMonitor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- the hooks --------------------------------------------------------------------------------------
    def _pre_hook(self, module, args) -> None:
        if self.train_only and not module.training:
            return
        self._before(module)

    def _before(self, module) -> None:
        """Before a call: if it starts a new window, close the open one now, so that the state copied with
        it is the module's state at the end of the window's last step (not after this call's update)."""
        if self._closed or self._inert or self._failed or self._window is None:
            return
        step = self._manual_step if self._manual_step is not None else self._auto_step
        if self._starts_window(step):
            self._close_window()

    def _starts_window(self, step: int) -> bool:
        window = self._window
        return step != window[1] and (step - window[0] >= self.every or step < window[0])

    def _hook(self, module, args, output) -> None:
        if self.train_only and not module.training:
            return
        self._observe(module, output)

    def _observe(self, module, output) -> None:
        if self._closed or self._inert or self._failed:
            return
        try:
            if not self._described:
                self._described = True
                self._describe(module)
            layers = extract(self.adapter, module, output, *self._tables)
            if self._manual_step is not None:
                step = self._manual_step
            else:
                step, self._auto_step = self._auto_step, self._auto_step + 1
            self._add(step, layers)
        except Exception as exc:  # noqa: BLE001 - the monitor never breaks the training it watches
            self._failed = True
            warnings.warn(f"rvq-viewer monitor stops watching {type(module).__name__}: {exc}", RuntimeWarning,
                          stacklevel=2)

    def _describe(self, module) -> None:
        """Read the module as rvq-viewer reads a checkpoint (once codebooks exist: after the first call)."""
        from ..io.checkpoints import quantizer_from_state
        try:
            self.quantizer = quantizer_from_state(module.state_dict(), type(module).__name__, **self._options)
        except RvqViewerError:
            if self.adapter.sizes is None:
                raise
            self.sizes = self.adapter.sizes(module)   # e.g. a layer still to be initialised: the writer
            return                                     # reads the codebooks once they exist
        self.sizes = self.quantizer.codebook_sizes
        tables = getattr(self.quantizer, "slot_table", None)
        n_tables = getattr(self.quantizer, "n_tables", 1)
        if tables is not None and n_tables > 1:
            self._tables = (list(tables), self.sizes[0] // n_tables)

    # --- windows ------------------------------------------------------------------------------------------
    def _add(self, step: int, layers: list[torch.Tensor]) -> None:
        if self.world_size is None:
            rank, self.world_size = current_rank()
            self.rank = rank if self.rank is None else self.rank
        if self.ranks == "zero" and self.rank != 0:
            self._inert = True
            return
        if self._counts is None:
            if self.sizes is None and self._size_for_all is not None:
                self.sizes = [self._size_for_all] * len(layers)
            if self.sizes is None:
                raise MonitorError("codebook sizes unknown: attach(module) or give CodebookMonitor(codebook_size=)")
            self._counts = WindowCounts(self.sizes, layers[0].device)
        window = self._window
        if window is None:
            self._window = [step, step, 1]
        elif self._starts_window(step):           # log(): the hooks have closed it already
            self._close_window()
            self._window = [step, step, 1]
        elif step != window[1]:
            window[1], window[2] = max(window[1], step), window[2] + 1
        self._counts.add(layers)

    def _close_window(self, final: bool = False) -> None:
        step_from, step_to, steps = self._window
        self._window = None
        counts = self._counts.take()
        snapshot = final or self._windows % self.snapshot_every == 0
        state = copy_state(self.module) if self.module is not None else None
        item = WindowItem(step_from, step_to, steps, counts, state, snapshot, list(self._pending_drops))
        self._windows += 1
        writer = self._writer or self._start_writer()
        try:
            writer.queue.put_nowait(item)
        except Exception:  # queue.Full: drop the window, never wait
            self.dropped += 1
            self._pending_drops.append((step_from, step_to))
        else:
            self._pending_drops.clear()

    def _start_writer(self) -> Writer:
        q = self.quantizer
        dims = [int(c.shape[1]) for c in q.codebooks] if q is not None else [None] * len(self.sizes)
        meta = {"schema": SCHEMA_VERSION, "rvq_viewer": __version__, "created": time.time(), "pid": os.getpid(),
                "host": socket.gethostname(), "rank": self.rank, "world_size": self.world_size or 1,
                "every": self.every, "snapshot_every": self.snapshot_every, "ranks": self.ranks,
                "python": sys.version.split()[0], "torch": torch.__version__}
        if self.module is not None:
            cls = type(self.module)
            meta.update(module=f"{cls.__module__}.{cls.__name__}", family=self.adapter.family)
        if q is not None:
            rule = q.dead_code_rule
            meta.update(format=q.format, dim=q.dim, has_ema=q.has_ema,
                        dead_code_rule={"kind": rule.kind, "value": rule.value, "origin": rule.origin})
        build = None
        if self.module is not None:
            from ..io.checkpoints import quantizer_from_state
            label, options = type(self.module).__name__, dict(self._options)

            def build(state):
                return quantizer_from_state(state, label, **options)
        self._writer = Writer(self.run_dir / run_file_name(self.rank), meta, list(zip(self.sizes, dims)), build,
                              self.queue_size, self.events)
        self._writer.start()
        return self._writer


class _MethodHandle:
    def __init__(self, module, name):
        self.module, self.name = module, name

    def remove(self) -> None:
        self.module.__dict__.pop(self.name, None)


def _wrap_method(module: torch.nn.Module, name: str, before, observe) -> _MethodHandle:
    """Call `before(module)` before and `observe(module, result)` after every call of `module.<name>` (on
    this instance only)."""
    original = getattr(module, name)

    def wrapped(*args, **kwargs):
        before(module)
        result = original(*args, **kwargs)
        observe(module, result)
        return result
    module.__dict__[name] = wrapped
    return _MethodHandle(module, name)


def _close_at_exit(ref) -> None:
    monitor = ref()
    if monitor is not None:
        monitor.close()
