"""Command line: `rvq-viewer info|audit|report|events|desktop ...`. Bad input exits with status 2 and one
line on stderr; `--fail-on` verdicts exit with 3; Ctrl+C exits with 130 and `rvq-viewer: interrupted`,
leaving any previous output file as it was.

Each command lives in its own module here with `register(subparsers)`, which sets the parser's
`handler(args) -> int`. Add a module name to COMMAND_MODULES to add a command."""

from __future__ import annotations

import argparse
import importlib
import re
import sys

from ..errors import RvqViewerError
from ..version import __version__
from . import interrupt

EXIT_BAD_INPUT = 2
EXIT_VERDICT = 3  # --fail-on: a verdict of that severity holds
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it
MAX_MESSAGE = 600
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
    _names_as_given()
    previous = interrupt.install()
    try:
        args = build_parser().parse_args(argv)
        return args.handler(args)
    except RvqViewerError as exc:
        where = f"{_one_line(exc.path, None)}: " if exc.path else ""
        print(f"rvq-viewer: error: {where}{_one_line(exc.reason)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:  # e.g. the disk is full
        where = f"{_one_line(str(exc.filename), None)}: " if exc.filename else ""
        print(f"rvq-viewer: error: {where}{_one_line(exc.strerror or str(exc))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        # Outputs are written through a temporary renamed at the end, so nothing half-written is left;
        # the CPU workers and read-ahead threads finish their current piece before the process exits.
        # Further Ctrl+C stay ignored until then (restoring the handler would let one kill the exit).
        previous = None
        print("rvq-viewer: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        interrupt.restore(previous)


def _names_as_given() -> None:
    """File names that are not valid UTF-8 print as the bytes they are, in any locale, not as an
    UnicodeEncodeError (Python's default outside the C locale)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="surrogateescape")
        except (AttributeError, ValueError, OSError):
            pass


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _one_line(text: str, limit: int | None = MAX_MESSAGE) -> str:
    """Text shown on exactly one line (control characters, newlines included, written as escapes, as
    a file name or a file's contents may hold them), cut to `limit` characters."""
    text = _CONTROL.sub(lambda m: m[0].encode("unicode_escape").decode("ascii"), text.strip())
    return text if limit is None or len(text) <= limit else text[:limit - 1] + "…"
