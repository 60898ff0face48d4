"""Which exact CPU search configuration is fastest on this host: measured, not assumed.

The fastest way to score a tile depends on the host: oneDNN's fused linear runs AVX-512 where MKL's
GEMM takes its AVX2 path (AMD), panel and tile sizes depend on the caches, and faiss's own kernels win
at small D. So the first time a codebook shape is searched, each candidate configuration scores the
same probe rows single-threaded (as one CPU worker runs it) and the fastest wins; a candidate whose
codes differ from the plain `addmm` + `argmin` on any probe row is never used. The probe's codebook
holds exact duplicates and frames equal to codes, so a candidate that breaks ties other than
to the lowest index fails it.

Results are kept in `search-probes.json` in the cache folder (beside the UMAP cache), keyed by the CPU,
torch and faiss versions and the shape, so a host measures each shape once. `RVQ_VIEWER_PROBE=0` uses
the default configuration without measuring.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

# Shapes narrower than this many table entries (K * D) are too quick to be worth a probe.
MIN_PROBED = 1 << 13
# The probe measures on at most this many codes: the search is per panel, so wider tables behave alike.
PROBE_CODES = 8192
# About this much arithmetic per timed probe run (2 * rows * K * D), within [1024, 16384] rows.
PROBE_FLOPS = 4e8
CACHE_NAME = "search-probes.json"
CACHE_VERSION = 2
PROBE_ENABLED = os.environ.get("RVQ_VIEWER_PROBE", "1") != "0"


@dataclass(frozen=True)
class SearchConfig:
    """How the CPU engine scores a codebook: `path` "onednn" (fused linear tiles), "addmm" (tiles into
    a reused buffer), "native" (the fused kernel built on this machine, `kernel` naming its register
    blocking) or "faiss" (IndexFlatL2, when installed); `panel` codes and `tile_bytes` per tile; `threads`
    workers at once, where fewer than all measured faster (cores shared by SMT siblings); `copies`: each
    worker reads its own copy of the native kernel's codebook, where that measured faster than one
    copy read by all (seen on a virtual machine's two cores: 7-46% faster)."""

    path: str = "onednn"
    panel: int = 4096
    tile_bytes: int = 2 << 20
    kernel: str = ""
    threads: int = 0          # CPU workers to split rows over: 0 = every one (the default)
    copies: bool = False


DEFAULT = SearchConfig()
_CHOSEN: dict[tuple[int, int], SearchConfig] = {}
_KEY_LOCKS: dict[tuple[int, int], threading.Lock] = {}
_LOCK = threading.Lock()


def candidates(k: int, faiss_ok: bool, native_ok: bool) -> list[SearchConfig]:
    panels = sorted({min(k, p) for p in (1024, 4096)})
    out = [SearchConfig(path, panel, tile) for path in ("onednn", "addmm") for panel in panels
           for tile in (512 << 10, 2 << 20, 8 << 20)]
    if native_ok:
        from ._native import KERNELS
        out += [SearchConfig("native", panel, 0, kernel) for kernel in KERNELS
                for panel in sorted({min(k, p) for p in (512, 4096)})]
    if faiss_ok:
        out.append(SearchConfig("faiss", k, 0))
    return out


def _available() -> tuple[bool, bool]:
    """(faiss installed, native kernel built): the optional candidates this process can run."""
    from . import _cpu_engine, _native
    return _cpu_engine.faiss_module() is not None, _native.library() is not None


def config_for(d: int, k: int) -> SearchConfig:
    """The measured-fastest exact configuration for a [k, d] float32 codebook on this host."""
    if not PROBE_ENABLED or k * d < MIN_PROBED:
        return DEFAULT
    key = (d, min(k, PROBE_CODES))
    chosen = _CHOSEN.get(key)
    if chosen is not None:
        return chosen
    with _LOCK:
        lock = _KEY_LOCKS.setdefault(key, threading.Lock())
    # One probe per shape however many threads ask; the probe runs in the asking thread and waits for
    # nothing else, so a worker blocked here can never be the one a probe is waiting for.
    with lock:
        chosen = _CHOSEN.get(key)
        if chosen is None:
            chosen = _from_disk(key) or _probe_and_store(key)
            _CHOSEN[key] = chosen
    return chosen


def native_kernel_status() -> str:
    """One line: where the fused native kernel was built, or why this process goes without it."""
    from . import _native
    lib = _native.library()
    return f"native kernel: {lib._name}" if lib is not None else f"native kernel not used: {_native.unavailable()}"


def forget() -> None:
    """Drop what this process measured or read (tests)."""
    with _LOCK:
        _CHOSEN.clear()


# --- measuring -----------------------------------------------------------------------------------------

def probe(d: int, k: int) -> tuple[SearchConfig, dict[str, float]]:
    """Time every candidate on one shape: (the fastest exact one, {candidate: frames/s, -1 if inexact})."""
    from ..runtime.cpu_pool import single_threaded, worker_count
    workers = worker_count()                                  # before this thread goes single-threaded
    with single_threaded():                                   # as one CPU worker runs it
        return _probe_here(d, k, workers)


def _probe_here(d: int, k: int, workers: int) -> tuple[SearchConfig, dict[str, float]]:
    from . import _cpu_engine, search
    codebook, x = probe_data(d, k)
    want = search.reference_nearest_codes(x, codebook)
    runs = {}
    every = candidates(k, *_available())
    for config in every:
        run = _exact_run(_cpu_engine, config, codebook, x, want)
        if run is not None:
            runs[config] = run
    # Rounds interleaved, best kept: a neighbour's burst slows one round, not one candidate.
    seconds = {config: float("inf") for config in runs}
    for _ in range(3):
        for config, run in runs.items():
            start = time.perf_counter()
            run()
            seconds[config] = min(seconds[config], time.perf_counter() - start)
    rates = {label(c): (x.shape[0] / seconds[c] if c in runs else -1.0) for c in every}
    best = min(seconds, key=seconds.get) if seconds else DEFAULT
    if best in runs:
        run, one_pass_s = runs[best], seconds[best]
        threads, per_threads = _fastest_thread_count(run, workers, one_pass_s)
        rates.update({f"{label(best)} on {t} threads": r for t, r in per_threads.items()})
        copies, per_copies = _copies_if_faster(_cpu_engine, best, codebook, run, threads or workers, one_pass_s)
        rates.update(per_copies)
        best = replace(best, threads=threads, copies=copies)
    return best, rates


# A smaller thread count than every worker must be this much faster to be chosen: one neighbour's
# burst during the probe must not leave a host on fewer threads for good.
FEWER_THREADS_GAIN = 1.10
# Pieces of probe rows per thread, and one thread's seconds of work, in a timed thread-count run.
THREAD_PROBE_PIECES = 4
THREAD_PROBE_S = 0.03


def _fastest_thread_count(run, n: int, one_pass_s: float) -> tuple[int, dict[int, float]]:
    """(threads to use, 0 for all `n` workers; {threads: probe rows/s}) for the chosen configuration,
    its row pieces shared out to 1, n / 2 and n threads (plain threads started here: the probe may run
    inside a worker, while the others wait for it). `one_pass_s`: one thread's time for the probe rows."""
    if n < 2:
        return 0, {}
    counts = sorted({1, n // 2, n})
    # The probe rows over and over, for about THREAD_PROBE_S of one thread's work, in pieces small
    # enough that every thread takes several.
    rows = max(64, run.x.shape[0] // (THREAD_PROBE_PIECES * n))
    repeats = int(min(64, max(1, THREAD_PROBE_S / max(one_pass_s, 1e-6))))
    pieces = [run.x[s:s + rows] for s in range(0, run.x.shape[0], rows)] * repeats
    seconds = {t: float("inf") for t in counts}
    for _ in range(3):
        for t in counts:
            seconds[t] = min(seconds[t], _time_on_threads(run.search, pieces, t))
    rows = sum(p.shape[0] for p in pieces)
    rates = {t: rows / seconds[t] for t in counts}
    fastest = min(counts, key=seconds.get)
    if fastest < n and seconds[n] > FEWER_THREADS_GAIN * seconds[fastest]:
        return fastest, rates
    return 0, rates


# One copy of the codebook per worker must be this much faster than one shared copy to be chosen; the
# two are timed in this many interleaved rounds of about COPIES_PROBE_S each (the gain is 5-45%, so
# shorter runs on a shared host could pick either).
COPIES_GAIN = 1.05
COPIES_ROUNDS = 5
COPIES_PROBE_S = 0.05


def _copies_if_faster(engine, config: SearchConfig, codebook, run, threads: int,
                      one_pass_s: float) -> tuple[bool, dict[str, float]]:
    """(whether each of `threads` workers should read its own copy of the codebook; {how: rows/s}), timed
    side by side on the probe rows. Only the native kernel's plans hold per-thread copies.
    `one_pass_s`: one thread's time for the probe rows."""
    from ._native import NativePlan
    if threads < 2 or config.path != "native" or not NativePlan.can_copy(codebook):
        return False, {}
    own = engine.make_plan(codebook, None, replace(config, copies=True))
    rows = max(64, run.x.shape[0] // (THREAD_PROBE_PIECES * threads))
    repeats = int(min(256, max(1, COPIES_PROBE_S * threads / max(one_pass_s, 1e-6))))
    pieces = [run.x[s:s + rows] for s in range(0, run.x.shape[0], rows)] * repeats
    seconds = {"shared": float("inf"), "copies": float("inf")}
    for _ in range(COPIES_ROUNDS):
        seconds["shared"] = min(seconds["shared"], _time_on_threads(run.search, pieces, threads))
        seconds["copies"] = min(seconds["copies"], _time_on_threads(own.search, pieces, threads))
    total = sum(p.shape[0] for p in pieces)
    rates = {f"{label(config)} on {threads} threads, {how}": total / s for how, s in seconds.items()}
    return seconds["shared"] > COPIES_GAIN * seconds["copies"], rates


def _time_on_threads(search, pieces: list, threads: int) -> float:
    """Seconds for `threads` single-threaded threads to search every piece, taking the next as they go."""
    from ..runtime.cpu_pool import single_threaded
    todo = list(pieces)
    lock = threading.Lock()

    def work() -> None:
        with single_threaded():
            try:
                search(pieces[0][:1])                  # a thread's own set-up (its copy), untimed
            finally:
                go.wait()
            while True:
                with lock:
                    if not todo:
                        return
                    piece = todo.pop()
                search(piece)

    # Started before the clock (the engine's workers are already running when a search comes).
    go = threading.Barrier(threads + 1)
    workers = [threading.Thread(target=work, name=f"rvq-probe-{i}", daemon=True)
               for i in range(threads)]
    for w in workers:
        w.start()
    go.wait()
    start = time.perf_counter()
    for w in workers:
        w.join()
    return time.perf_counter() - start


def probe_data(d: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian codes and frames, with the ties real codebooks have: duplicated (dead) codes and
    frames equal to a code."""
    gen = torch.Generator().manual_seed(1234)
    rows = int(max(1024, min(16384, PROBE_FLOPS / (2 * k * d))))
    codebook = torch.randn(k, d, generator=gen)
    dup = max(1, k // 64)
    codebook[k - dup:] = codebook[k // 2]                       # dead codes left at one value
    x = torch.randn(rows, d, generator=gen)
    picks = torch.randint(0, k, (rows // 16,), generator=gen)
    x[:picks.numel()] = codebook[picks]                         # exactly on a code (and on the duplicates)
    return codebook, x


def _exact_run(engine, config: SearchConfig, codebook, x, want):
    """A function searching the probe rows with `config` in a worker's pieces, or None if it fails
    or gives any code other than the reference's."""
    from ..runtime.cpu_pool import PIECE_ROWS
    try:
        plan = engine.make_plan(codebook, None, config)
        plan.search(x[:256])                                    # packing, kernels, faiss's set-up
        pieces = [x[s:s + PIECE_ROWS] for s in range(0, x.shape[0], PIECE_ROWS)]

        def run() -> torch.Tensor:
            return torch.cat([plan.search(piece) for piece in pieces])
        run.x, run.search = x, plan.search
        return run if torch.equal(run(), want) else None
    except Exception:  # noqa: BLE001 - a candidate that fails here is simply not used
        return None


def label(config: SearchConfig) -> str:
    if config.path == "faiss":
        return "faiss"
    if config.path == "native":
        return f"native {config.kernel} panel {config.panel}" + (", a copy per worker" if config.copies else "")
    return f"{config.path} panel {config.panel} tile {config.tile_bytes >> 10} KiB"


# --- the cache on disk ----------------------------------------------------------------------------------

def host_key() -> str:
    """What a measured choice holds for: the CPU, the libraries, and the native kernel's source (a
    release that changes the kernels, or adds one, measures again)."""
    from ._native import source_digest
    return f"{_cpu_model()} | torch {torch.__version__} | faiss {_faiss_version()} | kernel {source_digest()}"


def _faiss_version() -> str | None:
    """The installed faiss's version, from its package metadata: importing faiss takes a second."""
    from importlib import metadata
    for dist in ("faiss-cpu", "faiss-gpu", "faiss"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def cache_path() -> Path:
    from ..locations import cache_dir
    return cache_dir() / CACHE_NAME


def _entry_key(key: tuple[int, int]) -> str:
    from ..runtime.cpu_pool import worker_count
    return f"{host_key()} | workers {worker_count()} | float32 D={key[0]} K={key[1]}"


def _read_cache() -> dict:
    try:
        data = json.loads(cache_path().read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION:
        return {}
    entries = data.get("entries")
    return entries if isinstance(entries, dict) else {}


def _from_disk(key: tuple[int, int]) -> SearchConfig | None:
    entry = _read_cache().get(_entry_key(key))
    try:
        chosen = SearchConfig(**entry["chosen"])
    except (TypeError, KeyError):
        return None
    measured, chosen = chosen, replace(chosen, threads=0, copies=False)
    # A path this process cannot run now (faiss uninstalled, the kernel not built) is measured again;
    # only the chosen path is checked (importing faiss takes a second).
    from . import _cpu_engine, _native
    faiss_ok = chosen.path == "faiss" and _cpu_engine.faiss_module() is not None
    native_ok = chosen.path == "native" and _native.library() is not None
    if chosen not in candidates(key[1], faiss_ok, native_ok):
        return None
    return measured


def _probe_and_store(key: tuple[int, int]) -> SearchConfig:
    chosen, rates = probe(*key)
    entries = _read_cache()
    entries[_entry_key(key)] = {"chosen": asdict(chosen), "frames_per_s": rates, "when": time.time(),
                                "load_average": _load_average()}
    try:
        path = cache_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".probes-", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump({"version": CACHE_VERSION, "entries": entries}, fh, indent=1)
            os.replace(tmp, path)       # whole or not at all: another process may read it now
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError:
        pass                            # a read-only cache folder: measured again next time
    return chosen


def _load_average() -> float | None:
    """Said beside a probe's figures: measured on a busy machine they are less sure."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _cpu_model() -> str:
    """The CPU's model name, and a digest of its exact model and instruction sets (a name such as
    "AMD EPYC" covers several generations; a cache folder may be shared by machines of each)."""
    import hashlib
    from ._native import cpu_signature
    signature = cpu_signature()
    name = next((line.split(":", 1)[1].strip() for line in signature.splitlines()
                 if line.startswith("model name")), "") or platform.processor() or platform.machine()
    return f"{name} #{hashlib.sha256(signature.encode()).hexdigest()[:10]}"
