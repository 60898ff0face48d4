"""K-means used to initialise codebooks (Lloyd iterations, empty clusters keep their centre)."""

from __future__ import annotations

from typing import Callable

import torch

from ..errors import CancelledError


def sample_vectors(samples: torch.Tensor, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Pick `num` rows of `samples`: without replacement when there are enough, with it otherwise."""
    n = samples.shape[0]
    if n >= num:
        idx = torch.randperm(n, device=samples.device, generator=generator)[:num]
    else:
        idx = torch.randint(0, n, (num,), device=samples.device, generator=generator)
    return samples[idx]


def kmeans(samples: torch.Tensor, num_clusters: int, iters: int = 10,
           generator: torch.Generator | None = None,
           should_stop: Callable[[], bool] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (centres [K, D], cluster sizes [K]) after `iters` Lloyd steps from random samples.

    Assignment uses squared Euclidean distance; a cluster that ends up empty keeps its previous centre,
    as in EnCodec and GPT-SoVITS, so that no centre becomes NaN. `should_stop` is asked before each
    step (a large K takes seconds); when it says so, CancelledError is raised.
    """
    samples = samples.float()
    dim = samples.shape[-1]
    means = sample_vectors(samples, num_clusters, generator)
    bins = torch.zeros(num_clusters, dtype=torch.long, device=samples.device)
    for _ in range(iters):
        if should_stop is not None and should_stop():
            raise CancelledError("k-means initialisation stopped")
        dists = torch.cdist(samples, means).square()
        buckets = dists.argmin(dim=-1)
        bins = torch.bincount(buckets, minlength=num_clusters)
        empty = bins == 0
        sums = torch.zeros(num_clusters, dim, dtype=samples.dtype, device=samples.device)
        sums.index_add_(0, buckets, samples)
        new_means = sums / bins.clamp(min=1).unsqueeze(1).to(samples.dtype)
        means = torch.where(empty.unsqueeze(1), means, new_means)
    return means, bins
