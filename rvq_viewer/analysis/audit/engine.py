"""Run a quantizer over streamed features, layer by layer, and accumulate what each layer does.

`iter_audit` is a generator that yields a progress snapshot after every chunk, so a GUI worker can
stream partial results and stop early simply by no longer iterating; `run_audit` runs it to the end.

How the work is spread (see `AuditRunner`):
- reading: the next chunks are read in a background thread (`prefetch`) while this one is encoded,
  and pages of memory-mapped feature files are given back as they are used (`PageReleaser`), so a
  multi-GB `.npy` streams in bounded resident memory;
- CPU: a chunk is cut into pieces of rows that the CPU workers (one per core, see
  `rvq_viewer.runtime.cpu_pool.CpuWorkers`) encode through every layer independently, keeping only codes
  and norms (`PieceResult`), added to the accumulator in order afterwards; the plain EnCodec rule runs
  in place in reused buffers (`encode_piece`);
- GPU: a chunk is encoded in batches sized from free device memory; an out-of-memory error halves the
  batch and the audit carries on with the smaller one (nothing of the failed batch has been counted).
"""

from __future__ import annotations

import copy
import dataclasses
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from ...io.features import FeatureSource
from ...quant import Quantizer
from ...quant.search import worker_cap
from ...runtime import (PIECE_ROWS, cpu_workers, free_memory, in_worker, is_out_of_memory, piece_rows,
                        release_cached_memory, resolve_device)
from .pairs import MOMENT_STRIDE, PairAccumulator
from .prefetch import PageReleaser, prefetch
from .result import AuditResult, build_result
from .stats import AuditAccumulator

# Chunks read ahead of the one being encoded.
PREFETCH_DEPTH = 2
# Most frames encoded at once on a GPU, whatever the free memory.
MAX_GPU_BATCH = 1 << 20


@dataclass
class AuditProgress:
    frames_done: int
    frames_total: int | None
    elapsed: float
    accumulator: AuditAccumulator

    @property
    def frames_per_second(self) -> float:
        return self.frames_done / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def fraction(self) -> float | None:
        return self.frames_done / self.frames_total if self.frames_total else None


def with_threshold(quantizer: Quantizer, threshold: float | None) -> Quantizer:
    """The quantizer with its EMA dead-code threshold replaced (the rule's kind is kept)."""
    if threshold is None:
        return quantizer
    clone = copy.copy(quantizer)
    clone.dead_code_rule = dataclasses.replace(quantizer.dead_code_rule, value=float(threshold))
    return clone


@dataclass
class PieceResult:
    """What encoding some frames gave, before it is added to an accumulator: the input norms and, per
    layer, the codes and the residual norms (and, when asked, every MOMENT_STRIDE-th row of the residual
    each layer quantized). Building it touches no accumulator, so a failed (out of memory) batch leaves
    the audit as it was."""

    frames: int
    input_norms: torch.Tensor
    layers: list[tuple[torch.Tensor, torch.Tensor]]
    layer_inputs: list[torch.Tensor] | None = None

    def add_to(self, acc: AuditAccumulator) -> None:
        acc.input.add_norms(self.input_norms)
        for index, (layer, (codes, norms)) in enumerate(zip(acc.layers, self.layers)):
            layer.add_codes(codes)
            layer.residual.add_norms(norms)
            if acc.pairs is not None:
                acc.pairs.add_step(index, codes)
                if self.layer_inputs is not None:
                    acc.pairs.add_moments(index, self.layer_inputs[index])


def _norms_of(x: torch.Tensor) -> torch.Tensor:
    if x.dtype not in (torch.float32, torch.float64):
        x = x.float()
    return torch.linalg.vector_norm(x, dim=1)


def _no_norms(x: torch.Tensor) -> torch.Tensor:
    return x.new_empty(0)


class _Buffers(threading.local):
    """Per-thread scratch tensors, kept while their `AuditRunner` lives."""

    def get(self, name: str, rows: int, cols: int, like: torch.Tensor) -> torch.Tensor:
        store = self.__dict__.setdefault("store", {})
        buf = store.get(name)
        if (buf is None or buf.shape[0] < rows or buf.shape[1] != cols or buf.dtype != like.dtype
                or buf.device != like.device):
            buf = torch.empty(max(rows, 1), cols, dtype=like.dtype, device=like.device)
            store[name] = buf
        return buf[:rows]


