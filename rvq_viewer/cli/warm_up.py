"""`rvq-viewer warm-up`: compile umap's code once, so the app's first centroid map takes seconds.

The app computes UMAP maps in a child process (analysis/umap_service.py) whose first fit on a machine
compiles umap's numba code: 20 s to 3 min on a loaded 2-core machine. That compiled code is cached on
disk, so doing it once at install time (scripts/bootstrap.sh runs this) is what a first launch then finds.
It also builds the fused native search kernel (`quant/_native.py`, where a C compiler exists) and
measures the nearest-code search's fastest configuration (`quant/search_probe.py`) for the demo's
codebooks and the common codecs' shapes, so that no first audit waits for either.
"""

from __future__ import annotations

import time

from ..analysis.umap_service import UmapService, umap_available
from ..errors import RvqViewerError
from ..locations import cache_dir, demo_paths

# (D, K) of common codebooks: EnCodec / DAC 24 kHz, GPT-SoVITS, Mimi, a DAC-style 4096 table.
COMMON_SHAPES = [(128, 1024), (768, 1024), (256, 2048), (128, 4096), (8, 1024), (8, 4096)]


def register(sub) -> None:
    parser = sub.add_parser("warm-up", help="compile umap's code once (the set-up does it), so the app's "
                                            "first UMAP map takes seconds")
    parser.add_argument("--timeout", type=float, default=900.0, help="give up after this many seconds")
    parser.set_defaults(handler=run)


def run(args) -> int:
    probe_search()
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


def probe_search() -> None:
    from ..io import load_quantizer
    from ..quant import search_probe
    from ..runtime.cpu_pool import worker_count
    from ..runtime.cpu_quota import quota_note
    t0 = time.monotonic()
    shapes = list(COMMON_SHAPES)
    try:
        demo = load_quantizer(demo_paths()[0])
        shapes = sorted({(int(c.shape[1]), int(c.shape[0])) for c in demo.codebooks} | set(shapes))
    except RvqViewerError:
        pass                                    # no demo in this install: the common shapes only
    chosen = {shape: search_probe.config_for(*shape) for shape in shapes}
    paths = sorted({search_probe.label(c).split(" panel")[0] for c in chosen.values()})
    print(f"search configurations for {len(shapes)} codebook shapes in {time.monotonic() - t0:.1f} s "
          f"({', '.join(paths)}); kept in {search_probe.cache_path()}")
    print(search_probe.native_kernel_status())
    note = quota_note()
    print(f"search workers: {worker_count()}" + (f" ({note})" if note else ""))
