"""The Compare window (two audits side by side) and the controller that opens it from the main window."""

from .controller import CompareController
from .dialog import CompareDialog
from .window import CompareWindow

__all__ = ["CompareController", "CompareDialog", "CompareWindow"]
