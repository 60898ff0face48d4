"""A small step-wise trainer for the project's own RVQ: EMA codebooks fitted to a bank of frames.

No gradients are involved: EnCodec-style codebooks learn only through their EMA updates, k-means
init and dead-code expiry, so training is "draw a batch, run the quantizer in train mode". It is
step-wise (`step()` does one batch) so that a GUI worker thread can drive it and stop it between steps.
Every random draw (batches, k-means, respawned codes) comes from one seeded generator, so a run is
reproducible from its settings.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

import torch

from ..io.save import save_checkpoint
from ..quant.codebook import DeadCodeEvent, EuclideanCodebook
from ..quant.kmeans import sample_vectors
from ..quant.vq import ResidualVectorQuantization


@dataclass
class TrainSettings:
    """Hyper-parameters of one run; the EnCodec defaults except for the batch and codebook sizes.

    `threshold_relative` changes the meaning of `threshold_ema_dead_code`:
      False: absolute, as in EnCodec / GPT-SoVITS: a code is dead when its EMA cluster size < value.
      True: relative to the uniform share, as in Moshi: dead when
            cluster_size < value * cluster_size.sum() / codebook_size.
            The absolute threshold is recomputed from the current sums before every step; before a
            k-means init has run the sums are 0, so the first step never expires anything.
    `expire_before_ema`: True is EnCodec's order (expire, then EMA update), False GPT-SoVITS's.
    """

    n_q: int = 4
    codebook_size: int = 512
    kmeans_init: bool = True
    kmeans_iters: int = 50
    decay: float = 0.99
    epsilon: float = 1e-5
    threshold_ema_dead_code: float = 2.0
    threshold_relative: bool = False
    expire_before_ema: bool = True
    batch_size: int = 2048  # frames per step
    steps: int = 1000
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainSettings":
        """Build from a dict such as a checkpoint's config; keys this version does not know are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class StepStats:
    """What one step did. Lists are per layer; counts and perplexity are over this step's batch only."""

    step: int
    used: list[int]               # distinct codes picked in the batch
    perplexity: list[float]       # exp(entropy) of the batch's code histogram, 1..codebook_size
    dead: list[int]               # codes with EMA cluster size below the threshold after the step
    events: list[DeadCodeEvent] = field(default_factory=list)  # codes replaced during this step
    residual_mse: float = 0.0     # mean squared error left after all layers, on the batch


def batch_perplexity(codes: torch.Tensor, codebook_size: int) -> float:
    """exp(entropy) of the empirical code distribution: the number of equally used codes it equals."""
    probs = torch.bincount(codes.flatten(), minlength=codebook_size).double()
    probs = probs / probs.sum()
    nonzero = probs[probs > 0]
    return math.exp(-(nonzero * nonzero.log()).sum().item())


