"""The application's state, as one evented model the panels subscribe to (napari's evented models).

- `Selection`: the layer every view follows, and optionally one code in it;
- `AppState`: the open session, the audit snapshot, the centroid map's projection and the device, with a
  signal for each change. The window sets them; panels never reach into the window or into each other.

Snapshots reach their subscribers one at a time, `STAGGER_MS` apart: a view's update repaints its plot in
a chain of posted events that Qt runs in one pass of the event loop, and two views updated 1 ms apart
landed in the same pass (a 60-100 ms stall; benchmarks/ui.py). Subscribers take turns: one that has just
drawn goes to the back, so while snapshots come faster than a round every view still draws a recent one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from PySide6.QtCore import QElapsedTimer, QObject, QTimer, Signal

STAGGER_MS = 30


@dataclass(frozen=True)
class MapOverlay:
    """A path to draw on the centroid map: points in layer `layer`'s codebook space (e.g. one code's
    centroid at every checkpoint of a series). The map projects them with its own projection."""

    layer: int
    points: np.ndarray       # [S, D]
    label: str


_NO_CODES = np.zeros(0, dtype=np.int64)


class Selection(QObject):
    """Selected layer and code (-1: no code), and a set of codes of that layer (a box drawn on the map).
    Setting a code of another layer moves the layer too; a new layer empties the set.

    `layer_changed(layer)` fires before `code_changed(layer, code)`, so a view that redraws per
    layer has the right layer when the code arrives. Setting the same value again emits nothing.
    """

    layer_changed = Signal(int)
    code_changed = Signal(int, int)
    codes_changed = Signal(int, object)      # layer, sorted np.ndarray of codes (empty: no set)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._layer = 0
        self._code = -1
        self._codes = _NO_CODES
        self._n_layers = 0

    @property
    def layer(self) -> int:
        return self._layer

    @property
    def code(self) -> int:
        return self._code

    @property
    def n_layers(self) -> int:
        return self._n_layers

    @property
    def codes(self) -> np.ndarray:
        return self._codes

    def reset(self, n_layers: int) -> None:
        """A new quantizer: back to layer 0, no code, no set."""
        self._n_layers = n_layers
        self._layer = 0
        self._code = -1
        self._drop_codes()
        self.layer_changed.emit(0)
        self.code_changed.emit(0, -1)

    def set_codes(self, layer: int, codes) -> None:
        """A set of codes of `layer` (moving there first); an empty one clears the set."""
        if self._n_layers == 0:
            return
        codes = np.unique(np.asarray(codes, dtype=np.int64).ravel())
        codes = codes[codes >= 0]
        self.set_layer(layer)
        if codes.size == 0 and self._codes.size == 0:
            return
        self._codes = codes if codes.size else _NO_CODES
        self.codes_changed.emit(self._layer, self._codes)

    def _drop_codes(self) -> None:
        if self._codes.size:
            self._codes = _NO_CODES
            self.codes_changed.emit(self._layer, _NO_CODES)

    def set_layer(self, layer: int) -> None:
        if self._n_layers == 0:
            return
        layer = max(0, min(int(layer), self._n_layers - 1))
        if layer == self._layer:
            return
        self._drop_codes()
        self._layer = layer
        self._code = -1
        self.layer_changed.emit(layer)
        self.code_changed.emit(layer, -1)

    def step_layer(self, delta: int) -> None:
        if self._n_layers:
            self.set_layer((self._layer + delta) % self._n_layers)

    def set_code(self, layer: int, code: int) -> None:
        if self._n_layers == 0:
            return
        layer = max(0, min(int(layer), self._n_layers - 1))
        code = int(code)
        if layer != self._layer:
            self._drop_codes()
            self._layer = layer
            self._code = code
            self.layer_changed.emit(layer)
            self.code_changed.emit(layer, code)
        elif code != self._code:
            self._code = code
            self.code_changed.emit(layer, code)

    def clear_code(self) -> None:
        self.set_code(self._layer, -1)

    def clear(self) -> None:
        """No code and no set (the layer stays)."""
        self.clear_code()
        self._drop_codes()


class AppState(QObject):
    """What the window shows. Panels connect to the signals (and `subscribe_snapshots`); the window and
    its controllers call the setters."""

    session_changed = Signal(object)     # Session | None
    snapshot_shown = Signal(object)      # a Snapshot every subscriber has drawn
    audit_finished = Signal(object)      # the last Snapshot of an audit: complete or cancelled
    map_changed = Signal(object)         # the MapGeometry the centroid map now shows (None: none)
    overlay_changed = Signal(object)     # the MapOverlay to draw on the map (None: none)
    device_changed = Signal(str)
    failure_changed = Signal(str)        # why the last audit failed ("" once another starts)
    message = Signal(str, str)           # text, kind ("error", "info"): shown in the window's banner
    view_requested = Signal(str)         # bring a view forward ("histogram", "centroids", ...)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.selection = Selection(self)
        self.session = None
        self.snapshot = None
        self.map_geometry = None
        self.overlay: MapOverlay | None = None
        self.failure = ""
        self._device = "auto"
        self.cluster = ""                    # a Dask address the audit runs on ("": this process)
        self._subscribers: list[Callable] = []
        self._stale: list[Callable] = []
        self._stagger = QTimer(self)
        self._stagger.setSingleShot(True)
        self._stagger.timeout.connect(self._deliver_next)
        self._since = QElapsedTimer()
        self._since.start()

    # --- device -------------------------------------------------------------------------------------------
    @property
    def device(self) -> str:
        return self._device

    def set_device(self, device: str) -> None:
        if device != self._device:
            self._device = device
            self.device_changed.emit(device)

    # --- session ------------------------------------------------------------------------------------------
    def set_session(self, session) -> None:
        """A new session: the snapshot goes, every panel hears of it at once."""
        self._stale.clear()
        self.session = session
        self.snapshot = None
        self.selection.reset(session.n_q if session is not None else 0)
        self.session_changed.emit(session)

    # --- snapshots ----------------------------------------------------------------------------------------
    def subscribe_snapshots(self, callback: Callable) -> None:
        """`callback(snapshot)` for every snapshot shown, in turns with the other subscribers."""
        self._subscribers.append(callback)

    def set_snapshot(self, snapshot) -> None:
        self.snapshot = snapshot
        self._stale.extend(s for s in self._subscribers if s not in self._stale)
        if not self._stagger.isActive():
            self._stagger.start(max(0, STAGGER_MS - int(self._since.elapsed())))

    @property
    def delivering(self) -> bool:
        """Some subscriber has yet to draw the newest snapshot."""
        return bool(self._stale)

    def _deliver_next(self) -> None:
        if not self._stale or self.snapshot is None:
            return
        self._stale.pop(0)(self.snapshot)
        self._since.restart()
        if self._stale:
            self._stagger.start(STAGGER_MS)
            return
        self.snapshot_shown.emit(self.snapshot)
        if self.snapshot.complete or self.snapshot.cancelled:
            self.audit_finished.emit(self.snapshot)

    # --- the rest -----------------------------------------------------------------------------------------
    def set_map(self, geometry) -> None:
        if geometry is not self.map_geometry:
            self.map_geometry = geometry
            self.map_changed.emit(geometry)

    def set_failure(self, reason: str) -> None:
        if reason != self.failure:
            self.failure = reason
            self.failure_changed.emit(reason)

    def set_overlay(self, overlay: MapOverlay | None) -> None:
        self.overlay = overlay
        self.overlay_changed.emit(overlay)

    def show_message(self, text: str, kind: str = "error") -> None:
        self.message.emit(text, kind)

    def request_view(self, name: str) -> None:
        self.view_requested.emit(name)
