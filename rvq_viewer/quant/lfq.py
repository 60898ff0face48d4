"""Lookup-free quantization (LFQ, MAGVIT-v2, Yu et al. 2023, arXiv 2310.05737) and its residual stages.

Each of the d dimensions is one bit, set where the (projected) value is positive; a code is the d-bit
number with dimension 0 as its most significant bit (vector-quantize-pytorch's persistent `mask` buffer is
2^(d-1), ..., 2, 1), so there are 2^d codes and no search. A stage outputs +s where the bit is set and -s
elsewhere: s = `codebook_scale`, 2^-i for stage i of `ResidualLFQ`; the residual loses the output.

Everything that only rescales the value keeps its sign, hence the code: the optional soft clamp, the
cosine-similarity `project_in` (positive scale) and BSQ's l2 normalisation leave the codes of one stage
unchanged, so they need no setting here (a residual BSQ's later stages would; see README).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .family import LFQ
from .fsq import isometric_view
from .quantizer import Quantizer


def bit_weights(bits: int) -> torch.Tensor:
    """2^(d-1), ..., 2, 1 (int64): vector-quantize-pytorch's `mask`, dimension 0 the highest bit."""
    return 2 ** torch.arange(bits - 1, -1, -1, dtype=torch.int64)


def sign_table(bits: int, scale: float, rotation: torch.Tensor | None = None) -> torch.Tensor:
    """Every code's output [2^d, d]: +scale where its bit is set, -scale elsewhere (then rotated back)."""
    codes = torch.arange(2 ** bits, dtype=torch.int64).unsqueeze(1)
    on = ((codes & bit_weights(bits)) != 0).float()
    values = on * scale * 2 - scale
    if rotation is not None:
        values = values @ rotation.t()
    return values.float()


def code_bits(codes, bits: int):
    """The bits [N, d] (0/1, int8) of codes (a numpy or torch integer array), dimension 0 first."""
    import numpy as np

    codes = np.asarray(codes, dtype=np.int64)
    shifts = np.arange(bits - 1, -1, -1, dtype=np.int64)
    return ((codes[:, None] >> shifts) & 1).astype(np.int8)


class LFQQuantizer(Quantizer):
    """LFQ with `len(scales)` residual stages over frames of `n_tables` slots of `bits` dims.

    `projections[g]` is group g's `project_in`: (weight, bias, cosine) with `cosine` True for
    vector-quantize-pytorch's `CosineSimLinear` (weight [in, out], columns normalised), or None;
    `out_projections[g]` its `project_out`, used only to place codes on the map; `rotations[i]` stage
    i's `orthogonal_rot`; `heads` slots per group (num_codebooks)."""

    plain_residual = False
    family = LFQ

    def __init__(self, *, bits: int, scales: list[float], projections: list, out_projections: list | None = None,
                 heads: int = 1, rotations: list | None = None, **kwargs):
        self.bits = int(bits)
        self.scales = [float(s) for s in scales]
        self.heads = int(heads)
        self.groups = len(projections)
        self.n_tables = self.groups * self.heads
        self.projections = projections
        self.out_projections = out_projections or [None] * self.groups
        self.rotations = rotations or [None] * len(self.scales)
        self._weights = bit_weights(self.bits)
        tables = [sign_table(self.bits, s, r) for s, r in zip(self.scales, self.rotations)]
        kwargs["codebooks"] = [t.repeat(self.n_tables, 1) if self.n_tables > 1 else t for t in tables]
        super().__init__(**kwargs)

    @property
    def codes_per_frame(self) -> int:
        return self.n_tables

    @property
    def cells(self) -> int:
        return 2 ** self.bits

    def table_names(self) -> list[str]:
        if self.groups > 1 and self.heads > 1:
            return [f"group {g} codebook {h}" for g in range(self.groups) for h in range(self.heads)]
        if self.groups > 1:
            return [f"group {g}" for g in range(self.groups)]
        return [f"codebook {h}" for h in range(self.heads)] if self.heads > 1 else ["bits"]

    def prepare(self, frames: torch.Tensor) -> torch.Tensor:
        frames = frames.to(self.device, torch.float32)
        chunks = frames.chunk(self.groups, dim=-1) if self.groups > 1 else [frames]
        with torch.no_grad():
            out = [_project(chunk, proj) for chunk, proj in zip(chunks, self.projections)]
            return torch.cat(out, dim=-1) if len(out) > 1 else out[0]

    def lookup(self, layer: int, residual: torch.Tensor) -> torch.Tensor:
        n = residual.shape[0]
        x = residual.reshape(n, self.n_tables, self.bits)
        if self.rotations[layer] is not None:
            x = x @ self.rotations[layer]
        codes = ((x > 0).long() * self._weights).sum(dim=-1)
        if self.n_tables > 1:
            codes = codes + torch.arange(self.n_tables, device=codes.device) * self.cells
        return codes.reshape(-1)

    def layer_output(self, layer: int, codes: torch.Tensor) -> torch.Tensor:
        return self.codebooks[layer][codes].reshape(-1, self.n_tables * self.bits)

    def display_codebook(self, layer: int) -> torch.Tensor:
        table = self.codebooks[layer]
        proj = self.out_projections[0]
        if proj is None or self.n_tables > 1:
            return table
        return isometric_view(table.cpu(), proj[0].cpu())

    def _move(self, device):
        def move(p):
            return None if p is None else tuple(t.to(device) if isinstance(t, torch.Tensor) else t for t in p)
        self.projections = [move(p) for p in self.projections]
        self.out_projections = [move(p) for p in self.out_projections]
        self.rotations = [None if r is None else r.to(device) for r in self.rotations]
        self._weights = self._weights.to(device)

    def family_params(self) -> dict:
        out = super().family_params()
        out.update(bits=self.bits, stages=self.n_q, cells=self.cells)
        return out

    def summary(self) -> dict:
        out = super().summary()
        out.update(bits=self.bits, stages=self.n_q, codes_per_frame=self.n_tables)
        return out


def _project(x: torch.Tensor, proj: tuple | None) -> torch.Tensor:
    if proj is None:
        return x
    weight, bias, cosine = proj
    if cosine:
        return F.normalize(x, dim=-1) @ F.normalize(weight, dim=0)
    return F.linear(x, weight, bias)
