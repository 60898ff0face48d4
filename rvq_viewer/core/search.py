"""Nearest-codeword search for many frames, without materialising more than one tile of distances.

`nearest_codes(x, codebook)` is argmin_k ||x - e_k||² for every row of x, ties to the lowest index.
||x||² is the same for every code, so the score is ||e_k||² - 2 x·e_k.

CPU engine (float32). Naively, one [N, K] score matrix is written by a GEMM and read back by
`argmin`; at small D writing that matrix costs more than the GEMM, and torch's CPU `argmin` is a
scalar loop (~1.5 G elements/s per core against ~20 G for `amin`). Here instead:

- the codes are cut into panels of at most `PANEL` codes and the rows into blocks, so one
  [rows, panel] score tile stays in cache and is never written to memory as a whole;
- the tile comes from oneDNN (`torch.ops.mkldnn._linear_pointwise`) with `-2 E` packed once per
  codebook and ||e||² as the bias (on this AVX-512 CPU oneDNN runs ~2.3x MKL's float32 GEMM); where
  that op is missing, `torch.addmm(out=...)` into a reused buffer;
- the argmin is two-level: each panel's codes are stored permuted so that one vectorised vertical
  `amin` gives the minimum of every group of S consecutive codes; the first group holding the row
  minimum is found among few group minima, then the first code in that group. Ties go to the lowest
  index exactly as `torch.argmin` does;
- the rows are spread over `CpuWorkers`, one single-threaded worker per core taking pieces of rows
  from a queue (no OpenMP barrier per op: robust when other processes share the cores).

Opt-in, experimental (`RVQ_VIEWER_SEARCH=bf16`, CPUs with native bfloat16 dot products): the tile is
computed in bfloat16 first (twice the GEMM rate) and every code whose coarse score is within a proven
bound of the row minimum is re-scored in float32, so the code chosen is the float32 one (see
`_Bf16Panel`). On the 2-core AVX-512 machine this was built on it is slower than float32 at D=768
(about 14 candidates a row to re-score on random data), hence not the default.

Other devices (CUDA) and dtypes use blocked `addmm` + `argmin`; the block is sized from free memory,
and an out-of-memory error halves the block and carries on. fp16/bf16 codebooks are upcast to
float32. `SEARCH_BACKEND` (env `RVQ_VIEWER_SEARCH`: auto, fp32, reference) forces an engine.
"""

from __future__ import annotations

import ctypes
import math
import os
import queue
import threading
import weakref

import torch

# Rows per block of the generic (addmm + argmin) path, and of the CPU engine when a caller passes none.
DEFAULT_BLOCK = 4096
# CPU engine: at most this many codes per score tile, and about this many tile bytes per block.
PANEL = 4096
TILE_BYTES = 2 << 20
# bfloat16 coarse pass (backend "bf16" only): from this codebook dimension up.
BF16_MIN_DIM = 64
# A bf16 block falls back to float32 when its candidates exceed this many per row on average.
BF16_MAX_CANDIDATES = 24.0
# Backend: "auto" and "fp32" (the float32 engine above), "bf16" (opt-in coarse pass, see above),
# "reference" (plain blocked addmm + argmin).
SEARCH_BACKEND = os.environ.get("RVQ_VIEWER_SEARCH", "auto")
# CPU worker threads (see `CpuWorkers`); RVQ_VIEWER_WORKERS=0 runs torch's intra-op threads instead.
WORKERS_ENABLED = os.environ.get("RVQ_VIEWER_WORKERS", "1") != "0"


def squared_norms(codebook: torch.Tensor) -> torch.Tensor:
    """||e_k||² for each row, computed once per codebook and reused for every block."""
    return codebook.pow(2).sum(dim=1)


