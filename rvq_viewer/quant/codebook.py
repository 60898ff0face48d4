"""The EMA Euclidean codebook of EnCodec and GPT-SoVITS, with recorded dead-code events.

State dict keys are those of EnCodec's `EuclideanCodebook`: `inited` [1], `cluster_size` [K],
`embed` [K, D], `embed_avg` [K, D], so their checkpoints load unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .kmeans import kmeans, sample_vectors


@dataclass(frozen=True)
class DeadCodeEvent:
    """One code replaced by a batch frame because its EMA cluster size fell below the threshold."""

    layer: int
    code: int
    step: int
    ema_size_before: float


def laplace_smoothing(x: torch.Tensor, n_categories: int, epsilon: float) -> torch.Tensor:
    """(x + eps) / (sum x + K eps): keeps every cluster size strictly positive."""
    return (x + epsilon) / (x.sum() + n_categories * epsilon)


def codebook_distances(x: torch.Tensor, embed: torch.Tensor) -> torch.Tensor:
    """Negative squared distances [N, K], written the way EnCodec writes them so ties break alike."""
    return -(x.pow(2).sum(1, keepdim=True) - 2 * x @ embed.t() + embed.t().pow(2).sum(0, keepdim=True))


class EuclideanCodebook(nn.Module):
    """Codebook with k-means init, EMA updates and expiry of dead codes.

    `expire_before_ema` picks the order: True is EnCodec's (expire, then EMA update, so the stale EMA
    overwrites a respawned code at once), False is GPT-SoVITS's (EMA update, then expire).
    """

    def __init__(self, dim: int, codebook_size: int, kmeans_init: bool = False, kmeans_iters: int = 10,
                 decay: float = 0.99, epsilon: float = 1e-5, threshold_ema_dead_code: float = 2.0,
                 expire_before_ema: bool = True):
        super().__init__()
        self.dim = dim
        self.codebook_size = codebook_size
        self.kmeans_iters = kmeans_iters
        self.decay = decay
        self.epsilon = epsilon
        self.threshold_ema_dead_code = threshold_ema_dead_code
        self.expire_before_ema = expire_before_ema
        embed = torch.zeros(codebook_size, dim) if kmeans_init else nn.init.kaiming_uniform_(
            torch.empty(codebook_size, dim))
        self.register_buffer("inited", torch.tensor([float(not kmeans_init)]))
        self.register_buffer("cluster_size", torch.zeros(codebook_size))
        self.register_buffer("embed", embed)
        self.register_buffer("embed_avg", embed.clone())
        # Not in the state dict, so checkpoints keep exactly the peers' keys.
        self.layer_index = 0
        self.should_stop = None   # asked between k-means steps (see kmeans); set by a trainer
        self.step = 0
        self.events: list[DeadCodeEvent] = []
        self.generator: torch.Generator | None = None

    # --- inference -------------------------------------------------------------------------------
    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """Nearest code index for each row of x [N, D]; the first of equal distances wins."""
        return codebook_distances(x, self.embed).max(dim=-1).indices

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Codes for x [..., D] with the leading shape kept."""
        shape = x.shape[:-1]
        return self.quantize(x.reshape(-1, self.dim)).view(*shape)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return nn.functional.embedding(codes, self.embed)

    # --- training --------------------------------------------------------------------------------
    @torch.no_grad()
    def init_embed_(self, data: torch.Tensor) -> None:
        if self.inited.item():
            return
        embed, cluster_size = kmeans(data, self.codebook_size, self.kmeans_iters, self.generator, self.should_stop)
        self.embed.copy_(embed)
        self.embed_avg.copy_(embed)
        self.cluster_size.copy_(cluster_size.to(self.cluster_size.dtype))
        self.inited.fill_(1.0)

    @torch.no_grad()
    def expire_codes_(self, batch: torch.Tensor) -> None:
        if self.threshold_ema_dead_code <= 0:
            return
        expired = self.cluster_size < self.threshold_ema_dead_code
        if not expired.any():
            return
        sizes = self.cluster_size[expired].tolist()
        codes = expired.nonzero().flatten().tolist()
        replacement = sample_vectors(batch, self.codebook_size, self.generator)
        self.embed.copy_(torch.where(expired.unsqueeze(1), replacement, self.embed))
        self.events.extend(DeadCodeEvent(self.layer_index, c, self.step, s) for c, s in zip(codes, sizes))

    @torch.no_grad()
    def ema_update_(self, x: torch.Tensor, codes: torch.Tensor) -> None:
        onehot = nn.functional.one_hot(codes, self.codebook_size).type(x.dtype)
        self.cluster_size.mul_(self.decay).add_(onehot.sum(0), alpha=1 - self.decay)
        self.embed_avg.mul_(self.decay).add_(onehot.t() @ x, alpha=1 - self.decay)
        smoothed = laplace_smoothing(self.cluster_size, self.codebook_size, self.epsilon) * self.cluster_size.sum()
        self.embed.copy_(self.embed_avg / smoothed.unsqueeze(1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Quantize x [..., D]; in training mode also initialise, update the EMA and expire codes."""
        shape = x.shape[:-1]
        flat = x.reshape(-1, self.dim).float()
        if self.training:
            self.init_embed_(flat)
        codes = self.quantize(flat)
        quantized = self.decode(codes)
        if self.training:
            self.step += 1
            if self.expire_before_ema:
                self.expire_codes_(flat)
                self.ema_update_(flat, codes)
            else:
                self.ema_update_(flat, codes)
                self.expire_codes_(flat)
        return quantized.view(*shape, self.dim).to(x.dtype), codes.view(*shape)
