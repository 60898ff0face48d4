"""`rvq-viewer info CKPT` and `rvq-viewer audit CKPT FEATURES... [--json OUT] [--fail-on collapse]`."""

from __future__ import annotations

import json
import sys

from ..analysis.diagnosis import FAIL_ON, EXIT_COLLAPSE, exit_code_for, format_verdicts, write_json
from ..pipeline import check_spec_outputs, load_checkpoint, run_audit_spec
from .options import (ProgressBar, add_audit_options, add_load_options, executor_from_args, load_options,
                      spec_from_args)


def register(sub) -> None:
    info = sub.add_parser("info", help="detected format, n_q, K, D and EMA statistics of a checkpoint")
    add_load_options(info)
    info.add_argument("--json", action="store_true", help="print JSON instead of text")
    info.set_defaults(handler=run_info)

    audit = sub.add_parser("audit", help="encode features and report per-layer codebook health")
    add_load_options(audit)
    audit.add_argument("features", nargs="+", help="feature files or folders (.npy, .pt, .npz, .safetensors)")
    audit.add_argument("--json", dest="json_out", metavar="OUT", help="write the JSON report to OUT")
    add_audit_options(audit)
    audit.add_argument("--fail-on", choices=FAIL_ON, default="never",
                       help=f"exit with status {EXIT_COLLAPSE} when a verdict of this severity holds "
                            "(for training pipelines)")
    audit.set_defaults(handler=run_audit)


def run_info(args) -> int:
    quantizer = load_checkpoint(args.checkpoint, load_options(args))
    summary = quantizer.summary()
    summary["notes"] = quantizer.notes
    if args.json:
        print(json.dumps(summary, indent=1))
        return 0
    print(f"{args.checkpoint}")
    for key in ("format", "family", "n_q", "codebook_size", "dim", "codebook_dim", "ema_statistics",
                "dead_code_rule", "levels", "stages", "bits", "codes_per_frame"):
        if key in summary:
            print(f"  {key:15} {summary[key]}")
    for note in quantizer.notes:
        print(f"  note: {note}")
    return 0


def print_warnings(outcome) -> None:
    for warning in outcome.warnings:
        print(f"rvq-viewer: warning: {warning}", file=sys.stderr)
    if outcome.diagnosis_error:
        print(f"rvq-viewer: warning: {outcome.diagnosis_error}", file=sys.stderr)


def print_shards(outcome) -> None:
    """Where a sharded audit ran, and the shards that lost files on a worker."""
    report = outcome.shards
    if report is None:
        return
    lost = sorted({index for index, _, _ in report.skipped})
    print(f"{report.merged} of {report.count} shards audited on {report.executor}, {outcome.frames_read} of "
          f"{report.frames_planned} input frames" + (f"; files skipped in shards {', '.join(map(str, lost))}"
                                                     if lost else ""))


def run_audit(args) -> int:
    spec = spec_from_args(args)
    check_spec_outputs([("--json", args.json_out)], [spec])
    bar = ProgressBar(args)
    try:
        with executor_from_args(args) as executor:
            outcome = run_audit_spec(spec, progress=bar, executor=executor)
    finally:
        bar.close()
    if args.json_out:
        write_json(args.json_out, outcome.result, outcome.verdicts or [])
    print_warnings(outcome)
    q, result = outcome.quantizer, outcome.result
    print(f"{q.format}: n_q={q.n_q} K={q.codebook_size} D={q.dim}, "
          f"{result.frames} frames from {len(outcome.source.files)} file(s)")
    print_shards(outcome)
    print(result.table())
    if result.ema_dead_rule:
        print(f"ema-dead: {result.ema_dead_rule} in the checkpoint; dead: unused on these features")
    print(format_verdicts(outcome.verdicts or [], "warning"))
    return exit_code_for(outcome.verdicts or [], args.fail_on)
