"""rvq-viewer: open a trained residual vector quantizer, run it over your features, see its codebooks' health.

    import rvq_viewer
    q = rvq_viewer.load_quantizer("voice_e8_s1234.pth")
    outcome = rvq_viewer.audit("voice_e8_s1234.pth", ["feats/"])   # numbers and verdicts
    outcome = rvq_viewer.audit("voice_e8_s1234.pth", ["/shared/feats/"], executor=dask_client)  # on a cluster
"""

from .errors import LoadError, RvqViewerError
from .io import FeatureSource, load_quantizer
from .pipeline import AuditSpec, run_audit_spec
from .quant import Quantizer
from .version import __version__


def audit(checkpoint, features, executor=None, **spec_fields):
    """Audit `checkpoint` on `features` (files or folders); `spec_fields` are `AuditSpec`'s (device,
    layout, key, pairs...). Returns the `AuditOutcome`: `.result` holds the numbers, `.verdicts` the
    diagnosis.

    `executor` (a `distributed.Client`, or any `concurrent.futures.Executor`) audits the corpus in shards
    there, with the local result; `.shards` then says how many ran where and which files were skipped."""
    return run_audit_spec(AuditSpec(checkpoint, tuple(features), **spec_fields), executor=executor)


__all__ = ["AuditSpec", "FeatureSource", "LoadError", "Quantizer", "RvqViewerError", "__version__", "audit",
           "load_quantizer", "run_audit_spec"]
