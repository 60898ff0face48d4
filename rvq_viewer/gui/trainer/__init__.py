"""The what-if trainer's dock: the settings form, the live curves and the runs."""

from .panel import TrainerPanel

__all__ = ["TrainerPanel"]
