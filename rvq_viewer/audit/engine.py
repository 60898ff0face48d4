"""Run a quantizer over streamed features, layer by layer, and accumulate what each layer does.

`iter_audit` is a generator that yields a progress snapshot after every chunk, so a GUI worker can
stream partial results and stop early simply by no longer iterating; `run_audit` runs it to the end.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from ..core import DeadCodeRule, Quantizer
from ..io.features import FeatureSource
from .result import AuditResult, build_result
from .stats import AuditAccumulator


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """'auto' is the first CUDA device when there is one, else the CPU."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("CUDA was asked for, but torch sees no CUDA device")
    return device


def available_devices() -> list[str]:
    return ["auto", "cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]


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
    clone.dead_code_rule = DeadCodeRule(quantizer.dead_code_rule.kind, float(threshold))
    return clone


def audit_chunk(quantizer: Quantizer, frames: torch.Tensor, acc: AuditAccumulator) -> int:
    """Encode one chunk of one sequence and add it to `acc`; returns the code frames it gave."""
    latent = quantizer.prepare(frames)
    acc.input.add(latent)
    for step in quantizer.iter_layers(latent, len(acc.layers)):
        acc.layers[step.index].add(step.codes, step.residual)
    return int(latent.shape[0])


def iter_audit(quantizer: Quantizer, source: FeatureSource, device: str | torch.device | None = "auto",
               count_total: bool = True) -> Iterator[AuditProgress]:
    """Yield an `AuditProgress` after each chunk; the accumulator in it grows as the audit goes on."""
    quantizer = quantizer.to(resolve_device(device))
    acc = AuditAccumulator(quantizer.codebook_sizes)
    total = source.total_frames() if count_total else None
    done = 0
    start = time.perf_counter()
    for chunk in source:
        audit_chunk(quantizer, chunk.frames, acc)
        done += chunk.frames.shape[0]
        yield AuditProgress(done, total, time.perf_counter() - start, acc)


def run_audit(quantizer: Quantizer, source: FeatureSource, device: str | torch.device | None = "auto",
              ema_threshold: float | None = None,
              progress: Callable[[AuditProgress], None] | None = None) -> AuditResult:
    """Audit the whole source and return the per-layer report."""
    quantizer = with_threshold(quantizer, ema_threshold)
    acc = AuditAccumulator(quantizer.codebook_sizes)
    for snapshot in iter_audit(quantizer, source, device, count_total=progress is not None):
        acc = snapshot.accumulator
        if progress is not None:
            progress(snapshot)
    return build_result(acc, quantizer, sources=[str(p) for p in source.files])
