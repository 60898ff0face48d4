"""The main window's panels. Each takes the `AppState`, subscribes to it, and offers `ready`, `cleanup`
and its exports."""

from .centroid_map import CentroidMapView
from .dead_codes import DeadCodesView
from .diagnosis_panel import DiagnosisPanel
from .family_view import FamilyView
from .histogram import HistogramView
from .overview import OverviewView
from .residuals import ResidualsView

__all__ = ["CentroidMapView", "DeadCodesView", "DiagnosisPanel", "FamilyView", "HistogramView", "OverviewView",
           "ResidualsView"]
