"""Before Qt starts: are the system libraries its X11 plugin needs there?

Without them Qt aborts the process with a message about "platform plugins" that names at most one of
them. The plugin's needs are read from the plugin itself (`ldd`: what it links that the system lacks) and
Qt's own runtime needs (libxcb-cursor, opened when the plugin starts); the user gets one line naming
every missing library and the command that installs them on Debian/Ubuntu and on Fedora.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
from pathlib import Path

# Opened by Qt at run time (not linked), so `ldd` cannot see it.
RUNTIME = ("libxcb-cursor.so.0",)
# Every library the xcb plugin of Qt 6.5+ needs beyond libxcb itself, for when `ldd` is not there.
KNOWN = ("libxcb-cursor.so.0", "libxcb-icccm.so.4", "libxcb-keysyms.so.1", "libxcb-image.so.0",
         "libxcb-render-util.so.0", "libxkbcommon-x11.so.0", "libxcb-shape.so.0", "libxcb-xkb.so.1",
         "libxcb-randr.so.0", "libxcb-xfixes.so.0")
# soname -> (Debian/Ubuntu package, Fedora package)
PACKAGES = {
    "libxcb-cursor.so.0": ("libxcb-cursor0", "xcb-util-cursor"),
    "libxcb-icccm.so.4": ("libxcb-icccm4", "xcb-util-wm"),
    "libxcb-keysyms.so.1": ("libxcb-keysyms1", "xcb-util-keysyms"),
    "libxcb-image.so.0": ("libxcb-image0", "xcb-util-image"),
    "libxcb-render-util.so.0": ("libxcb-render-util0", "xcb-util-renderutil"),
    "libxkbcommon-x11.so.0": ("libxkbcommon-x11-0", "libxkbcommon-x11"),
    "libxcb-shape.so.0": ("libxcb-shape0", "libxcb"),
    "libxcb-xkb.so.1": ("libxcb-xkb1", "libxcb"),
    "libxcb-randr.so.0": ("libxcb-randr0", "libxcb"),
    "libxcb-xfixes.so.0": ("libxcb-xfixes0", "libxcb"),
    "libxcb-xinerama.so.0": ("libxcb-xinerama0", "libxcb"),
    "libxcb-shm.so.0": ("libxcb-shm0", "libxcb"),
    "libxcb-sync.so.1": ("libxcb-sync1", "libxcb"),
    "libxcb-render.so.0": ("libxcb-render0", "libxcb"),
    "libxcb-util.so.1": ("libxcb-util1", "xcb-util"),
    "libxkbcommon.so.0": ("libxkbcommon0", "libxkbcommon"),
    "libX11-xcb.so.1": ("libx11-xcb1", "libX11-xcb"),
    "libfontconfig.so.1": ("libfontconfig1", "fontconfig"),
    "libEGL.so.1": ("libegl1", "libglvnd-egl"),
    "libGL.so.1": ("libgl1", "libglvnd-glx"),
}


def uses_xcb(env=os.environ) -> bool:
    """Qt will pick its X11 plugin: Linux, an X display, and no other platform asked for."""
    if not sys.platform.startswith("linux"):
        return False
    platform = env.get("QT_QPA_PLATFORM", "")
    if platform:
        return platform.split(":")[0] == "xcb"
    if env.get("WAYLAND_DISPLAY") and env.get("XDG_SESSION_TYPE") == "wayland":
        return False
    return bool(env.get("DISPLAY"))


def _qt_files() -> list[Path]:
    try:
        import PySide6
    except ImportError:
        return []
    qt = Path(PySide6.__file__).parent / "Qt"
    return [p for p in (qt / "plugins" / "platforms" / "libqxcb.so", qt / "lib" / "libQt6XcbQpa.so.6") if p.is_file()]


def _not_found_by_ldd(files: list[Path]) -> set[str] | None:
    """Libraries `ldd` cannot resolve for these files; None when ldd is not there or fails."""
    ldd = shutil.which("ldd")
    if ldd is None or not files:
        return None
    missing: set[str] = set()
    for path in files:
        try:
            out = subprocess.run([ldd, str(path)], capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            return None
        missing.update(line.split("=>")[0].strip() for line in out.splitlines() if "not found" in line)
    return missing


def _cannot_open(names) -> set[str]:
    missing = set()
    for name in names:
        try:
            ctypes.CDLL(name)
        except OSError:
            missing.add(name)
    return missing


def missing_libraries() -> list[str]:
    """Sonames the X11 plugin needs and the system lacks (sorted; empty when all are there)."""
    linked = _not_found_by_ldd(_qt_files())
    missing = linked if linked is not None else _cannot_open(KNOWN)
    return sorted(missing | _cannot_open(RUNTIME))


def advice(missing: list[str]) -> str:
    """One line: what is missing and how to install it."""
    debian = sorted({PACKAGES.get(m, (m, m))[0] for m in missing})
    fedora = sorted({PACKAGES.get(m, (m, m))[1] for m in missing})
    return (f"the desktop app needs system libraries that are missing: {', '.join(missing)}; install them with "
            f"`sudo apt install {' '.join(debian)}` (Debian/Ubuntu) or `sudo dnf install {' '.join(fedora)}` "
            "(Fedora), or run the command line (`rvq-viewer audit ...`), which needs none of them")
