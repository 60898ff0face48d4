"""The CPU engine behind `nearest_codes`: fused score tiles and a two-level argmin. Private.

- the codes are cut into panels of at most `PANEL` codes and the rows into blocks, so one
  [rows, panel] score tile stays in cache and is never written to memory as a whole;
- the tile comes from oneDNN (`torch.ops.mkldnn._linear_pointwise`) with `-2 E` packed once per
  codebook and ||e||² as the bias; where that op is missing or disagrees with `addmm` on a probe,
  `torch.addmm(out=...)` into a reused buffer;
- panel width, tile size and the path (oneDNN, addmm, the fused native kernel of `_native` where it
  builds, or faiss's IndexFlatL2 where installed) are the ones `search_probe` measured fastest on this
  host for the shape;
- the argmin is two-level: each panel's codes are stored permuted so that one vectorised vertical
  `amin` gives the minimum of every group of S consecutive codes; the first group holding the row
  minimum is found among few group minima, then the first code in that group. Ties go to the lowest
  index exactly as `torch.argmin` does.
"""

from __future__ import annotations

import math
import threading
import weakref

import torch

from .search_probe import DEFAULT, SearchConfig, config_for

# At most this many codes per score tile (by default; the probe may choose fewer).
PANEL = DEFAULT.panel
# Rows per block when a caller passes none and the tile size allows more.
MAX_ROWS = 4096


def squared_norms(codebook: torch.Tensor) -> torch.Tensor:
    """||e_k||² for each row, computed once per codebook and reused for every block."""
    return codebook.pow(2).sum(dim=1)


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
        best, group = cube.amin(dim=1).min(dim=1)               # first group holding the minimum
        if self.s == 1:
            return best, group.add_(self.start) if self.start else group
        index = group.view(rows, 1, 1).expand(rows, self.s, 1)
        _, offset = torch.gather(cube, 2, index).view(rows, self.s).min(dim=1)   # first such code in it
        code = offset.add_(group, alpha=self.s)                  # group * S + offset, in place
        return best, code.add_(self.start) if self.start else code


class _CpuPlan:
    """Everything prepared once per codebook for the CPU engine."""

    def __init__(self, codebook: torch.Tensor, sq: torch.Tensor | None, config: SearchConfig = DEFAULT):
        if sq is None:
            sq = squared_norms(codebook)
        codebook = codebook.detach().contiguous()
        sq = sq.detach().to(torch.float32).contiguous()
        self.k, self.d = codebook.shape
        self.config = config
        self.use_onednn = config.path == "onednn" and _onednn_ok()
        width = min(self.k, config.panel)
        self.panels = [_Panel(codebook, sq, start, min(width, self.k - start))
                       for start in range(0, self.k, width)]
        widest = max(p.padded for p in self.panels)
        self.rows = int(max(16, min(MAX_ROWS, config.tile_bytes // (4 * widest))))
        if self.use_onednn:
            for p in self.panels:
                p.pack(self.rows)
        self._local = threading.local()

    def _buffer(self, rows: int) -> torch.Tensor | None:
        if self.use_onednn:
            return None
        buf = getattr(self._local, "buf", None)
        widest = max(p.padded for p in self.panels)
        if buf is None or buf.shape[0] < rows:
            buf = torch.empty(rows, widest)
            self._local.buf = buf
        return buf

    def search(self, x: torch.Tensor, block: int | None = None) -> torch.Tensor:
        n = x.shape[0]
        rows = self.rows if block is None else max(1, int(block))
        buf = self._buffer(min(rows, n))
        if n <= rows:                                            # one block: no output to copy into
            return self._search_fp32(x if x.is_contiguous() else x.contiguous(), buf)
        out = torch.empty(n, dtype=torch.long)
        for start in range(0, n, rows):
            xb = x[start:start + rows]
            if not xb.is_contiguous():
                xb = xb.contiguous()
            out[start:start + rows] = self._search_fp32(xb, buf)
        return out

    def _search_fp32(self, xb: torch.Tensor, buf: torch.Tensor | None) -> torch.Tensor:
        best, code = self.panels[0].argmin(self.panels[0].scores(xb, self.use_onednn, buf))
        for panel in self.panels[1:]:
            value, index = panel.argmin(panel.scores(xb, self.use_onednn, buf))
            better = value < best                    # strict: an earlier panel (lower codes) keeps ties
            best = torch.where(better, value, best)
            code = torch.where(better, index, code)
        return code


# --- faiss ---------------------------------------------------------------------------------------------

_FAISS = None


def faiss_module():
    """faiss, if installed (an optional speed-up: its small-D kernels beat a GEMM there)."""
    global _FAISS
    if _FAISS is None:
        try:
            import faiss
            _FAISS = faiss
        except Exception:  # noqa: BLE001 - missing or broken: not used
            _FAISS = False
    return _FAISS or None


class _FaissPlan:
    """IndexFlatL2 over the codebook, searched single-threaded in each CPU worker (the engine splits
    rows over the workers; faiss's own OpenMP threads would compete with them)."""

    def __init__(self, codebook: torch.Tensor, config: SearchConfig):
        faiss = faiss_module()
        self.config = config
        self.index = faiss.IndexFlatL2(codebook.shape[1])
        self.index.add(codebook.detach().contiguous().numpy())
        self._local = threading.local()

    def search(self, x: torch.Tensor, block: int | None = None) -> torch.Tensor:
        from ..runtime.cpu_pool import in_worker
        # Only in a worker, which is single-threaded anyway: faiss may share torch's OpenMP runtime,
        # and one thread for the main thread would leave the process without workers.
        if in_worker() and not getattr(self._local, "single", False):
            faiss_module().omp_set_num_threads(1)
            self._local.single = True
        _, found = self.index.search(x.detach().contiguous().numpy(), 1)
        return torch.from_numpy(found[:, 0]).long()


def make_plan(codebook: torch.Tensor, sq: torch.Tensor | None, config: SearchConfig):
    if config.path == "faiss":
        return _FaissPlan(codebook, config)
    if config.path == "native":
        from ._native import NativePlan
        return NativePlan(codebook, sq, config)
    return _CpuPlan(codebook, sq, config)


# --- plan cache --------------------------------------------------------------------------------------

_PLANS: dict = {}
_PLANS_LOCK = threading.Lock()
_MAX_PLANS = 256


def plan_for(codebook: torch.Tensor, sq: torch.Tensor | None):
    """The prepared plan of a codebook (in the configuration measured fastest for its shape), reused
    while the same (unmodified) tensors are passed."""
    base = codebook._base if codebook._base is not None else codebook
    key = (codebook.data_ptr(), tuple(codebook.shape), tuple(codebook.stride()),
           None if sq is None else (sq.data_ptr(), sq.dtype, tuple(sq.stride())))
    versions = (codebook._version, None if sq is None else sq._version)
    entry = _PLANS.get(key)
    if entry is not None:
        ref, sq_ref, seen, plan = entry
        if ref() is base and seen == versions and (sq is None or sq_ref() is _base_of(sq)):
            return plan
    plan = make_plan(codebook, sq, config_for(codebook.shape[1], codebook.shape[0]))
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
