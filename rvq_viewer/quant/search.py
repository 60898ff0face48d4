"""Nearest-codeword search for many frames, without materialising more than one tile of distances.

`nearest_codes(x, codebook)` is argmin_k ||x - e_k||² for every row of x, ties to the lowest index.
||x||² is the same for every code, so the score is ||e_k||² - 2 x·e_k.

On the CPU in float32 the private engine (`_cpu_engine`: fused oneDNN tiles and a two-level argmin, or
the native kernel of `_native` built on this machine, in the configuration and thread count
`search_probe` measured fastest for the shape on this host) runs over the process's
CPU workers (`rvq_viewer.runtime.cpu_pool`: one single-threaded worker per core taking pieces of rows
from a queue, with no OpenMP barrier per op, so it holds up when other processes share the cores).
Other devices (CUDA) and dtypes use blocked `addmm` + `argmin`, the block sized from free memory and
halved on an out-of-memory error. fp16/bf16 codebooks are upcast to float32.
`SEARCH_BACKEND` (env `RVQ_VIEWER_SEARCH`: auto, reference) forces the plain path.
"""

from __future__ import annotations

import os

import torch

from ..runtime.cpu_pool import PIECE_ROWS, cpu_workers, in_worker, piece_rows
from ..runtime.devices import free_memory, is_out_of_memory, release_cached_memory
from ._cpu_engine import PANEL, clear_plans, plan_for, squared_norms
from .search_probe import config_for

# Rows per block of the generic (addmm + argmin) path off the GPU.
DEFAULT_BLOCK = 4096
# "auto" (the CPU engine where it applies) or "reference" (plain blocked addmm + argmin everywhere).
SEARCH_BACKEND = os.environ.get("RVQ_VIEWER_SEARCH", "auto")

__all__ = ["DEFAULT_BLOCK", "PANEL", "auto_block", "clear_plans", "nearest_codes", "reference_nearest_codes",
           "squared_norms", "worker_cap"]


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
        plan = plan_for(codebook, codebook_sq)
        pool = cpu_workers()
        n = x.shape[0]
        if pool is None or in_worker() or n < 2 * PIECE_ROWS:
            return plan.search(x, block)
        out = torch.empty(n, dtype=torch.long)
        threads = min(pool.n, plan.config.threads or pool.n)
        rows = piece_rows(n, threads)

        def piece(start: int) -> None:
            out[start:start + rows] = plan.search(x[start:start + rows], block)

        pool.run(piece, range(0, n, rows), workers=threads)
        return out
    return reference_nearest_codes(x, codebook, codebook_sq, block)


def worker_cap(codebooks) -> int | None:
    """The most CPU workers to split rows over for a search through these codebooks: the fewest the
    probe measured fastest among them (None: every worker). Asking measures any shape not yet seen, in
    the calling thread, before the work is split."""
    if SEARCH_BACKEND == "reference":
        return None
    caps = [config_for(c.shape[1], c.shape[0]).threads for c in codebooks
            if c.device.type == "cpu" and c.dtype == torch.float32 and c.dim() == 2]
    caps = [c for c in caps if c]
    return min(caps) if caps else None


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


def auto_block(device: torch.device, k: int, itemsize: int = 4, free: int | None = None) -> int:
    """Rows per score block: a quarter of the free GPU memory for the [rows, K] scores and argmin's
    temporaries (at most 65,536 rows), or DEFAULT_BLOCK off the GPU."""
    if free is None:
        free = free_memory(device)
    if free is None:
        return DEFAULT_BLOCK
    rows = free // 4 // max(1, k * (itemsize + 8))
    return int(max(64, min(65536, rows)))
