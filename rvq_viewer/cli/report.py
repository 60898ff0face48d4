"""`rvq-viewer report CKPT FEATURES... --html OUT.html`: audit, diagnose and write one self-contained HTML file.

With `--compare CKPT_B` (another quantizer on the same or `--features-b` features) or `--features-b`
alone (the same quantizer on a second feature set) the report gains a side-by-side comparison.
`--fail-on collapse` makes the command exit with status 3 when a collapse verdict holds, like `audit`.
"""

from __future__ import annotations

import sys

from ..analysis.diagnosis import FAIL_ON, exit_code_for, format_verdicts, write_json
from ..errors import RvqViewerError
from ..pipeline import CompareOutcome, check_spec_outputs, iter_compare, run_audit_spec
from ..report import write_report
from .audit import print_shards, print_warnings
from .options import ProgressBar, add_audit_options, add_load_options, executor_from_args, spec_from_args


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "report", help="audit, diagnose and write a self-contained HTML report (verdicts, tables, charts)",
        description="Audit a quantizer on features, diagnose its codebooks and write one self-contained HTML "
                    "file with the verdicts, their evidence and remedies, tables and charts.")
    add_load_options(parser)
    parser.add_argument("features", nargs="+", help="feature files or folders (.npy, .pt, .npz, .safetensors)")
    parser.add_argument("--html", required=True, metavar="OUT.html", help="write the report here")
    parser.add_argument("--json", dest="json_out", metavar="OUT", help="also write the JSON report with verdicts")
    parser.add_argument("--compare", metavar="CKPT_B", help="a second quantizer to compare with (same format options)")
    parser.add_argument("--features-b", nargs="+", metavar="FEATURES",
                        help="features for the second audit (default: the same features)")
    parser.add_argument("--title", help="title of the report (default: the checkpoint's file name)")
    add_audit_options(parser)
    parser.add_argument("--no-pairs", action="store_true",
                        help="skip the statistics of consecutive layers (stage redundancy, the rank of each "
                             "layer's input): a little faster; those rules are then left out")
    parser.add_argument("--fail-on", choices=FAIL_ON, default="never",
                        help="exit with status 3 when a verdict of this severity holds (default: never)")
    parser.set_defaults(handler=run)


def _labels(args, features_b) -> tuple[str, str]:
    label_a = args.checkpoint if args.compare else f"{args.checkpoint} on {' '.join(args.features)}"
    label_b = args.compare if args.compare else f"{args.checkpoint} on {' '.join(features_b)}"
    if args.compare and args.features_b:
        label_a += f" on {' '.join(args.features)}"
        label_b += f" on {' '.join(features_b)}"
    return label_a, label_b


def run(args) -> int:
    if not args.html.lower().endswith((".html", ".htm")):
        raise RvqViewerError(f"--html {args.html}: the report is HTML; give a file name ending in .html")
    spec_a = spec_from_args(args, pairs=not args.no_pairs)
    spec_b = None
    if args.compare or args.features_b:
        features_b = args.features_b or args.features
        spec_b = spec_from_args(args, checkpoint=args.compare or args.checkpoint, features=features_b,
                                pairs=not args.no_pairs)
    check_spec_outputs([("--html", args.html), ("--json", args.json_out)], [s for s in (spec_a, spec_b) if s])

    compared = None
    with executor_from_args(args) as executor:
        if spec_b is None:
            bar = ProgressBar(args)
            try:
                outcome = run_audit_spec(spec_a, progress=bar, executor=executor)
            finally:
                bar.close()
        else:
            compared = _compare(args, spec_a, spec_b, executor)
            outcome = compared.a
    print_warnings(outcome)
    if outcome.verdicts is None:
        raise RvqViewerError(outcome.diagnosis_error or "the audit gave no verdicts", args.checkpoint)
    write_report(args.html, outcome, compared, args.title)
    if args.json_out:
        write_json(args.json_out, outcome.result, outcome.verdicts)
    q = outcome.quantizer
    print(f"{q.format}: n_q={q.n_q} K={q.codebook_size} D={q.dim}, {outcome.result.frames} frames")
    print_shards(outcome)
    print(format_verdicts(outcome.verdicts, "warning"))
    if compared is not None:
        print(compared.comparison.table())
    print(f"report: {args.html}")
    return exit_code_for(outcome.verdicts, args.fail_on)


def _compare(args, spec_a, spec_b, executor=None):
    """Both audits, with a progress line per stage on stderr unless --quiet."""
    shown = None
    for item in iter_compare(spec_a, spec_b, _labels(args, list(spec_b.features)), executor=executor):
        if isinstance(item, CompareOutcome):
            return item
        if not args.quiet and item.stage != shown:
            shown = item.stage
            print(f"{item.stage}…", file=sys.stderr)
    raise AssertionError("iter_compare ended without an outcome")