def nearest_codes(x: torch.Tensor, codebook: torch.Tensor, codebook_sq: torch.Tensor | None = None,
                  block: int | None = None) -> torch.Tensor:
    """Index of the nearest row of `codebook` [K, D] for every row of `x` [N, D] (squared L2).

    ||x||² is the same for every code, so argmin(||e||² - 2 x·e) is the nearest code; ties go to the
    lowest index, as torch.argmin and the peers' argmax do. `block` is rows per score tile (None: chosen
    from the codebook size, or from free memory on a GPU).
    """
    if x.dim() != 2 or codebook.dim() != 2 or x.shape[1] != codebook.shape[1]:
        raise ValueError(f"nearest_codes: x {tuple(x.shape)} and codebook {tuple(codebook.shape)} do not fit")
    if codebook.dtype in (torch.float16, torch.bfloat16):
        codebook = codebook.float()
        codebook_sq = None if codebook_sq is None else codebook_sq.float()
    if x.dtype != codebook.dtype:
        x = x.to(codebook.dtype)
    if x.shape[0] == 0:
        return torch.empty(0, dtype=torch.long, device=x.device)
    if codebook.shape[0] == 0:
        raise ValueError("nearest_codes: the codebook has no codes")
    backend = SEARCH_BACKEND
    if x.device.type == "cpu" and codebook.dtype == torch.float32 and backend != "reference":
        plan = _plan_for(codebook, codebook_sq)
        allow_bf16 = backend == "bf16"
        pool = cpu_workers()
        n = x.shape[0]
        if pool is None or in_worker() or n < 2 * PIECE_ROWS:
            return plan.search(x, block, allow_bf16)
        out = torch.empty(n, dtype=torch.long)

        def piece(start: int) -> None:
            out[start:start + PIECE_ROWS] = plan.search(x[start:start + PIECE_ROWS], block, allow_bf16)

        pool.run(piece, range(0, n, PIECE_ROWS))
        return out
    return reference_nearest_codes(x, codebook, codebook_sq, block)


def reference_nearest_codes(x: torch.Tensor, codebook: torch.Tensor, codebook_sq: torch.Tensor | None = None,
                            block: int | None = None) -> torch.Tensor:
    """Blocked addmm + argmin: the engine on GPUs and other dtypes, and the CPU engine's yardstick.

    An out-of-memory error while a block is scored halves the block and retries it."""
    if codebook_sq is None:
        codebook_sq = squared_norms(codebook)
    n, k = x.shape[0], codebook.shape[0]
    if block is None:
        block = auto_block(x.device, k, x.element_size())
    block = max(1, int(block))
    out = torch.empty(n, dtype=torch.long, device=x.device)
    bias = codebook_sq.unsqueeze(0)
    embed_t = codebook.t()
    start = 0
    while start < n:
        stop = min(n, start + block)
        try:
            scores = torch.addmm(bias, x[start:stop], embed_t, beta=1.0, alpha=-2.0)
            out[start:stop] = scores.argmin(dim=1)
        except Exception as exc:  # noqa: BLE001 - only out-of-memory is handled, the rest re-raised
            if not is_out_of_memory(exc) or block == 1:
                raise
            scores = None
            block = max(1, block // 2)
            release_cached_memory(x.device)
            continue
        start = stop
    return out


# --- CPU workers -------------------------------------------------------------------------------------

# Rows per task handed to a CPU worker.
PIECE_ROWS = 2048
_WORKERS = None
_WORKERS_LOCK = threading.Lock()
_IN_WORKER = threading.local()


def in_worker() -> bool:
    """True inside a CPU worker thread (its torch ops run on one thread)."""
    return getattr(_IN_WORKER, "active", False)


class CpuWorkers:
    """One thread per core, each running torch ops single-threaded on its own row pieces.

    Two cores fed by OpenMP intra-op parallelism meet at a barrier after every op; when another process
    shares the cores (a GUI, a second job) the slower thread stalls the other at each of them, and a
    small-tile search slows down by 5x or more. Independent workers that take the next piece of rows
    from a queue have no barrier: a core that is busy elsewhere just takes fewer pieces.

    Each worker sets its own OpenMP thread count to 1 (`omp_set_num_threads` is per thread), leaving
    torch's setting for other threads alone. Where that cannot be done, there are no workers and the
    callers run intra-op parallel as before.
    """

    def __init__(self, n: int, set_threads):
        self.n = n
        self._set_threads = set_threads
        self._tasks: "queue.SimpleQueue" = queue.SimpleQueue()
        ready = [threading.Event() for _ in range(n)]
        self.threads = [threading.Thread(target=self._loop, args=(ev,), name=f"rvq-worker-{i}", daemon=True)
                        for i, ev in enumerate(ready)]
        for t in self.threads:
            t.start()
        for ev in ready:
            ev.wait()

    def _loop(self, ready: threading.Event) -> None:
        torch.get_num_threads()          # torch's lazy per-thread init first, so it cannot undo ours
        self._set_threads(1)
        _IN_WORKER.active = True
        ready.set()
        while True:
            job = self._tasks.get()
            if job is None:
                return
            job()

    def run(self, fn, items) -> list:
        """fn(item) for every item, on the workers; results in order. The first error is re-raised once
        every item already started has finished (so callers may reuse what the items wrote to)."""
        items = list(items)
        if in_worker():                      # nested: the workers are busy with our caller
            return [fn(item) for item in items]
        results = [None] * len(items)
        state = {"next": 0, "error": None, "jobs": min(self.n, len(items))}
        cond = threading.Condition()

        def job() -> None:
            while True:
                with cond:
                    if state["error"] is not None or state["next"] >= len(items):
                        state["jobs"] -= 1
                        cond.notify_all()
                        return
                    index = state["next"]
                    state["next"] += 1
                try:
                    results[index] = fn(items[index])
                except BaseException as exc:  # noqa: BLE001 - handed to the caller
                    with cond:
                        if state["error"] is None:
                            state["error"] = exc

        for _ in range(state["jobs"]):
            self._tasks.put(job)
        with cond:
            while state["jobs"] > 0:
                cond.wait()
        if state["error"] is not None:
            raise state["error"]
        return results


def _omp_setter():
    """`omp_set_num_threads` of the OpenMP runtime torch uses, or None."""
    try:
        lib = ctypes.CDLL(None)
        fn = lib.omp_set_num_threads
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int]
    fn.restype = None
    return fn


