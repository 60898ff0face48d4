"""Code counts of one logging window, kept on the module's device: a bincount of every layer at once.

All layers share one int64 buffer (layer i's codes at `offset[i]`, one last bin for codes outside
their codebook, e.g. vector-quantize-pytorch's -1 for masked frames). Adding a step is a few element-
wise ops and one `index_add_` (the bincount that never waits for the device: CUDA's `torch.bincount`
reads the maximum back to the host); reading the window copies the buffer off the device without
blocking the caller (a CUDA event tells the writer thread when the copy has landed).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class CountsCopy:
    """A window's counts on their way to the host: `tensor` is valid once `ready()` returns."""

    tensor: torch.Tensor
    event: object = None       # torch.cuda.Event recorded after the copy, or None (already there)

    def ready(self) -> torch.Tensor:
        if self.event is not None:
            self.event.synchronize()
        return self.tensor


def host_copy(tensor: torch.Tensor) -> CountsCopy:
    """A copy of `tensor` on the host, made without blocking the calling (training) thread."""
    if tensor.device.type == "cuda":
        out = tensor.detach().to("cpu", non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        return CountsCopy(out, event)
    if tensor.device.type == "cpu":
        return CountsCopy(tensor.detach().clone())
    return CountsCopy(tensor.detach().to("cpu"))


class WindowCounts:
    """Per-layer code counts of the open window, on one device."""

    def __init__(self, sizes: list[int], device: torch.device):
        self.sizes = [int(k) for k in sizes]
        self.device = torch.device(device)
        total = sum(self.sizes)
        self.invalid_bin = total
        self.counts = torch.zeros(total + 1, dtype=torch.int64, device=self.device)
        self.offsets = torch.tensor([sum(self.sizes[:i]) for i in range(len(self.sizes))], dtype=torch.int64,
                                    device=self.device)
        self.limits = torch.tensor(self.sizes, dtype=torch.int64, device=self.device)
        self._ones = torch.ones(0, dtype=torch.int64, device=self.device)

    def add(self, layers: list[torch.Tensor]) -> None:
        """Count one call's codes: `layers[i]` is layer i's flat codes (layers beyond the known ones are
        ignored; a call may use fewer layers, as EnCodec at a low bandwidth does)."""
        layers = layers[: len(self.sizes)]
        if not layers:
            return
        if len({int(c.numel()) for c in layers}) == 1:
            codes = torch.stack([c.to(self.device, torch.int64) for c in layers])     # [L, N]
            index = self._shift(codes, slice(0, len(layers))).reshape(-1)
        else:                                                   # multi-rate layers (SNAC levels)
            index = torch.cat([self._shift(c.to(self.device, torch.int64).reshape(1, -1), slice(i, i + 1)).reshape(-1)
                               for i, c in enumerate(layers)])
        n = int(index.numel())
        if self._ones.numel() < n:
            self._ones = torch.ones(max(n, 2 * self._ones.numel()), dtype=torch.int64, device=self.device)
        self.counts.index_add_(0, index, self._ones[:n])

    def _shift(self, codes: torch.Tensor, layers: slice) -> torch.Tensor:
        limits = self.limits[layers].unsqueeze(1)
        valid = (codes >= 0) & (codes < limits)
        return torch.where(valid, codes + self.offsets[layers].unsqueeze(1),
                           torch.full_like(codes, self.invalid_bin))

    def take(self) -> CountsCopy:
        """The window's counts (on their way to the host), and a fresh window."""
        copy = host_copy(self.counts)
        self.counts.zero_()
        return copy
