"""Vector quantization and its residual stack, as in EnCodec and GPT-SoVITS.

Tensors follow their convention: inputs and outputs are [B, D, T], codes are [n_q, B, T].
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .codebook import DeadCodeEvent, EuclideanCodebook


class VectorQuantization(nn.Module):
    """One codebook with optional input/output projections (present only when codebook_dim != dim)."""

    def __init__(self, dim: int, codebook_size: int, codebook_dim: int | None = None, decay: float = 0.99,
                 epsilon: float = 1e-5, kmeans_init: bool = True, kmeans_iters: int = 50,
                 threshold_ema_dead_code: float = 2.0, commitment_weight: float = 1.0,
                 expire_before_ema: bool = True):
        super().__init__()
        codebook_dim = codebook_dim or dim
        needs_projection = codebook_dim != dim
        self.project_in = nn.Linear(dim, codebook_dim) if needs_projection else nn.Identity()
        self.project_out = nn.Linear(codebook_dim, dim) if needs_projection else nn.Identity()
        self.commitment_weight = commitment_weight
        self._codebook = EuclideanCodebook(codebook_dim, codebook_size, kmeans_init, kmeans_iters, decay,
                                           epsilon, threshold_ema_dead_code, expire_before_ema)

    @property
    def codebook(self) -> torch.Tensor:
        return self._codebook.embed

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """[B, D, T] -> codes [B, T]."""
        return self._codebook.encode(self.project_in(x.transpose(1, 2)))

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, T] -> [B, D, T]."""
        return self.project_out(self._codebook.decode(codes)).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return (quantized [B, D, T], codes [B, T], commitment loss)."""
        x = self.project_in(x.transpose(1, 2))
        quantized, codes = self._codebook(x)
        loss = torch.zeros((), device=x.device)
        if self.training:
            # Straight-through estimator: the forward value is the codeword, the gradient goes to x.
            quantized = x + (quantized - x).detach()
            if self.commitment_weight > 0:
                loss = nn.functional.mse_loss(quantized.detach(), x) * self.commitment_weight
        return self.project_out(quantized).transpose(1, 2), codes, loss


@dataclass
class RVQOutput:
    quantized: torch.Tensor          # sum of the layers' outputs [B, D, T]
    codes: torch.Tensor              # [n_q, B, T]
    losses: torch.Tensor             # [n_q]
    layer_outputs: list[torch.Tensor] = field(default_factory=list)  # quantized of each asked layer

    def __iter__(self):  # allows `quantized, codes, losses, outs = rvq(x)`
        return iter((self.quantized, self.codes, self.losses, self.layer_outputs))


class ResidualVectorQuantization(nn.Module):
    """`num_quantizers` codebooks; layer i quantizes the residual left by layers 0..i-1."""

    def __init__(self, *, num_quantizers: int = 8, **kwargs):
        super().__init__()
        self.layers = nn.ModuleList(VectorQuantization(**kwargs) for _ in range(num_quantizers))
        for index, layer in enumerate(self.layers):
            layer._codebook.layer_index = index

    @property
    def num_quantizers(self) -> int:
        return len(self.layers)

    @property
    def events(self) -> list[DeadCodeEvent]:
        """Every dead-code replacement of every layer so far, ordered by step then layer."""
        merged = [e for layer in self.layers for e in layer._codebook.events]
        return sorted(merged, key=lambda e: (e.step, e.layer, e.code))

    def clear_events(self) -> None:
        for layer in self.layers:
            layer._codebook.events.clear()

    def set_generator(self, generator: torch.Generator | None) -> None:
        """Use one RNG for k-means and code respawning, so that training runs are reproducible."""
        for layer in self.layers:
            layer._codebook.generator = generator

    def forward(self, x: torch.Tensor, n_q: int | None = None, layers: list[int] | None = None) -> RVQOutput:
        n_q = n_q or self.num_quantizers
        wanted = set(layers or ())
        residual = x
        quantized_sum = torch.zeros_like(x)
        codes, losses, outputs = [], [], []
        for index, layer in enumerate(self.layers[:n_q]):
            quantized, layer_codes, loss = layer(residual)
            # Detached as in audiocraft, so every layer's commitment loss keeps its gradient
            # (EnCodec issue #25); the forward value is the same.
            residual = residual - quantized.detach()
            quantized_sum = quantized_sum + quantized
            codes.append(layer_codes)
            losses.append(loss)
            if index in wanted:
                outputs.append(quantized)
        return RVQOutput(quantized_sum, torch.stack(codes), torch.stack(losses), outputs)

    def encode(self, x: torch.Tensor, n_q: int | None = None) -> torch.Tensor:
        """[B, D, T] -> codes [n_q, B, T]."""
        n_q = n_q or self.num_quantizers
        residual = x
        codes = []
        for layer in self.layers[:n_q]:
            layer_codes = layer.encode(residual)
            residual = residual - layer.decode(layer_codes)
            codes.append(layer_codes)
        return torch.stack(codes)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [n_q, B, T] -> [B, D, T], the sum of the layers' codewords."""
        out = self.layers[0].decode(codes[0])
        for layer, layer_codes in zip(self.layers[1:], codes[1:]):
            out = out + layer.decode(layer_codes)
        return out