def encode_piece(quantizer: Quantizer, frames: torch.Tensor, n_layers: int,
                 buffers: _Buffers | None = None, norms: bool = True, moments: bool = False) -> PieceResult:
    """Prepare `frames` and run `n_layers` layers over them, keeping codes and norms only (codes
    only, with empty norms, when `norms` is False). With `moments` (plain quantizers only), also every
    MOMENT_STRIDE-th row of each layer's input residual."""
    latent = quantizer.prepare(frames)
    _row_norms = _norms_of if norms else _no_norms
    input_norms = _row_norms(latent)
    layers = []
    inputs = [] if moments and quantizer.plain_residual else None
    if buffers is not None and quantizer.plain_residual and latent.dim() == 2 and n_layers > 0:
        # Quantizer.iter_layers, without a fresh [N, D] output and residual per layer: large fresh
        # allocations are page-faulted in every time (a third of the time at D=768).
        rows, dim = latent.shape
        residual = buffers.get("residual", rows, dim, latent)
        output = buffers.get("output", rows, dim, latent)
        layer_input = latent                         # the first layer reads the frames themselves
        with torch.no_grad():
            for index in range(n_layers):
                if inputs is not None:
                    inputs.append(layer_input[::MOMENT_STRIDE].clone())
                codes = quantizer.lookup(index, layer_input)
                if index == n_layers - 1 and not norms:
                    layers.append((codes, _no_norms(latent)))    # codes only: no last residual needed
                    break
                torch.index_select(quantizer.codebooks[index], 0, codes, out=output)
                torch.sub(layer_input, output, out=residual)
                layer_input = residual
                layers.append((codes, _row_norms(residual)))
    else:
        layer_input = latent
        for step in quantizer.iter_layers(latent, n_layers):
            if inputs is not None:
                inputs.append(layer_input[::MOMENT_STRIDE])
            layers.append((step.codes, _row_norms(step.residual)))
            layer_input = step.residual
    return PieceResult(int(latent.shape[0]), input_norms, layers, inputs)


def _wants_moments(acc: AuditAccumulator) -> bool:
    return acc.pairs is not None and acc.pairs.moments is not None


_UNSET = object()


