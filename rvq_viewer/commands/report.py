"""`rvq-viewer report CKPT FEATURES... --html OUT.html`: audit, diagnose and write one self-contained HTML file.

With `--compare CKPT_B` (another quantizer on the same or `--features-b` features) or `--features-b`
alone (the same quantizer on a second feature set) the report gains a side-by-side comparison.
`--fail-on collapse` makes the command exit with status 3 when a collapse verdict holds, like `audit`.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import RvqViewerError

NAME = "report"


def register(subparsers) -> None:
    from ..cli import add_audit_options, add_load_options
    from ..diagnosis import FAIL_ON

    parser = subparsers.add_parser(
        NAME, help="audit, diagnose and write a self-contained HTML report (verdicts, tables, charts)",
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
                        help="skip the second pass that measures redundancy between layers and the rank of "
                             "each layer's input (faster; those rules are then left out)")
    parser.add_argument("--fail-on", choices=FAIL_ON, default="never",
                        help="exit with status 3 when a verdict of this severity holds (default: never)")


def _audit(quantizer, paths, args, device, label: str):
    """Audit plus (unless --no-pairs) the pair pass, with a progress bar per pass on stderr."""
    from ..audit import with_threshold
    from ..cli import audit_with_progress
    from ..diagnosis import gather_pairs

    source, result = audit_with_progress(quantizer, paths, args, device, label)
    pairs = None
    if not args.no_pairs:
        if not args.quiet:
            print(f"pairs {label}: joint code histograms of consecutive layers", file=sys.stderr)
        pairs = gather_pairs(quantizer, source, device)
    return with_threshold(quantizer, args.ema_threshold), result, pairs


def run(args) -> int:
    from ..cli import check_output_paths, load_from_args, resolve_device_arg
    from ..compare import compare
    from ..diagnosis import diagnose, exit_code_for, format_verdicts, write_json
    from ..report import write_html

    def load(path):
        return load_from_args(argparse.Namespace(**{**vars(args), "checkpoint": path}))

    if not args.html.lower().endswith((".html", ".htm")):
        raise RvqViewerError(f"--html {args.html}: the report is HTML; give a file name ending in .html")
    check_output_paths([("--html", args.html), ("--json", args.json_out)], [args.checkpoint, args.compare],
                       list(args.features) + list(args.features_b or []))
    device = resolve_device_arg(args)

    quantizer = load(args.checkpoint)
    quantizer, result, pairs = _audit(quantizer, args.features, args, device, "A" if args.compare or args.features_b else "")
    verdicts = diagnose(result, quantizer, pairs)

    comparison = verdicts_b = None
    if args.compare or args.features_b:
        quantizer_b = load(args.compare) if args.compare else quantizer
        features_b = args.features_b or args.features
        quantizer_b, result_b, pairs_b = _audit(quantizer_b, features_b, args, device, "B")
        verdicts_b = diagnose(result_b, quantizer_b, pairs_b)
        label_a = args.checkpoint if args.compare else f"{args.checkpoint} on {' '.join(args.features)}"
        label_b = args.compare if args.compare else f"{args.checkpoint} on {' '.join(features_b)}"
        if args.compare and args.features_b:
            label_a += f" on {' '.join(args.features)}"
            label_b += f" on {' '.join(features_b)}"
        comparison = compare(result, result_b, quantizer, quantizer_b, label_a, label_b)

    write_html(args.html, result, quantizer, verdicts, comparison, pairs, args.title, verdicts_b)
    if args.json_out:
        write_json(args.json_out, result, verdicts)
    print(f"{quantizer.format}: n_q={quantizer.n_q} K={quantizer.codebook_size} D={quantizer.dim}, "
          f"{result.frames} frames")
    print(format_verdicts(verdicts, "warning"))
    if comparison is not None:
        print(comparison.table())
    print(f"report: {args.html}")
    return exit_code_for(verdicts, args.fail_on)
