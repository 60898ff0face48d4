"""`rvq-viewer [CKPT [FEATURES...]]` or `rvq-viewer RUN_DIR`: the desktop app's entry point, and
`--screenshot` for checks.

With no checkpoint the bundled demo opens and is audited at once. `--screenshot OUT.png` waits until
every view has its data (and the UMAP, unless --no-umap), saves the window (or one view, --view) and
exits: 0 on success, 1 if the views did not fill within --timeout, 2 on bad arguments or input.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from ..io.run_db import is_run_path
from ..locations import resources_dir

VIEWS = ("overview", "histogram", "centroid_map", "residuals", "dead_codes", "family")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rvq-viewer", description="Open a residual vector quantizer and see "
                                "whether its codebooks are healthy. Commands: `rvq-viewer info|audit ...`.")
    p.add_argument("checkpoint", nargs="?", help="quantizer checkpoint (default: the bundled demo)")
    p.add_argument("features", nargs="*", help="feature files or folders to audit it on")
    p.add_argument("--device", help="auto, cpu or cuda:N (default: the last one used)")
    p.add_argument("--levels", help="FSQ levels of the checkpoint, e.g. 8,5,5,5 (or a Stable Codec preset)")
    p.add_argument("--stages", type=int, help="residual FSQ stages (vector-quantize-pytorch ResidualFSQ)")
    p.add_argument("--no-umap", action="store_true", help="PCA only: do not start the UMAP process")
    p.add_argument("--settings", metavar="FILE", help="settings ini file (default: the user's)")
    p.add_argument("--cache", metavar="DIR", help="cache folder for UMAP embeddings (default: the user's)")
    shot = p.add_argument_group("screenshots")
    shot.add_argument("--screenshot", metavar="OUT.png", help="save a PNG once every view is filled, then exit")
    shot.add_argument("--view", choices=VIEWS, help="with --screenshot: only this view")
    shot.add_argument("--layer", type=int, default=0, help="with --screenshot: select this layer")
    shot.add_argument("--code", type=int, help="with --screenshot: select this code")
    shot.add_argument("--all-layers", action="store_true", help="with --screenshot: map of all layers")
    shot.add_argument("--sorted", action="store_true", help="with --screenshot: rank-frequency histogram")
    shot.add_argument("--linear", action="store_true", help="with --screenshot: linear histogram scale")
    shot.add_argument("--size", default="1500x950", help="with --screenshot: window size WxH")
    shot.add_argument("--timeout", type=float, default=240.0, help="with --screenshot: give up after S s")
    return p


def preload() -> None:
    """Import and touch what the worker jobs need, before the window shows.

    A first import inside a worker thread runs a lot of pure Python (scipy builds docstrings,
    PySide's import hook reads each module's source) while holding the GIL, which the GUI thread
    then waits for: ~0.3 s of stutter on a small machine. Paid here, it only delays the window.
    """
    import numpy as np
    import torch
    from scipy.spatial import cKDTree

    from .. import analysis, io, pipeline  # noqa: F401
    from ..analysis import diagnosis  # noqa: F401
    cKDTree(np.zeros((4, 2)))
    torch.zeros(1)


def create_application(argv: list[str] | None = None, theme_choice: str | None = None):
    """The QApplication (reused if one exists), styled (`theme_choice`, default: the saved one), with
    the binding work-around installed."""
    from PySide6.QtGui import QIcon
    from PySide6.QtWidgets import QApplication

    from .compat import install_refcount_guard
    from .widgets.common import configure_pyqtgraph
    app = QApplication.instance() or QApplication(["rvq-viewer", *(argv or [])])
    app.setApplicationName("rvq-viewer")
    app.setOrganizationName("rvq-viewer")
    app.setDesktopFileName("rvq-viewer")
    install_refcount_guard(app)
    configure_pyqtgraph()
    if app.style().objectName().lower() != "fusion":
        app.setStyle("Fusion")
    icon = resources_dir() / "rvq-viewer.svg"
    if icon.is_file():
        app.setWindowIcon(QIcon(str(icon)))
    from . import settings, theme
    theme.apply(app, theme_choice or settings.get("theme"))
    return app


def make_umap_service():
    """The UMAP child-process service, or None where umap-learn is missing."""
    from ..analysis.umap_service import UmapService, umap_available
    from . import settings
    if not umap_available():
        return None
    return UmapService(settings.cache_dir())


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.screenshot and args.checkpoint and not args.features:
        parser.error("--screenshot with a checkpoint needs feature files to audit")
    if args.screenshot and "QT_QPA_PLATFORM" not in os.environ and not os.environ.get("DISPLAY") \
            and not os.environ.get("WAYLAND_DISPLAY") and sys.platform.startswith("linux"):
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    from .platform_check import advice, missing_libraries, uses_xcb
    if uses_xcb():
        missing = missing_libraries()
        if missing:             # Qt would abort the process with a message naming at most one of them
            print(f"rvq-viewer: error: {advice(missing)}", file=sys.stderr)
            return 2
    from PySide6.QtCore import QTimer

    from . import settings
    settings_file = args.settings
    if args.screenshot and not settings_file:
        # Screenshots must not depend on (or change) the user's saved layout and recent files.
        import tempfile
        settings_file = Path(tempfile.mkdtemp(prefix="rvq-viewer-shot-")) / "settings.ini"
    if settings_file or args.cache:
        settings.use_paths(settings_file, args.cache)
    app = create_application()
    preload()

    from ..locations import demo_paths
    from .main_window import MainWindow
    service = None if args.no_umap else make_umap_service()
    window = MainWindow(umap_service=service)
    if args.no_umap:
        window.map.umap_box.setChecked(False)
    if args.device:
        if window.device_box.findData(args.device) < 0:
            print(f"rvq-viewer: error: --device {args.device}: not available "
                  f"(have {', '.join(window.device_box.itemData(i) for i in range(window.device_box.count()))})",
                  file=sys.stderr)
            window.shutdown()
            return 2
        window.set_device(args.device)
    if args.screenshot:
        _prepare_screenshot(window, args)
    window.show()
    if service is not None:
        QTimer.singleShot(300, _start_service(window, service))  # warm UMAP up once the window is up
    if args.checkpoint and is_run_path(args.checkpoint) and not args.features:
        window.open_run(args.checkpoint)
    elif args.checkpoint:
        window.open(args.checkpoint, args.features if args.features else None, load=_load_options(parser, args))
    else:
        checkpoint, features = demo_paths()
        if not checkpoint.is_file():
            window.show_message(f"{checkpoint}: the bundled demo is missing; open a checkpoint (Ctrl+O)")
        else:
            window.open(checkpoint, features)
    if args.screenshot:
        return _run_screenshot(app, window, args)
    code = app.exec()
    window.shutdown()
    return code


def _load_options(parser, args):
    """--levels / --stages as `LoadOptions` (None when neither is given)."""
    if args.levels is None and args.stages is None:
        return None
    from ..pipeline import LoadOptions
    from .load_dialog import parse_levels
    try:
        levels = parse_levels(args.levels or "")
    except ValueError as exc:
        parser.error(f"--levels {args.levels}: {exc}")
    return LoadOptions(levels=levels, stages=args.stages)


def _start_service(window, service):
    def start():
        try:
            service.start()
        except Exception as exc:  # a missing interpreter, a read-only cache: keep PCA
            window.map.umap_box.setChecked(False)
            window.map.status.setText(f"UMAP unavailable: {exc}")
    return start


def _prepare_screenshot(window, args) -> None:
    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        width, height = 1500, 950
    window.resize(width, height)
    window.histogram.log_box.setChecked(not args.linear)
    window.histogram.sorted_box.setChecked(args.sorted)
    window.map.set_all_layers(args.all_layers)


def _run_screenshot(app, window, args) -> int:
    from PySide6.QtCore import QEventLoop, QTimer

    state = {"selected": False, "failed": None}
    window.message_shown.connect(lambda text: state.update(failed=text) if window.banner.kind == "error" else None)
    deadline = time.monotonic() + args.timeout
    loop = QEventLoop()
    outcome = {"code": 1}

    def poll():
        if state["failed"] and window.session is None:
            print(f"rvq-viewer: error: {state['failed']}", file=sys.stderr)
            outcome["code"] = 2
            loop.quit()
            return
        if window.session is not None and not state["selected"] and window.snapshot is not None:
            window.selection.set_layer(min(args.layer, window.session.n_q - 1))
            if args.code is not None:
                window.selection.set_code(window.selection.layer, args.code)
            state["selected"] = True
        ready = state["selected"] and window.views_ready(wait_umap=not args.no_umap)
        if ready or time.monotonic() > deadline:
            if not ready:
                print("rvq-viewer: warning: views not all filled before --timeout; saving anyway",
                      file=sys.stderr)
            for _ in range(3):
                app.processEvents()
            outcome["code"] = _save(window, args) if ready else max(1, _save(window, args))
            loop.quit()

    timer = QTimer()
    timer.setInterval(100)
    timer.timeout.connect(poll)
    timer.start()
    loop.exec()
    timer.stop()
    window.shutdown()
    window.close()
    return outcome["code"]


def _save(window, args) -> int:
    out = Path(args.screenshot)
    out.parent.mkdir(parents=True, exist_ok=True)
    widget = window
    if args.view:
        widget = getattr(window, {"centroid_map": "map", "family": "family_view"}.get(args.view, args.view))
    pixmap = widget.grab()
    if not pixmap.save(str(out), "PNG"):
        print(f"rvq-viewer: error: {out}: cannot write the PNG", file=sys.stderr)
        return 2
    print(f"wrote {out} ({pixmap.width()}x{pixmap.height()})")
    return 0
