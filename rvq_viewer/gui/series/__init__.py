"""The checkpoint series' dock: the event timeline, its heat strips and a code's trajectory, and the
follower that adds checkpoints a training run is still writing."""

from .events_view import EventsView
from .follow import SeriesFollower

__all__ = ["EventsView", "SeriesFollower"]
