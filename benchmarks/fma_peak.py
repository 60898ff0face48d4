"""The host's float32 multiply-add peak on all cores: the limit for an exhaustive search at small D.

At D = 8 a GEMM is bound by writing its output, so the GEMM roofline says nothing there; the FMA units
are what a fused search runs into (a score is D multiply-adds, before its compare and select). This
builds `fma_peak.c` with the compiler and flags the engine's native kernel is built with, runs it on
every core at once (ctypes lets go of the GIL), and returns the best of a few short runs.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from rvq_viewer.quant import _native

SOURCE = Path(__file__).with_name("fma_peak.c")


def _build(folder: str) -> ctypes.CDLL | None:
    compiler = _native._compiler()
    if compiler is None:
        return None
    for flags in _native.FLAG_SETS:
        out = os.path.join(folder, "fma_peak.so")
        done = subprocess.run([compiler, *flags, "-shared", "-fPIC", "-o", out, str(SOURCE)],
                              capture_output=True, text=True)
        if done.returncode == 0:
            lib = ctypes.CDLL(out)
            lib.fma_peak_run.restype = ctypes.c_double
            lib.fma_peak_run.argtypes = [ctypes.c_int64, ctypes.POINTER(ctypes.c_float)]
            return lib
    return None


def fma_peak_gflops(threads: int | None = None, seconds: float = 0.2, tries: int = 3) -> float | None:
    """Float32 GFLOP/s (2 per multiply-add) of `threads` cores (all) running FMAs alone; None without a
    compiler."""
    threads = threads or os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="rvq-fma-") as folder:
        lib = _build(folder)
        if lib is None:
            return None
        sink = ctypes.c_float()
        rounds = 1 << 16
        while True:                                   # size a run to about `seconds` on one core
            start = time.perf_counter()
            lib.fma_peak_run(rounds, ctypes.byref(sink))
            if time.perf_counter() - start > seconds / 4:
                break
            rounds *= 2
        rounds = int(rounds * seconds / max(time.perf_counter() - start, 1e-6))
        best = 0.0
        for _ in range(tries):
            done = [0.0] * threads
            barrier = threading.Barrier(threads + 1)

            def work(i: int) -> None:
                out = ctypes.c_float()
                barrier.wait()
                done[i] = lib.fma_peak_run(rounds, ctypes.byref(out))

            workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
            for w in workers:
                w.start()
            barrier.wait()
            start = time.perf_counter()
            for w in workers:
                w.join()
            best = max(best, 2.0 * sum(done) / (time.perf_counter() - start) / 1e9)
        return best


if __name__ == "__main__":
    print(f"{fma_peak_gflops():.0f} GFLOP/s float32 multiply-adds on {os.cpu_count()} cores")
