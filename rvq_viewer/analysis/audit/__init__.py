"""The audit engine: per-layer usage, perplexity, dead codes and residual norms of a quantizer on features,
and the mergeable statistics it gathers (code counts, norms, layer-pair histograms, input moments)."""

from .engine import AuditProgress, audit_source, encode_frames, iter_audit, new_accumulator, run_audit, with_threshold
from .pairs import PairAccumulator
from .result import AuditResult, LayerReport, build_result
from .stats import AuditAccumulator, usage_metrics

__all__ = ["AuditAccumulator", "AuditProgress", "AuditResult", "LayerReport", "PairAccumulator", "audit_source",
           "build_result", "encode_frames", "iter_audit", "new_accumulator", "run_audit", "usage_metrics",
           "with_threshold"]
