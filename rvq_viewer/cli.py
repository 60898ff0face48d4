"""Command line: `rvq-viewer info|audit ...`. Bad input exits with status 2 and one line on stderr."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

from . import __version__
from .errors import RvqViewerError
from .locations import demo_dir

EXIT_BAD_INPUT = 2
EXIT_VERDICT = 3  # --fail-on: a verdict of that severity holds
# Subcommands that live in their own module `rvq_viewer/commands/<name>.py`, each with
# `register(subparsers)` and `run(args) -> int`. Add a name here to add a command.
PLUGIN_COMMANDS: tuple[str, ...] = ("events", "report", "desktop")
COMMANDS = ("info", "audit") + PLUGIN_COMMANDS


def demo_paths() -> tuple[Path, list[Path]]:
    """The bundled demo: the healthy quantizer and its held-out features."""
    root = demo_dir()
    return root / "healthy.pt", [root / "heldout.npy"]


def add_load_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="quantizer checkpoint (.pt/.pth/.ckpt/.safetensors/.npy/.npz)")
    parser.add_argument("--format", help="force a checkpoint format instead of detecting it")
    parser.add_argument("--n-q", type=int, help="use the first N layers (Mimi: 8 of 32 by default, up to 32)")
    parser.add_argument("--skip-transform", action="store_true",
                        help="features are already projected (e.g. GPT-SoVITS features after ssl_proj)")
    lookup = parser.add_mutually_exclusive_group()
    lookup.add_argument("--cosine", dest="cosine", action="store_true", default=None,
                        help="vector-quantize-pytorch: cosine-similarity codebooks (default: from config or detected)")
    lookup.add_argument("--euclidean", dest="cosine", action="store_false", help="vector-quantize-pytorch: Euclidean")
    parser.add_argument("--heads", type=int, help="vector-quantize-pytorch: heads sharing one codebook")
    parser.add_argument("--vq-strides", type=_strides, help="SNAC level strides, e.g. 4,2,1 (default: config.json)")


def add_audit_options(parser: argparse.ArgumentParser) -> None:
    """How features are read and encoded: shared by `audit` and `report`."""
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--batch", type=int, default=16384, help="frames per chunk (default: 16384)")
    parser.add_argument("--layout", choices=["TD", "DT", "BDT", "BTD"],
                        help="axis order of the feature arrays when their shape is ambiguous")
    parser.add_argument("--key", help="array name inside .npz / .safetensors / .pt dict feature files")
    parser.add_argument("--ema-threshold", type=float, help="EMA dead-code threshold (default: the format's)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _strides(text: str) -> list[int]:
    try:
        strides = [int(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 4,2,1, got {text!r}") from None
    if not strides or min(strides) < 1:
        raise argparse.ArgumentTypeError(f"strides must be positive integers, got {text!r}")
    return strides


def load_from_args(args):
    """The quantizer named on the command line, with the load options given there."""
    from .io import load_quantizer
    options = {k: v for k, v in (("cosine", args.cosine), ("heads", args.heads), ("vq_strides", args.vq_strides))
               if v is not None}
    return load_quantizer(args.checkpoint, format=args.format, n_q=args.n_q,
                          skip_transform=args.skip_transform, **options)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rvq-viewer", description="Audit the codebooks of a residual "
                                     "vector quantizer. With no command, opens the desktop app.")
    parser.add_argument("--version", action="version", version=f"rvq-viewer {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="detected format, n_q, K, D and EMA statistics of a checkpoint")
    add_load_options(info)
    info.add_argument("--json", action="store_true", help="print JSON instead of text")

    audit = sub.add_parser("audit", help="encode features and report per-layer codebook health")
    add_load_options(audit)
    audit.add_argument("features", nargs="+", help="feature files or folders (.npy, .pt, .npz, .safetensors)")
    audit.add_argument("--json", dest="json_out", metavar="OUT", help="write the JSON report to OUT")
    add_audit_options(audit)
    audit.add_argument("--fail-on", choices=("collapse", "warning", "never"), default="never",
                       help=f"exit with status {EXIT_VERDICT} when a verdict of this severity holds "
                            "(for training pipelines)")
    for name in PLUGIN_COMMANDS:
        _plugin(name).register(sub)
    return parser


def _plugin(name: str):
    return importlib.import_module(f"rvq_viewer.commands.{name}")


def cmd_info(args) -> int:
    quantizer = load_from_args(args)
    summary = quantizer.summary()
    summary["notes"] = quantizer.notes
    if args.json:
        print(json.dumps(summary, indent=1))
        return 0
    print(f"{args.checkpoint}")
    for key in ("format", "n_q", "codebook_size", "dim", "codebook_dim", "ema_statistics", "dead_code_rule"):
        print(f"  {key:15} {summary[key]}")
    for note in quantizer.notes:
        print(f"  note: {note}")
    return 0


def audit_with_progress(quantizer, paths, args, device, label: str = "", pairs: bool = False):
    """(FeatureSource, AuditResult) for the features on the command line, with a progress bar on
    stderr unless --quiet."""
    from tqdm import tqdm

    from .audit import run_audit
    from .io import FeatureSource

    source = FeatureSource(paths, quantizer.dim, layout=args.layout, chunk_frames=args.batch,
                           frame_stride=quantizer.frame_stride, key=args.key,
                           pack=quantizer.frame_stride == 1)  # join short files into full chunks
    bar = None if args.quiet else tqdm(total=source.total_frames(), unit="frames", unit_scale=True,
                                       file=sys.stderr, desc=" ".join(filter(None, ["audit", label, f"on {device}"])))

    def progress(snapshot):
        bar.update(snapshot.frames_done - bar.n)

    try:
        result = run_audit(quantizer, source, device, ema_threshold=args.ema_threshold,
                           progress=progress if bar else None, pairs=pairs)
    finally:
        if bar:
            bar.close()
    return source, result


def check_output_paths(outputs: list[tuple[str, str | None]], checkpoints: list, features: list) -> None:
    """Refuse, before any work, an output path that is one of the inputs (or of the files in an input
    folder) or that two outputs share."""
    from .io import check_outputs, list_feature_files

    inputs = [Path(p) for p in checkpoints if p] + [Path(p) for p in features]
    for folder in [Path(p) for p in checkpoints if p and Path(p).is_dir()]:   # a series: its files
        inputs.extend(p for p in folder.iterdir() if p.is_file())
    if features:
        inputs.extend(list_feature_files(features, skipped=[]))
    check_outputs(outputs, inputs)


def resolve_device_arg(args):
    from .audit import resolve_device
    try:
        return resolve_device(args.device)
    except (ValueError, RuntimeError) as exc:
        raise RvqViewerError(f"--device {args.device}: {exc}") from None


def cmd_audit(args) -> int:
    from .audit import with_threshold

    check_output_paths([("--json", args.json_out)], [args.checkpoint], args.features)
    quantizer = load_from_args(args)
    device = resolve_device_arg(args)
    source, result = audit_with_progress(quantizer, args.features, args, device, pairs=True)
    from .diagnosis import diagnose, exit_code_for, format_verdicts, write_json
    verdicts = diagnose(result, with_threshold(quantizer, args.ema_threshold))
    if args.json_out:
        write_json(args.json_out, result, verdicts)
    for warning in source.warnings():
        print(f"rvq-viewer: warning: {warning}", file=sys.stderr)
    print(f"{quantizer.format}: n_q={quantizer.n_q} K={quantizer.codebook_size} D={quantizer.dim}, "
          f"{result.frames} frames from {len(source.files)} file(s)")
    print(result.table())
    if result.ema_dead_rule:
        print(f"ema-dead: {result.ema_dead_rule} in the checkpoint; dead: unused on these features")
    print(format_verdicts(verdicts, "warning"))
    return exit_code_for(verdicts, args.fail_on)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {"info": cmd_info, "audit": cmd_audit}
    handlers.update({name: _plugin(name).run for name in PLUGIN_COMMANDS})
    try:
        return handlers[args.command](args)
    except RvqViewerError as exc:
        print(f"rvq-viewer: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:  # e.g. the report's folder is read-only or the disk is full
        print(f"rvq-viewer: error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("rvq-viewer: interrupted", file=sys.stderr)
        return 130
