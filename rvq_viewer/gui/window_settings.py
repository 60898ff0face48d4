"""What the main window keeps between sessions (settings.py holds the keys and their defaults)."""

from __future__ import annotations

from PySide6.QtCore import QByteArray

from . import settings


def restore(w) -> None:
    """The saved view options, device, window geometry and dock layout, onto main window `w`."""
    w.histogram.log_box.setChecked(settings.get("histogram/log"))
    w.histogram.sorted_box.setChecked(settings.get("histogram/sorted"))
    w.map.set_all_layers(settings.get("map/all_layers"))
    w.dead_codes.set_filter(settings.get("dead/filter"))
    if w.map.umap_box.isEnabled():
        w.map.umap_box.setChecked(settings.get("map/umap"))
    w.set_device(settings.get("device"))
    w.state.set_device(w.device)
    for act in w.device_group.actions():
        act.setChecked(act.text() == w.device)
    geometry = settings.get("window/geometry")
    if isinstance(geometry, QByteArray) and not geometry.isEmpty():
        w.restoreGeometry(geometry)
    state = settings.get("window/state")
    if isinstance(state, QByteArray) and not state.isEmpty():
        w.restoreState(state)


def save(w) -> None:
    settings.set("window/geometry", w.saveGeometry())
    settings.set("window/state", w.saveState())
    settings.set("histogram/log", w.histogram.log_box.isChecked())
    settings.set("histogram/sorted", w.histogram.sorted_box.isChecked())
    settings.set("map/all_layers", w.map.all_layers)
    settings.set("dead/filter", w.dead_codes.filter)
    if w.map.umap_box.isEnabled():
        settings.set("map/umap", w.map.umap_box.isChecked())
    settings.sync()