class Trainer:
    """Fits a `ResidualVectorQuantization` to `frames` [N, D], one random batch per `step()`.

    `init_codebooks`, one [codebook_size, D] tensor per layer, starts from given codebooks instead of
    k-means or random init. Each code then gets the uniform share batch_size / codebook_size as its EMA
    cluster size (what a perfectly balanced codebook would settle at), and `embed_avg` is set to
    embed * cluster_size, the EMA sum that is consistent with `embed`: copying `embed` itself into
    `embed_avg`, as EnCodec's k-means init does, would pull every code toward zero on the first update.
    """

    def __init__(self, frames: torch.Tensor, settings: TrainSettings | None = None,
                 init_codebooks: list[torch.Tensor] | None = None, should_stop: Callable[[], bool] | None = None):
        if frames.ndim != 2 or frames.shape[0] == 0:
            raise ValueError(f"frames must be [N, D] with N > 0, got {tuple(frames.shape)}")
        self.settings = settings or TrainSettings()
        self.frames = frames.detach().float().contiguous()
        self.generator = torch.Generator().manual_seed(self.settings.seed)
        self._rvq = self._build_rvq(self.frames.shape[1])
        for cb in self.codebooks:
            cb.should_stop = should_stop      # k-means init (in the first step) stops when asked
        if init_codebooks is not None:
            self._load_codebooks(init_codebooks)
        self._step = 0
        self._events_seen = [0] * self.settings.n_q  # per-layer count of events already reported

    def _build_rvq(self, dim: int) -> ResidualVectorQuantization:
        s = self.settings
        # The random (kaiming) init of kmeans_init=False draws from torch's global RNG inside the
        # codebook constructor, so seed it here too for reproducible runs.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(s.seed)
            rvq = ResidualVectorQuantization(
                num_quantizers=s.n_q, dim=dim, codebook_size=s.codebook_size, kmeans_init=s.kmeans_init,
                kmeans_iters=s.kmeans_iters, decay=s.decay, epsilon=s.epsilon,
                threshold_ema_dead_code=0.0 if s.threshold_relative else s.threshold_ema_dead_code,
                expire_before_ema=s.expire_before_ema)
        rvq.set_generator(self.generator)
        return rvq.train()

    @torch.no_grad()
    def _load_codebooks(self, codebooks: list[torch.Tensor]) -> None:
        s = self.settings
        if len(codebooks) != s.n_q:
            raise ValueError(f"expected {s.n_q} codebooks, got {len(codebooks)}")
        share = s.batch_size / s.codebook_size
        for cb, embed in zip(self.codebooks, codebooks):
            if tuple(embed.shape) != tuple(cb.embed.shape):
                raise ValueError(f"codebook shape {tuple(embed.shape)} != {tuple(cb.embed.shape)}")
            cb.embed.copy_(embed)
            cb.cluster_size.fill_(share)
            cb.embed_avg.copy_(cb.embed * share)
            cb.inited.fill_(1.0)

    # --- state -----------------------------------------------------------------------------------
    @property
    def rvq(self) -> ResidualVectorQuantization:
        return self._rvq

    @property
    def codebooks(self) -> list[EuclideanCodebook]:
        return [layer._codebook for layer in self._rvq.layers]

    @property
    def step_count(self) -> int:
        return self._step

    @property
    def events(self) -> list[DeadCodeEvent]:
        """Every dead-code replacement so far, ordered by step, layer, code."""
        return self._rvq.events

    # --- training --------------------------------------------------------------------------------
    def _set_relative_thresholds(self) -> None:
        s = self.settings
        for cb in self.codebooks:
            uniform_share = cb.cluster_size.sum().item() / s.codebook_size
            cb.threshold_ema_dead_code = s.threshold_ema_dead_code * uniform_share

    def _draw_batch(self) -> torch.Tensor:
        """[1, D, batch]: the layout the quantizer takes, with the frames as time steps."""
        batch = sample_vectors(self.frames, self.settings.batch_size, self.generator)
        return batch.t().unsqueeze(0)

    def _new_events(self) -> list[DeadCodeEvent]:
        new = []
        for i, cb in enumerate(self.codebooks):
            new.extend(cb.events[self._events_seen[i]:])
            self._events_seen[i] = len(cb.events)
        return sorted(new, key=lambda e: (e.step, e.layer, e.code))

    @torch.no_grad()
    def step(self) -> StepStats:
        """Train on one random batch and report what happened."""
        if self.settings.threshold_relative:
            self._set_relative_thresholds()
        x = self._draw_batch()
        out = self._rvq(x)
        self._step += 1
        k = self.settings.codebook_size
        codes = out.codes.reshape(out.codes.shape[0], -1)
        return StepStats(
            step=self._step,
            used=[int(torch.unique(c).numel()) for c in codes],
            perplexity=[batch_perplexity(c, k) for c in codes],
            dead=[int((cb.cluster_size < cb.threshold_ema_dead_code).sum()) for cb in self.codebooks],
            events=self._new_events(),
            residual_mse=float((x - out.quantized).pow(2).mean()),
        )

    def run(self, steps: int | None = None, callback: Callable[[StepStats], None] | None = None,
            should_stop: Callable[[], bool] | None = None) -> list[StepStats]:
        """Do `steps` steps (default: settings.steps); `should_stop()` is asked before each one."""
        history = []
        for _ in range(self.settings.steps if steps is None else steps):
            if should_stop is not None and should_stop():
                break
            stats = self.step()
            history.append(stats)
            if callback is not None:
                callback(stats)
        return history

    def save(self, path: str | Path) -> None:
        """Checkpoint in the EnCodec key layout, with the step and these settings as config."""
        save_checkpoint(path, self._rvq, step=self._step, config=self.settings.to_dict())
