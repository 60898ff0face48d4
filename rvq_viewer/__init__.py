"""rvq-viewer: open a trained residual vector quantizer, run it over your features, see its codebooks' health."""

from .core import Quantizer
from .errors import LoadError, RvqViewerError
from .io import FeatureSource, load_quantizer

__version__ = "0.1.0"

__all__ = ["FeatureSource", "LoadError", "Quantizer", "RvqViewerError", "__version__", "load_quantizer"]
