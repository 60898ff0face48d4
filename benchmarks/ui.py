"""Event-loop stalls and time-to-filled-views of the real main window (a benchmark, not a test).

A 10 ms QTimer heartbeat on the GUI thread records the gap between its ticks from the moment the
window is shown until the UMAP map is shown (or --timeout); any gap well above 10 ms is time the
event loop could not run (a frozen window). Target: no gap above 50 ms. Gaps are reported per phase:
first-paint (from show() until the window is exposed and painted once, before any data: launch cost,
reported apart), load+audit, and umap (after the audit, while the UMAP child runs). The machine's load
average is printed too: on a shared 2-core box other processes' CPU use shows up as gaps.

    QT_QPA_PLATFORM=offscreen .venv/bin/python benchmarks/ui.py                 # the demo, warm caches
    .venv/bin/python benchmarks/ui.py --fresh-cache                             # cold UMAP (no cache)
    .venv/bin/python benchmarks/ui.py --repeat 8                                # a longer audit
    .venv/bin/python benchmarks/ui.py --synthetic-k 65536 --no-umap             # a huge codebook

After the window, the same audit runs as the command line runs it (a fresh process, `run_audit_spec`):
`gui_over_cli` is the window's audit time over the command line's; the goal is about 1.

Prints one JSON object (and a readable summary on stderr).
"""

from __future__ import annotations

import time

T_START = time.perf_counter()  # before the heavy imports: "launch" as the user sees it, minus Python's start

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", help="default: the bundled healthy demo")
    p.add_argument("--features", nargs="*", help="default: the demo's heldout.npy")
    p.add_argument("--repeat", type=int, default=1, help="audit the feature list N times over (longer audit)")
    p.add_argument("--synthetic-k", type=int, help="use a random plain codebook with this K instead")
    p.add_argument("--synthetic-nq", type=int, default=2)
    p.add_argument("--synthetic-dim", type=int, default=32)
    p.add_argument("--synthetic-frames", type=int, default=100_000)
    p.add_argument("--no-umap", action="store_true", help="PCA only")
    p.add_argument("--fresh-cache", action="store_true", help="empty UMAP and numba caches (cold start)")
    p.add_argument("--cache", help="cache folder (default: a persistent one under the system temp dir)")
    p.add_argument("--timeout", type=float, default=300.0)
    p.add_argument("--budget-ms", type=float, default=50.0, help="a gap above this counts as a stall")
    p.add_argument("--no-cli", action="store_true", help="skip the command line's audit of the same files")
    return p.parse_args(argv)


