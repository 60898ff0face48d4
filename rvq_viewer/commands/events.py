"""`rvq-viewer events CKPT_DIR [FEATURES...] --json OUT`: dead-code events across a checkpoint series."""

from __future__ import annotations

import json
import sys
from collections import Counter


def register(sub) -> None:
    parser = sub.add_parser("events", help="dead-code events between the checkpoints of one training run")
    parser.add_argument("checkpoints", help="folder of checkpoints of one quantizer")
    parser.add_argument("features", nargs="*", help="feature files or folders: adds usage per step")
    parser.add_argument("--json", dest="json_out", metavar="OUT", help="write the events report to OUT")
    parser.add_argument("--device", default="cpu", help="device for encoding the features (default: cpu)")


def run(args) -> int:
    from ..cli import check_output_paths, resolve_device_arg
    from ..io import atomic_write_text
    from ..series import find_events, open_series

    check_output_paths([("--json", args.json_out)], [args.checkpoints], args.features)
    series = open_series([args.checkpoints])
    device = resolve_device_arg(args)

    def progress(done, total):
        print(f"\r{done}/{total} checkpoints", end="", file=sys.stderr, flush=True)

    report = find_events(series, args.features or None, device, progress)
    print(file=sys.stderr)
    if args.json_out:
        atomic_write_text(args.json_out, json.dumps(report.to_dict()))
    print(f"{len(series.entries)} checkpoints, ordered by {series.order}; steps {series.steps[0]}..{series.steps[-1]}")
    counts = Counter((e.step, e.kind) for e in report.events)
    kinds = ("died", "revived", "replaced")
    print(f"{'step':>8} " + " ".join(f"{k:>8}" for k in kinds))
    for step in series.steps[1:]:
        print(f"{step:>8} " + " ".join(f"{counts[(step, k)]:>8}" for k in kinds))
    return 0
