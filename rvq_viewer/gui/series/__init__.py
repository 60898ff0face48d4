"""The checkpoint series' dock: the event timeline, its heat strips and a code's trajectory."""

from .events_view import EventsView

__all__ = ["EventsView"]