def synthetic(args, folder: Path) -> tuple[Path, list[Path]]:
    import numpy as np
    rng = np.random.default_rng(0)
    k, nq, d = args.synthetic_k, args.synthetic_nq, args.synthetic_dim
    books = rng.normal(size=(nq, k, d)).astype(np.float32)
    books[:, k // 2:] *= 0.05                       # half the codes far inside: many go unused
    ckpt = folder / f"synthetic_k{k}.npy"
    np.save(ckpt, books)
    frames = rng.normal(size=(args.synthetic_frames, d)).astype(np.float32)
    feats = folder / "synthetic_features.npy"
    np.save(feats, frames)
    return ckpt, [feats]


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    work = Path(tempfile.mkdtemp(prefix="rvq-ui-bench-"))
    cache = Path(args.cache) if args.cache else Path(tempfile.gettempdir()) / "rvq-viewer-bench-cache"
    if args.fresh_cache:
        cache = work / "cache"

    from PySide6.QtCore import QElapsedTimer, QEventLoop, Qt, QTimer

    from rvq_viewer.locations import demo_paths
    from rvq_viewer.gui import settings
    from rvq_viewer.gui.app import create_application, preload
    settings.use_paths(work / "settings.ini", cache)
    create_application()
    preload()
    t_imports = time.perf_counter() - T_START

    from rvq_viewer.gui.main_window import MainWindow
    from rvq_viewer.analysis.umap_service import UmapService

    if args.synthetic_k:
        checkpoint, features = synthetic(args, work)
    else:
        demo_ckpt, demo_feats = demo_paths()
        checkpoint = Path(args.checkpoint) if args.checkpoint else demo_ckpt
        features = [Path(f) for f in args.features] if args.features else demo_feats
    features = features * max(1, args.repeat)

    gaps: list[tuple[float, float, str]] = []   # (time since start, gap ms, phase)
    marks: dict[str, float] = {}
    phase = {"name": "startup", "start": None}
    clock = QElapsedTimer()
    clock.start()
    last = {"t": clock.nsecsElapsed()}

    def beat():
        now = clock.nsecsElapsed()
        gaps.append((time.perf_counter() - T_START, (now - last["t"]) / 1e6, phase["name"]))
        last["t"] = now
        if phase["name"] == "first-paint" and phase.get("start"):
            # Offscreen as on a desktop, a window is painted when it is exposed, which can come a few
            # ticks after show(): open the files on the second tick after that (the first paint done).
            handle = window.windowHandle()
            if handle is not None and handle.isExposed():
                phase["exposed_ticks"] = phase.get("exposed_ticks", 0) + 1
                if phase["exposed_ticks"] == 1:
                    marks["first_paint"] = time.perf_counter() - T_START
                if phase["exposed_ticks"] >= 2:
                    phase["start"]()

    heart = QTimer()
    heart.setTimerType(Qt.TimerType.PreciseTimer)
    heart.setInterval(10)
    heart.timeout.connect(beat)

    service = None if args.no_umap else UmapService(cache)
    window = MainWindow(umap_service=service)
    if args.no_umap:
        window.map.umap_box.setChecked(False)
    window.show()
    t_shown = time.perf_counter() - T_START
    phase["name"] = "first-paint"        # the window's first paint (fonts, style, empty plots)
    last["t"] = clock.nsecsElapsed()     # the heartbeat counts from show(): building the window comes before
    heart.start()

    def first_painted():
        phase["name"] = "load+audit"
        phase["start"] = None
        if service is not None:
            QTimer.singleShot(300, service.start)
        window.open(checkpoint, features)

    phase["start"] = first_painted
    loop = QEventLoop()
    deadline = time.perf_counter() + args.timeout

    def poll():
        now = time.perf_counter() - T_START
        if window.banner.kind == "error":
            marks["error"] = now
            loop.quit()
        if "audit_done" not in marks and window.snapshot is not None and window.snapshot.complete:
            marks["audit_done"] = now
            phase["name"] = "umap" if service is not None else "idle"
        if "views_filled" not in marks and window.views_ready():
            marks["views_filled"] = now
        if "views_filled" in marks and (service is None or window.views_ready(wait_umap=True)):
            marks["umap_shown"] = now
            QTimer.singleShot(500, loop.quit)   # a little idle time after
        if time.perf_counter() > deadline:
            marks["timeout"] = now
            loop.quit()

    poller = QTimer()
    poller.setInterval(20)
    poller.timeout.connect(poll)
    poller.start()
    loop.exec()
    poller.stop()
    heart.stop()
    snap = window.snapshot
    result = {
        "load_average": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "checkpoint": str(checkpoint), "feature_files": len(features),
        "frames": snap.frames_done if snap else 0,
        "K": window.session.quantizer.codebook_sizes if window.session else None,
        "umap": service is not None, "cache": str(cache), "fresh_cache": args.fresh_cache,
        "imports_s": round(t_imports, 3), "window_shown_s": round(t_shown, 3),
        "first_paint_ms": round(1000 * (marks["first_paint"] - t_shown), 1) if "first_paint" in marks else None,
        "audit_done_s": round(marks.get("audit_done", float("nan")), 3),
        "views_filled_s": round(marks.get("views_filled", float("nan")), 3),
        "umap_shown_s": round(marks.get("umap_shown", float("nan")), 3) if service is not None else None,
        "audit_frames_per_s": round(snap.frames_per_second) if snap else None,
        "timeout": "timeout" in marks, "error": window.banner.text() if "error" in marks else None,
    }
    if service is not None:
        result["umap_child"] = service.ready_info
    after_show = [g for g in gaps if g[0] >= t_shown]
    for name in ("first-paint", "load+audit", "umap", "idle", "all"):
        sel = [g[1] for g in after_show if name == "all" or g[2] == name]
        if not sel:
            continue
        sel_sorted = sorted(sel)
        result[f"stall_{name}"] = {
            "ticks": len(sel), "max_gap_ms": round(sel_sorted[-1], 1),
            "p99_gap_ms": round(sel_sorted[int(0.99 * (len(sel) - 1))], 1),
            "gaps_over_budget": sum(1 for v in sel if v > args.budget_ms)}
    worst = sorted(after_show, key=lambda g: -g[1])[:5]
    result["worst_gaps"] = [{"at_s": round(t, 3), "gap_ms": round(v, 1), "phase": p} for t, v, p in worst]
    during = sorted(g[1] for g in after_show if g[2] != "first-paint")
    result["max_gap_after_first_paint_ms"] = round(during[-1], 1) if during else None
    over = sum(1 for v in during if v > args.budget_ms)
    result["target_met"] = bool(during) and over == 0
    window.close()
    if snap is not None and snap.complete and not args.no_cli:
        # The same audit as the command line runs it, in a fresh process, for the ratio the window must hold.
        cli_s = cli_audit_seconds(checkpoint, features)
        result["gui_audit_s"] = round(snap.elapsed, 3)
        result["cli_audit_s"] = round(cli_s, 3)
        result["gui_over_cli"] = round(snap.elapsed / cli_s, 2) if cli_s > 0 else None
    print(json.dumps(result, indent=1))
    print(f"window painted {result['first_paint_ms']} ms after show(); views filled {result['views_filled_s']} s "
          f"after launch, UMAP shown {result['umap_shown_s']} s; largest event-loop gap while loading, auditing "
          f"and projecting: {result['max_gap_after_first_paint_ms']} ms, {over} over {args.budget_ms:g} ms: target "
          f"{'met' if result['target_met'] else 'NOT met'} (load average {result['load_average']})", file=sys.stderr)
    if "gui_over_cli" in result:
        print(f"audit pass: window {result['gui_audit_s']} s, command line {result['cli_audit_s']} s "
              f"({result['gui_over_cli']}x)", file=sys.stderr)
    return 0 if not result["timeout"] and not result["error"] else 1


CLI_AUDIT = """
import sys
from rvq_viewer.pipeline import AuditSpec, run_audit_spec
print(run_audit_spec(AuditSpec(sys.argv[1], tuple(sys.argv[2:]))).elapsed)
"""


def cli_audit_seconds(checkpoint: Path, features: list[Path]) -> float:
    """Seconds of `rvq-viewer audit`'s audit pass (`AuditOutcome.elapsed`, as the window's) on the files."""
    import subprocess
    out = subprocess.run([sys.executable, "-c", CLI_AUDIT, str(checkpoint), *map(str, features)], check=True,
                         capture_output=True, text=True, cwd=ROOT)
    return float(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    sys.exit(main())
