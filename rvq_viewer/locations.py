"""Where the app's bundled files are.

In a source checkout (the README's editable install) they are the checkout's `resources/` (icon,
style, desktop entry) and `assets/demo/`. A wheel installs copies under `<prefix>/share/rvq-viewer/`
(`[tool.setuptools.data-files]` in pyproject.toml), plus the desktop entry and icon at their XDG
places, `<prefix>/share/applications/` and `<prefix>/share/icons/`; `<prefix>` is the environment's,
or the user's base with `pip install --user`.
"""

from __future__ import annotations

import os
import sysconfig
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent


def installed_roots() -> list[Path]:
    """`share/rvq-viewer` under this environment's data prefix and under the user's, in that order."""
    roots = []
    for scheme in (sysconfig.get_default_scheme(), f"{os.name}_user"):
        try:
            roots.append(Path(sysconfig.get_path("data", scheme)) / "share" / "rvq-viewer")
        except KeyError:          # a platform without a user scheme
            continue
    return roots


def _first(candidates: list[Path], marker: str) -> Path:
    """The first folder holding `marker`, else the first candidate (whose absence callers report)."""
    for folder in candidates:
        if (folder / marker).is_file():
            return folder
    return candidates[0]


def resources_dir() -> Path:
    """Icon, style sheet and desktop entry."""
    return _first([CHECKOUT / "resources", *(root / "resources" for root in installed_roots())], "style.qss")


def demo_dir() -> Path:
    """The bundled demo quantizers and features."""
    return _first([CHECKOUT / "assets" / "demo", *(root / "demo" for root in installed_roots())], "healthy.pt")


def cache_dir() -> Path:
    """Where UMAP embeddings and numba's compiled code are kept: `RVQ_VIEWER_CACHE`, else the user's cache
    folder (~/.cache/rvq-viewer on Linux). The app and `rvq-viewer warm-up` both use this."""
    if os.environ.get("RVQ_VIEWER_CACHE"):
        return Path(os.environ["RVQ_VIEWER_CACHE"])
    import platformdirs
    return Path(platformdirs.user_cache_dir("rvq-viewer", appauthor=False))


def demo_paths() -> tuple[Path, list[Path]]:
    """The bundled demo: the healthy quantizer and its held-out features."""
    root = demo_dir()
    return root / "healthy.pt", [root / "heldout.npy"]
