"""Ctrl+C in a command: KeyboardInterrupt once, then SIGINT ignored while the command unwinds.

The handler raises KeyboardInterrupt wherever the main thread happens to be. Where that is a
destructor or a weakref callback, Python prints "Exception ignored" and carries on, and with SIGINT
then ignored the command would finish as if never interrupted. So the press is also remembered, and
the progress callbacks (`raise_if_pressed`, called once per chunk) raise it again.
"""

from __future__ import annotations

import signal
import threading

_pressed = threading.Event()


def install():
    """Take over SIGINT for one command. Returns the handler to restore, or None off the main thread
    or where SIGINT is ignored."""
    if threading.current_thread() is not threading.main_thread():
        return None
    previous = signal.getsignal(signal.SIGINT)
    if previous in (signal.SIG_IGN, None):
        return None
    _pressed.clear()

    def interrupted(signum, frame):
        _pressed.set()
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupted)
    return previous


def raise_if_pressed() -> None:
    """Raise KeyboardInterrupt if Ctrl+C was pressed and its first raise was swallowed on the way."""
    if _pressed.is_set():
        raise KeyboardInterrupt


def restore(previous) -> None:
    if previous is not None:
        signal.signal(signal.SIGINT, previous)
    _pressed.clear()
