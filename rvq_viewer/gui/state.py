"""The selection every view follows: a layer, and optionally one code in it."""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal


class Selection(QObject):
    """Selected layer and code (-1: no code). Setting a code of another layer moves the layer too.

    `layer_changed(layer)` fires before `code_changed(layer, code)`, so a view that redraws per
    layer has the right layer when the code arrives. Setting the same value again emits nothing.
    """

    layer_changed = Signal(int)
    code_changed = Signal(int, int)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._layer = 0
        self._code = -1
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

    def reset(self, n_layers: int) -> None:
        """A new quantizer: back to layer 0, no code."""
        self._n_layers = n_layers
        self._layer = 0
        self._code = -1
        self.layer_changed.emit(0)
        self.code_changed.emit(0, -1)

    def set_layer(self, layer: int) -> None:
        if self._n_layers == 0:
            return
        layer = max(0, min(int(layer), self._n_layers - 1))
        if layer == self._layer:
            return
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
            self._layer = layer
            self._code = code
            self.layer_changed.emit(layer)
            self.code_changed.emit(layer, code)
        elif code != self._code:
            self._code = code
            self.code_changed.emit(layer, code)

    def clear_code(self) -> None:
        self.set_code(self._layer, -1)
