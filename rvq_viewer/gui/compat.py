"""Work-arounds for known binding bugs, switched on only where the bug is detected at start-up.

PySide6 6.12.0's abi3 wheels on Python < 3.12 hand back `None` from C++ `void` methods (and from
`QVariant`s that hold nothing) and `True` from `Signal.emit()` without taking a reference, so every
such call (`QWidget.update()`, `QPainterPath.moveTo()`, `sig.emit()`, ...) lowers the singleton's
reference count by one; after some tens of thousands of calls Python aborts with "none_dealloc" or
"bool_dealloc". Python 3.12+ made these objects immortal, which hides the bug, and PySide6 6.11.3
does not have it. Until the project pins around it, `SingletonRefGuard` keeps the counts far from
zero by holding extra references, topped up from a timer on the GUI thread.
"""

from __future__ import annotations

import ctypes
import sys

# References kept above zero: more than any burst of leaking calls between two top-ups (100 ms).
FLOORS = {"None": 600_000, "True": 300_000, "False": 300_000}
_OBJECTS = {"None": None, "True": True, "False": False}


def leaking_singletons() -> list[str]:
    """Names of the singletons whose count drops when Qt is called (empty on a sound binding)."""
    if sys.version_info >= (3, 12):
        return []  # immortal
    from PySide6.QtCore import QObject, Signal

    class _Probe(QObject):
        ping = Signal()

    obj = _Probe()
    before = {name: sys.getrefcount(o) for name, o in _OBJECTS.items()}
    for _ in range(64):
        obj.setObjectName("probe")   # void
        obj.ping.emit()              # bool
    after = {name: sys.getrefcount(o) for name, o in _OBJECTS.items()}
    leaking = [name for name in _OBJECTS if after[name] < before[name] - 32]
    if leaking:
        leaking = sorted(set(leaking) | {"None", "True", "False"})  # the same bug, other call sites
    return leaking


class SingletonRefGuard:
    """Holds references to None/True/False so a leaking binding cannot free them. Call `top_up()`."""

    def __init__(self, floors: dict[str, int] | None = None):
        self.floors = dict(FLOORS if floors is None else floors)
        self._ballast: list[list] = []
        self.added = {name: 0 for name in self.floors}
        self.top_up()

    def top_up(self) -> None:
        for name, floor in self.floors.items():
            obj = _OBJECTS[name]
            deficit = floor - sys.getrefcount(obj)
            if deficit > 0:
                chunk = [obj] * deficit
                # Leak one reference to the chunk so it is never freed, not even while the
                # interpreter shuts down: freeing it would return references the binding took.
                ctypes.pythonapi.Py_IncRef(ctypes.py_object(chunk))
                self._ballast.append(chunk)
                self.added[name] += deficit


_guard: SingletonRefGuard | None = None
_timer = None


def install_refcount_guard(app=None) -> SingletonRefGuard | None:
    """Detect the bug and, if present, keep the singletons alive (topped up every 100 ms)."""
    global _guard, _timer
    if _guard is not None:
        return _guard
    if not leaking_singletons():
        return None
    import PySide6
    from PySide6.QtCore import QCoreApplication, QTimer
    print(f"rvq-viewer: PySide6 {PySide6.__version__} on Python {sys.version_info.major}."
          f"{sys.version_info.minor} leaks references to None/True; working around it "
          "(PySide6-Essentials other than 6.12.0 does not need this)", file=sys.stderr)
    _guard = SingletonRefGuard()
    app = app or QCoreApplication.instance()
    if app is not None:
        _timer = QTimer(app)
        _timer.setInterval(100)
        _timer.timeout.connect(_guard.top_up)
        _timer.start()
    return _guard


def guard() -> SingletonRefGuard | None:
    return _guard
