"""`rvq-viewer warm-up`: compile umap's code once, so the app's first centroid map takes seconds.

The app computes UMAP maps in a child process (analysis/umap_service.py) whose first fit on a machine
compiles umap's numba code: 20 s to 3 min on a loaded 2-core machine. That compiled code is cached on
disk, so doing it once at install time (scripts/bootstrap.sh runs this) is what a first launch then finds.
"""

from __future__ import annotations

import time

from ..analysis.umap_service import UmapService, umap_available
from ..errors import RvqViewerError
from ..locations import cache_dir


def register(sub) -> None:
    parser = sub.add_parser("warm-up", help="compile umap's code once (the set-up does it), so the app's "
                                            "first UMAP map takes seconds")
    parser.add_argument("--timeout", type=float, default=900.0, help="give up after this many seconds")
    parser.set_defaults(handler=run)


def run(args) -> int:
    if not umap_available():
        raise RvqViewerError("umap-learn is not installed: the app shows PCA maps only")
    folder = cache_dir()
    service = UmapService(folder)
    t0 = time.monotonic()
    try:
        service.start()
        if not service.wait_ready(args.timeout):
            raise RvqViewerError(f"the UMAP process did not get ready in {args.timeout:.0f} s "
                                 f"(its log: {folder / 'umap-child.log'})")
        info = service.ready_info
    finally:
        service.close()
    print(f"umap ready in {time.monotonic() - t0:.1f} s (import {info.get('import_s', 0):.1f} s, compile and "
          f"warm-up fit {info.get('warmup_s', 0):.1f} s); compiled code cached in {folder / 'numba'}")
    return 0
