"""Entry point: `rvq-viewer info|audit ...` runs the command line, anything else opens the desktop app."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    from .runtime.cpu_pool import fit_torch_threads
    fit_torch_threads()
    from .cli import COMMANDS
    if argv and (argv[0] in COMMANDS or argv[0] in ("-h", "--help", "--version")):
        from .cli import main as cli_main
        return cli_main(argv)
    from .gui.app import main as gui_main
    return gui_main(argv)


if __name__ == "__main__":
    sys.exit(main())