def cpu_workers() -> "CpuWorkers | None":
    """The shared CPU workers (one per torch intra-op thread), or None with one thread or no OpenMP."""
    global _WORKERS
    if _WORKERS is None:
        with _WORKERS_LOCK:
            if _WORKERS is None:
                n = torch.get_num_threads()
                setter = _omp_setter() if WORKERS_ENABLED else None
                _WORKERS = CpuWorkers(n, setter) if n > 1 and setter is not None else False
    return _WORKERS or None


# --- memory ------------------------------------------------------------------------------------------

def is_out_of_memory(exc: BaseException) -> bool:
    """torch's CUDA/CPU allocator failures (torch.OutOfMemoryError, or the older RuntimeError text)."""
    oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    if oom is not None and isinstance(exc, oom):
        return True
    if isinstance(exc, (RuntimeError, MemoryError)):
        text = str(exc).lower()
        return "out of memory" in text or "can't allocate memory" in text or isinstance(exc, MemoryError)
    return False


def release_cached_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def free_memory(device: torch.device) -> int | None:
    """Free bytes on a CUDA device (None elsewhere)."""
    if device.type != "cuda":
        return None
    try:
        free, _ = torch.cuda.mem_get_info(device)
    except Exception:  # noqa: BLE001 - no CUDA context or an old driver: no figure
        return None
    return int(free)


def auto_block(device: torch.device, k: int, itemsize: int = 4, free: int | None = None) -> int:
    """Rows per score block: a quarter of the free GPU memory for the [rows, K] scores and argmin's
    temporaries (at most 65,536 rows), or DEFAULT_BLOCK off the GPU."""
    if free is None:
        free = free_memory(device)
    if free is None:
        return DEFAULT_BLOCK
    rows = free // 4 // max(1, k * (itemsize + 8))
    return int(max(64, min(65536, rows)))


# --- CPU engine --------------------------------------------------------------------------------------

def _linear_op():
    """oneDNN's dense linear (input, weight, bias) -> float32, if this torch build has it."""
    try:
        return torch.ops.mkldnn._linear_pointwise
    except (AttributeError, RuntimeError):
        return None


def _reorder_op():
    try:
        return torch.ops.mkldnn._reorder_linear_weight
    except (AttributeError, RuntimeError):
        return None


_ONEDNN_OK: bool | None = None
_BF16_OK: bool | None = None
_PROBE_LOCK = threading.Lock()