class AuditRunner:
    """Encodes chunks into an accumulator on one device: CPU workers, or GPU batches with OOM halving.

    `batch` is the most frames encoded at once (None: on a GPU, chosen from free memory at the first
    chunk; on the CPU, the whole chunk); after an out-of-memory error it is halved (down to
    `frame_stride`) and stays halved.
    """

    def __init__(self, quantizer: Quantizer, device: torch.device, batch: int | None = None,
                 piece_rows: int = PIECE_ROWS):
        self.quantizer = quantizer
        self.device = torch.device(device)
        self.stride = max(1, int(getattr(quantizer, "frame_stride", 1) or 1))
        self.batch = None if batch is None else self._aligned(batch)
        self.piece_rows = self._aligned(piece_rows)
        self.halvings = 0
        self._sized = batch is not None
        self.sizes = list(quantizer.codebook_sizes)
        self._buffers = _Buffers()
        self._cap = _UNSET

    def _aligned(self, rows: int) -> int:
        return max(self.stride, int(rows) // self.stride * self.stride)

    def initial_batch(self) -> int | None:
        """Frames per GPU batch from free memory (a quarter of it for the latent, residual and layer
        output of each frame; the search sizes its own score blocks). None off the GPU: whole chunks."""
        free = free_memory(self.device)
        if free is None:
            return None
        dim = max([int(self.quantizer.dim)] + [int(c.shape[1]) for c in self.quantizer.codebooks])
        per_frame = 4 * dim * 6 + 16 * max(1, len(self.sizes))
        return self._aligned(min(MAX_GPU_BATCH, free // 4 // per_frame))

    def audit(self, frames: torch.Tensor, acc: AuditAccumulator) -> int:
        """Encode `frames` (one chunk of one sequence) into `acc`; returns the code frames given."""
        n = int(frames.shape[0])
        if n == 0:
            return 0
        workers = cpu_workers() if self.device.type == "cpu" and not in_worker() else None
        if workers is not None and n >= 2 * self.piece_rows:
            return self._audit_cpu(frames, acc, workers)
        return self._audit_batches(frames, acc)

    def _audit_cpu(self, frames: torch.Tensor, acc: AuditAccumulator, workers) -> int:
        done = 0
        for result in self._pieces(frames, workers, norms=True, moments=_wants_moments(acc)):
            result.add_to(acc)
            done += result.frames
        return done

    def _pieces(self, frames: torch.Tensor, workers, norms: bool, moments: bool = False) -> list[PieceResult]:
        n_layers, buffers = len(self.sizes), self._buffers
        threads = min(workers.n, self._worker_cap() or workers.n)
        rows = piece_rows(frames.shape[0], threads, self.piece_rows, self.stride)
        return workers.run(
            lambda s: encode_piece(self.quantizer, frames[s:s + rows], n_layers, buffers, norms, moments),
            range(0, frames.shape[0], rows), workers=threads)

    def _worker_cap(self) -> int | None:
        """As many workers as the search probe found fastest for these codebooks (measured here, before
        the pieces go out, so that no worker has to measure while the others wait)."""
        if self._cap is _UNSET:
            self._cap = worker_cap(self.quantizer.codebooks) if self.quantizer.plain_residual else None
        return self._cap

    def encode(self, frames: torch.Tensor) -> list[torch.Tensor]:
        """Codes of every layer for `frames` (one sequence), with the audit's work split but no stats."""
        workers = cpu_workers() if self.device.type == "cpu" and not in_worker() else None
        if workers is not None and frames.shape[0] >= 2 * self.piece_rows:
            results = self._pieces(frames, workers, norms=False)
        else:
            results = [encode_piece(self.quantizer, frames, len(self.sizes), self._buffers, norms=False)]
        return [torch.cat([r.layers[i][0] for r in results]) for i in range(len(self.sizes))]

    def _audit_batches(self, frames: torch.Tensor, acc: AuditAccumulator) -> int:
        n = int(frames.shape[0])
        if self.batch is None and not self._sized:
            self._sized = True
            self.batch = self.initial_batch()
        start = done = 0
        moments = _wants_moments(acc)
        while start < n:
            size = self.batch or n
            stop = min(n, start + size)
            try:
                result = encode_piece(self.quantizer, frames[start:stop], len(self.sizes), self._buffers,
                                      moments=moments)
            except Exception as exc:  # noqa: BLE001 - only out-of-memory is handled, the rest re-raised
                if not is_out_of_memory(exc) or stop - start <= self.stride:
                    raise
                self.batch = self._aligned((stop - start) // 2)
                self.halvings += 1
                release_cached_memory(self.device)
                continue
            result.add_to(acc)
            done += result.frames
            start = stop
        return done


def encode_frames(quantizer: Quantizer, frames: torch.Tensor, device: str | torch.device | None = None,
                  n_q: int | None = None) -> torch.Tensor:
    """Codes [n_q, N] of frames [N, dim] of one sequence, on the audit's engine (CPU workers, in-place
    residuals). Same codes as `quantizer.encode`; for quantizers whose layers give different code
    counts (multi-rate), use that instead."""
    if device is not None:
        quantizer = quantizer.to(resolve_device(device))
    if n_q is not None and n_q < quantizer.n_q:
        quantizer = copy.copy(quantizer)
        quantizer.truncate(n_q)
    codes = AuditRunner(quantizer, quantizer.device).encode(frames)
    return torch.stack(codes)


def new_accumulator(quantizer: Quantizer, pairs: bool = False) -> AuditAccumulator:
    """An empty accumulator for the quantizer's layers (with the layer-pair statistics when `pairs`)."""
    return AuditAccumulator(quantizer.codebook_sizes, PairAccumulator.for_quantizer(quantizer) if pairs else None)


def audit_source(quantizer: Quantizer, source: FeatureSource, device: str | torch.device | None = "auto",
                 batch: int | None = None, pairs: bool = False) -> tuple[AuditAccumulator, int]:
    """The whole source into one accumulator, as `iter_audit` gathers it: (accumulator, frames read).
    One shard of a sharded audit; its pair tables are compacted, so the accumulator travels small."""
    acc, done = None, 0
    for progress in iter_audit(quantizer, source, device, count_total=False, batch=batch, pairs=pairs):
        acc, done = progress.accumulator, progress.frames_done
    if acc is None:
        acc = new_accumulator(quantizer, pairs)
    if acc.pairs is not None:
        for table in acc.pairs.pairs:
            table.compact()
    return acc, done


def iter_audit(quantizer: Quantizer, source: FeatureSource, device: str | torch.device | None = "auto",
               count_total: bool = True, batch: int | None = None,
               pairs: bool = False) -> Iterator[AuditProgress]:
    """Yield an `AuditProgress` after each chunk; the accumulator in it grows as the audit goes on.

    Chunks are read ahead in a background thread; closing the generator (or dropping it) stops that
    reader. `batch` caps the frames encoded at once on a GPU (default: from free memory). `pairs`
    also gathers the joint code histograms of consecutive layers and each layer's input moments (for
    the redundancy and rank rules of the diagnosis)."""
    dev = resolve_device(device)
    quantizer = quantizer.to(dev)
    acc = new_accumulator(quantizer, pairs)
    total = source.total_frames() if count_total else None
    runner = AuditRunner(quantizer, dev, batch=batch)
    releaser = PageReleaser()
    done = 0
    start = time.perf_counter()
    chunks = prefetch(source, PREFETCH_DEPTH)
    try:
        for chunk in chunks:
            frames = chunk.frames
            runner.audit(frames, acc)
            done += frames.shape[0]
            releaser.consumed(chunk.path, frames.numel() * frames.element_size())
            chunk = frames = None
            yield AuditProgress(done, total, time.perf_counter() - start, acc)
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
        releaser.flush()


def run_audit(quantizer: Quantizer, source: FeatureSource, device: str | torch.device | None = "auto",
              ema_threshold: float | None = None,
              progress: Callable[[AuditProgress], None] | None = None, pairs: bool = False) -> AuditResult:
    """Audit the whole source and return the per-layer report (with `.pairs` when `pairs` is set)."""
    quantizer = with_threshold(quantizer, ema_threshold)
    acc = AuditAccumulator(quantizer.codebook_sizes)
    for snapshot in iter_audit(quantizer, source, device, count_total=progress is not None, pairs=pairs):
        acc = snapshot.accumulator
        if progress is not None:
            progress(snapshot)
    return build_result(acc, quantizer, sources=[str(p) for p in source.files])
