"""The audit engine: per-layer usage, perplexity, dead codes and residual norms of a quantizer on features."""

from .engine import AuditProgress, available_devices, iter_audit, resolve_device, run_audit, with_threshold
from .result import AuditResult, LayerReport, build_result
from .stats import AuditAccumulator, usage_metrics

__all__ = ["AuditAccumulator", "AuditProgress", "AuditResult", "LayerReport", "available_devices",
           "build_result", "iter_audit", "resolve_device", "run_audit", "usage_metrics", "with_threshold"]