def _onednn_ok() -> bool:
    """Does oneDNN's linear give addmm's float32 scores here? Checked once."""
    global _ONEDNN_OK
    if _ONEDNN_OK is None:
        with _PROBE_LOCK:
            if _ONEDNN_OK is None:
                _ONEDNN_OK = _probe_onednn()
    return _ONEDNN_OK


def _probe_onednn() -> bool:
    op = _linear_op()
    if op is None or not torch.backends.mkldnn.is_available():
        return False
    try:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(37, 24, generator=gen)
        w = torch.randn(50, 24, generator=gen)
        b = torch.randn(50, generator=gen)
        got = op(x, w, b, "none", [], "")
        want = torch.addmm(b, x, w.t())
        return got.dtype == torch.float32 and got.shape == want.shape and bool(
            torch.allclose(got, want, rtol=1e-4, atol=1e-4))
    except Exception:  # noqa: BLE001 - any failure means: do not use it
        return False


def _cpu_has_bf16_dot() -> bool:
    """Native bfloat16 dot products (AVX512_BF16 or AMX): without them oneDNN emulates bf16 slowly."""
    global _BF16_OK
    if _BF16_OK is None:
        flags = ""
        try:
            with open("/proc/cpuinfo") as fh:
                for line in fh:
                    if line.startswith("flags"):
                        flags = line
                        break
        except OSError:
            pass
        words = set(flags.split())
        _BF16_OK = bool(words & {"avx512_bf16", "amx_bf16"}) and _onednn_ok()
    return _BF16_OK


