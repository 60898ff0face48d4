"""The one pipeline: every client's audit, comparison, checkpoint series and training frames go through here.

    spec = AuditSpec("healthy.pt", ("feats/",), device="cpu")
    outcome = run_audit_spec(spec)          # outcome.result (numbers), outcome.verdicts (diagnosis)

Files -> loaders (`rvq_viewer.io`) -> this pipeline -> results -> clients (CLI, app, report, tests).
Nothing else builds a `FeatureSource` or calls `diagnose`.
"""

from .audit import (AuditOutcome, check_spec_outputs, device_of, iter_audit_run, load, load_checkpoint, open_features,
                    partial_result, run_audit_spec)
from .compare import CompareOutcome, CompareProgress, iter_compare, run_compare, same_path, same_paths
from .frames import sample_frames
from .runs import Run, RunUpdate, open_run
from .series import SeriesOutcome, SeriesProgress, iter_series, series_events, usage_counts
from .spec import CHUNK_FRAMES, AuditSpec, LoadOptions

__all__ = ["AuditOutcome", "AuditSpec", "CHUNK_FRAMES", "CompareOutcome", "CompareProgress", "LoadOptions",
           "Run", "RunUpdate", "SeriesOutcome", "SeriesProgress", "check_spec_outputs", "device_of", "iter_audit_run", "iter_compare",
           "iter_series", "load", "load_checkpoint", "open_features", "open_run", "partial_result", "run_audit_spec",
           "run_compare", "same_path", "same_paths", "sample_frames", "series_events", "usage_counts"]
