"""`rvq-viewer desktop [--remove]`: add rvq-viewer to the desktop's application menu (freedesktop.org).

A wheel puts the desktop entry under its prefix's share/, which desktops read for system and `--user`
installs but not for a virtual environment such as the README's `.venv`. This writes the entry, with
`Exec` pointing at this very installation, and the icon into the user's data folder
(`$XDG_DATA_HOME`, else `~/.local/share`).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

ENTRY = "rvq-viewer.desktop"
ICON = "rvq-viewer.svg"


def register(sub) -> None:
    parser = sub.add_parser("desktop", help="add rvq-viewer to your desktop's application menu (or --remove it)")
    parser.add_argument("--remove", action="store_true", help="remove the entry and icon this command wrote")
    parser.set_defaults(handler=run)


def data_home() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")


def targets() -> tuple[Path, Path]:
    home = data_home()
    return home / "applications" / ENTRY, home / "icons" / "hicolor" / "scalable" / "apps" / ICON


def launcher() -> str:
    """The command line that starts this installation's app, quoted for a desktop entry's Exec key."""
    script = Path(sys.argv[0])
    if script.name.startswith("rvq-viewer") and script.is_file():
        parts = [str(script.resolve())]
    else:                                    # run as `python -m rvq_viewer`
        parts = [str(Path(sys.executable).resolve()), "-m", "rvq_viewer"]
    # Desktop Entry Specification: quote arguments with reserved characters, escaping " ` $ and \.
    quoted = []
    for part in parts:
        if any(c in part for c in ' \t\n"\'\\><~|&;$*?#()`'):
            part = '"' + "".join("\\" + c if c in '"`$\\' else c for c in part) + '"'
        quoted.append(part)
    return " ".join(quoted)


def entry_text(template: str, exec_line: str) -> str:
    lines = [f"Exec={exec_line} %F" if line.startswith("Exec=") else line for line in template.splitlines()]
    return "\n".join(lines) + "\n"


def run(args) -> int:
    from ..errors import RvqViewerError
    from ..io import atomic_path, atomic_write_text
    from ..locations import resources_dir

    entry, icon = targets()
    if args.remove:
        for path in (entry, icon):
            path.unlink(missing_ok=True)
            print(f"removed {path}")
        return 0
    source = resources_dir()
    if not (source / ENTRY).is_file() or not (source / ICON).is_file():
        raise RvqViewerError(f"{source}: the desktop entry and icon are missing from this installation")
    with atomic_path(icon) as tmp:
        shutil.copyfile(source / ICON, tmp)
    atomic_write_text(entry, entry_text((source / ENTRY).read_text(encoding="utf-8"), launcher()))
    print(f"wrote {entry}\nwrote {icon}")
    return 0
