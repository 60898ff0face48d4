"""A live training run in the app: the Run view (timelines, events, a step slider that drives every usual
view, live following of the run's database)."""

from .view import RunView

__all__ = ["RunView"]
