"""rvq-viewer: open a trained residual vector quantizer, run it over your features, see its codebooks' health.

    import rvq_viewer
    q = rvq_viewer.load_quantizer("voice_e8_s1234.pth")
    outcome = rvq_viewer.audit("voice_e8_s1234.pth", ["feats/"])   # numbers and verdicts
"""

from .errors import LoadError, RvqViewerError
from .io import FeatureSource, load_quantizer
from .pipeline import AuditSpec, run_audit_spec
from .quant import Quantizer
from .version import __version__


def audit(checkpoint, features, **spec_fields):
    """Audit `checkpoint` on `features` (files or folders); `spec_fields` are `AuditSpec`'s (device,
    layout, key, pairs...). Returns the `AuditOutcome`: `.result` holds the numbers, `.verdicts` the
    diagnosis."""
    return run_audit_spec(AuditSpec(checkpoint, tuple(features), **spec_fields))


__all__ = ["AuditSpec", "FeatureSource", "LoadError", "Quantizer", "RvqViewerError", "__version__", "audit",
           "load_quantizer", "run_audit_spec"]
