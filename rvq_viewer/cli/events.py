"""`rvq-viewer events CKPT_DIR [FEATURES...] --json OUT`: dead-code events across a checkpoint series."""

from __future__ import annotations

import json
import sys
from collections import Counter

from ..analysis.series import EVENT_KINDS, list_checkpoints
from ..io import atomic_write_text
from ..pipeline import AuditSpec, check_spec_outputs, series_events
from .options import add_load_flags, load_options


def register(sub) -> None:
    parser = sub.add_parser("events", help="dead-code events between the checkpoints of one training run")
    parser.add_argument("checkpoints", help="folder of checkpoints of one quantizer")
    parser.add_argument("features", nargs="*", help="feature files or folders: adds usage per step")
    parser.add_argument("--json", dest="json_out", metavar="OUT", help="write the events report to OUT")
    parser.add_argument("--device", default="cpu", help="device for encoding the features (default: cpu)")
    add_load_flags(parser)
    parser.set_defaults(handler=run)


def run(args) -> int:
    files = list_checkpoints([args.checkpoints])
    template = AuditSpec(files[0], tuple(args.features), load=load_options(args), device=args.device)
    check_spec_outputs([("--json", args.json_out)], [template] if args.features else [], extra_inputs=files)

    def progress(done, total):
        print(f"\r{done}/{total} checkpoints", end="", file=sys.stderr, flush=True)

    series, report = series_events(files, args.features or None, template, progress)
    print(file=sys.stderr)
    for warning in series.warnings:
        print(f"rvq-viewer: warning: {warning}", file=sys.stderr)
    if args.json_out:
        atomic_write_text(args.json_out, json.dumps(report.to_dict()))
    print(f"{len(series.entries)} checkpoints, ordered by {series.order}; steps {series.steps[0]}..{series.steps[-1]}")
    counts = Counter((e.step, e.kind) for e in report.events)
    print(f"{'step':>8} " + " ".join(f"{k:>8}" for k in EVENT_KINDS))
    for step in series.steps[1:]:
        print(f"{step:>8} " + " ".join(f"{counts[(step, k)]:>8}" for k in EVENT_KINDS))
    return 0
