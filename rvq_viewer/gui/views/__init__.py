"""The five linked views. Each has `set_session`, `set_snapshot`, `ready`, `cleanup` and an export."""

from .centroid_map import CentroidMapView
from .dead_codes import DeadCodesView
from .histogram import HistogramView
from .overview import OverviewView
from .residuals import ResidualsView

__all__ = ["CentroidMapView", "DeadCodesView", "HistogramView", "OverviewView", "ResidualsView"]