def _group_size(width: int) -> int:
    """Codes per group of the two-level argmin: about sqrt(width), a power of two, leaving at least 32
    groups (torch's vertical amin is slow over fewer than 32 contiguous columns); 1 (a plain row
    argmin) for small panels."""
    s = 1 << int(math.log2(max(1.0, math.sqrt(width))))
    while s > 1 and -(-width // s) < 32:
        s //= 2
    return s


class _Panel:
    """One contiguous range of codes [start, start + width), stored for the two-level argmin.

    Tile column c = a * G + g holds code start + g * S + a (S codes per group, G groups, G a multiple
    of 16 so the vertical amin is vectorised); padding codes have weight 0 and bias +inf.
    """

    def __init__(self, codebook: torch.Tensor, sq: torch.Tensor, start: int, width: int):
        self.start, self.width = start, width
        s = _group_size(width)
        g = -(-width // s)
        if s > 1:
            g = -(-g // 16) * 16
        self.s, self.g = s, g
        padded = s * g
        a_idx = torch.arange(s).repeat_interleave(g)           # column c -> a = c // G
        g_idx = torch.arange(g).repeat(s)                       # column c -> g = c % G
        code = g_idx * s + a_idx                                # offset within the panel
        valid = code < width
        src = torch.where(valid, code, torch.zeros_like(code)) + start
        weight = codebook[src] * -2.0
        weight[~valid] = 0.0
        bias = sq[src].clone()
        bias[~valid] = float("inf")
        self.weight = weight.contiguous()          # [padded, D] = -2 E (exact: a power of two)
        self.bias = bias.contiguous()
        self.padded = padded
        self.packed = None

    def pack(self, rows: int) -> None:
        reorder = _reorder_op()
        if reorder is None:
            return
        try:
            self.packed = reorder(self.weight, rows)
        except Exception:  # noqa: BLE001 - the plain weight works too, a little slower
            self.packed = None

    def scores(self, x: torch.Tensor, use_onednn: bool, buf: torch.Tensor | None) -> torch.Tensor:
        """[rows, padded] float32 scores ||e||² - 2 x·e in the permuted column order."""
        if use_onednn:
            weight = self.packed if self.packed is not None else self.weight
            return _linear_op()(x, weight, self.bias, "none", [], "")
        out = buf[:x.shape[0], :self.padded] if buf is not None else None
        return torch.addmm(self.bias, x, self.weight.t(), out=out)

    def argmin(self, tile: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(min score, code) per row of a tile from `scores`; the lowest code wins ties."""
        rows = tile.shape[0]
        cube = tile.view(rows, self.s, self.g)
        group_min = cube.amin(dim=1)                            # [rows, G]
        best, group = group_min.min(dim=1)                      # first group holding the minimum
        if self.s == 1:
            return best, group + self.start
        index = group.view(rows, 1, 1).expand(rows, self.s, 1)
        members = torch.gather(cube, 2, index).view(rows, self.s)
        _, offset = members.min(dim=1)                          # first code in it with the minimum
        return best, group * self.s + offset + self.start


class _CpuPlan:
    """Everything prepared once per codebook for the CPU engine."""

    def __init__(self, codebook: torch.Tensor, sq: torch.Tensor | None):
        if sq is None:
            sq = squared_norms(codebook)
        codebook = codebook.detach().contiguous()
        sq = sq.detach().to(torch.float32).contiguous()
        self.k, self.d = codebook.shape
        self.use_onednn = _onednn_ok()
        width = min(self.k, PANEL)
        self.panels = [_Panel(codebook, sq, start, min(width, self.k - start))
                       for start in range(0, self.k, width)]
        widest = max(p.padded for p in self.panels)
        self.rows = int(max(16, min(DEFAULT_BLOCK, TILE_BYTES // (4 * widest))))
        if self.use_onednn:
            for p in self.panels:
                p.pack(self.rows)
        self._codebook, self._sq = codebook, sq
        self._bf16 = None
        self._local = threading.local()

    def bf16(self) -> "_Bf16Panel | None":
        """The bfloat16 coarse pass for this codebook, built on first use (None where it does not apply)."""
        if self._bf16 is None:
            usable = self.d >= BF16_MIN_DIM and len(self.panels) == 1 and _cpu_has_bf16_dot()
            self._bf16 = _Bf16Panel(self._codebook, self._sq, self.panels[0], self.rows) if usable else False
        return self._bf16 or None

    def _buffer(self, rows: int) -> torch.Tensor | None:
        if self.use_onednn:
            return None
        buf = getattr(self._local, "buf", None)
        widest = max(p.padded for p in self.panels)
        if buf is None or buf.shape[0] < rows:
            buf = torch.empty(rows, widest)
            self._local.buf = buf
        return buf

    def search(self, x: torch.Tensor, block: int | None, allow_bf16: bool = True) -> torch.Tensor:
        n = x.shape[0]
        rows = self.rows if block is None else max(1, int(block))
        out = torch.empty(n, dtype=torch.long)
        buf = self._buffer(min(rows, n))
        bf16 = self.bf16() if allow_bf16 else None
        for start in range(0, n, rows):
            xb = x[start:start + rows]
            if not xb.is_contiguous():
                xb = xb.contiguous()
            if bf16 is not None:
                codes = bf16.search(xb, self.use_onednn)
                if codes is not None:
                    out[start:start + rows] = codes
                    continue
            out[start:start + rows] = self._search_fp32(xb, buf)
        return out

    def _search_fp32(self, xb: torch.Tensor, buf: torch.Tensor | None) -> torch.Tensor:
        best = code = None
        for panel in self.panels:
            tile = panel.scores(xb, self.use_onednn, buf)
            value, index = panel.argmin(tile)
            if best is None:
                best, code = value, index
            else:
                better = value < best                # strict: an earlier panel (lower codes) keeps ties
                best = torch.where(better, value, best)
                code = torch.where(better, index, code)
        return code


class _Bf16Panel:
    """Coarse bfloat16 scores, float32 re-scoring of the candidates they cannot rule out.

    With u = 2^-8 (bf16 rounding), x̃, ẽ the rounded vectors and the dot product accumulated in float32
    and rounded to bf16 on output: |bf16(x̃·ẽ) - x·e| <= (3u + u² + 2γ) ||x|| ||e|| with γ = D 2^-24.
    The float32 score has error <= 2γ' ||x|| ||e|| + 2^-24 |score|. So every coarse score a_k is within
    δ = c ||x|| max||e|| of the float32 score s_k, and the float32 argmin k* satisfies
    a_k* <= min_j a_j + 2δ. All codes inside that window are re-scored in float32 (the same formula as
    the float32 engine) and the lowest index among the minima wins.
    """

    def __init__(self, codebook: torch.Tensor, sq: torch.Tensor, panel: _Panel, rows: int):
        self.k, self.d = codebook.shape
        self.codebook = codebook
        self.sq = sq
        self.weight = (codebook * -2.0).to(torch.bfloat16).contiguous()      # [K] natural order
        self.packed = None
        reorder = _reorder_op()
        if reorder is not None:
            try:
                self.packed = reorder(self.weight, rows)
            except Exception:  # noqa: BLE001
                self.packed = None
        self.max_norm = float(sq.max().clamp(min=0).sqrt())
        self.max_sq = float(sq.abs().max())
        u, gamma = 2.0 ** -8, self.d * 2.0 ** -24
        # δ per unit of ||x|| max||e||: coarse dot error + float32 dot error, x2 for the -2 factor,
        # then a 1.5 safety margin for the additions and comparisons done in float32.
        self.coef = 1.5 * 2.0 * ((3 * u + u * u + 2 * gamma) * (1 + gamma) + 2 * gamma)
        self.fallbacks = 0
        self.blocks = 0

    def search(self, xb: torch.Tensor, use_onednn: bool) -> torch.Tensor | None:
        """Codes for one block, or None when the candidates are too many (the caller goes float32)."""
        rows = xb.shape[0]
        self.blocks += 1
        xh = xb.to(torch.bfloat16)
        weight = self.packed if self.packed is not None else self.weight
        if use_onednn:
            coarse = _linear_op()(xh, weight, None, "none", [], "")
        else:
            coarse = torch.mm(xh, self.weight.t())
        approx = torch.add(coarse, self.sq)                     # float32 [rows, K]
        low = approx.amin(dim=1)
        xnorm = torch.linalg.vector_norm(xb, dim=1)
        window = 2.0 * self.coef * xnorm * self.max_norm + 4.0 * 2.0 ** -24 * (self.max_sq + low.abs())
        window = window + 1e-30
        mask = approx <= (low + window).unsqueeze(1)
        pairs = mask.nonzero()
        if pairs.shape[0] > BF16_MAX_CANDIDATES * rows:
            self.fallbacks += 1
            return None
        r, c = pairs[:, 0], pairs[:, 1]
        dots = (xb[r] * self.codebook[c]).sum(dim=1)
        exact = self.sq[c] - 2.0 * dots
        best = torch.full((rows,), float("inf")).scatter_reduce(0, r, exact, "amin")
        hit = exact == best[r]
        code = torch.full((rows,), self.k, dtype=torch.long)
        code = code.scatter_reduce(0, r[hit], c[hit], "amin")
        return code


# --- plan cache --------------------------------------------------------------------------------------

_PLANS: dict = {}
_PLANS_LOCK = threading.Lock()
_MAX_PLANS = 256


def _plan_for(codebook: torch.Tensor, sq: torch.Tensor | None) -> _CpuPlan:
    """The prepared plan of a codebook, reused while the same (unmodified) tensors are passed."""
    base = codebook._base if codebook._base is not None else codebook
    key = (codebook.data_ptr(), tuple(codebook.shape), tuple(codebook.stride()),
           None if sq is None else (sq.data_ptr(), sq.dtype, tuple(sq.stride())))
    versions = (codebook._version, None if sq is None else sq._version)
    entry = _PLANS.get(key)
    if entry is not None:
        ref, sq_ref, seen, plan = entry
        if ref() is base and seen == versions and (sq is None or sq_ref() is _base_of(sq)):
            return plan
    plan = _CpuPlan(codebook, sq)
    with _PLANS_LOCK:
        # Plans of codebooks that no longer exist go at once (a plan holds ~2 copies of its table);
        # past _MAX_PLANS live ones, the oldest half goes.
        for stale in [k for k, v in _PLANS.items() if v[0]() is None]:
            _PLANS.pop(stale, None)
        if len(_PLANS) >= _MAX_PLANS:
            for stale in list(_PLANS)[:_MAX_PLANS // 2]:
                _PLANS.pop(stale, None)
        _PLANS[key] = (weakref.ref(base), None if sq is None else weakref.ref(_base_of(sq)), versions, plan)
    return plan


def _base_of(t: torch.Tensor) -> torch.Tensor:
    return t._base if t._base is not None else t


def clear_plans() -> None:
    """Forget every prepared codebook (tests; or to free the packed copies)."""
    with _PLANS_LOCK:
        _PLANS.clear()
