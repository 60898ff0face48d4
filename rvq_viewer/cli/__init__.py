"""Command line: `rvq-viewer info|audit|report|events|desktop ...`. Bad input exits with status 2 and one
line on stderr; `--fail-on` verdicts exit with 3.

Each command lives in its own module here with `register(subparsers)`, which sets the parser's
`handler(args) -> int`. Add a module name to COMMAND_MODULES to add a command."""

from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import RvqViewerError
from ..version import __version__

EXIT_BAD_INPUT = 2
EXIT_VERDICT = 3  # --fail-on: a verdict of that severity holds
COMMAND_MODULES = ("audit", "report", "events", "desktop", "warm_up", "runs")
COMMANDS = ("info", "audit", "report", "events", "desktop", "warm-up", "runs")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rvq-viewer", description="Audit the codebooks of a residual "
                                     "vector quantizer. With no command, opens the desktop app.")
    parser.add_argument("--version", action="version", version=f"rvq-viewer {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except RvqViewerError as exc:
        print(f"rvq-viewer: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:  # e.g. the disk is full
        print(f"rvq-viewer: error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("rvq-viewer: interrupted", file=sys.stderr)
        return 130
