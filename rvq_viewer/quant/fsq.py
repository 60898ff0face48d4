"""Finite scalar quantization (FSQ, Mentzer et al. 2023, arXiv 2309.15505) and its residual stages.

No learned codebook: each of the d dimensions is bounded and rounded to one of its L_j levels, and a code
is the mixed-radix number of the d level indices, dimension 0 fastest (index = sum_j level_j * basis_j,
basis = cumprod([1] + levels[:-1])), so the grid has prod(levels) cells. Codes come from rounding, never
from a search.

The rounding rules of the projects that train FSQ, each written with the same operations as its source so
that codes match bit for bit (`FSQRule.kind`):
- "tanh": vector-quantize-pytorch `FSQ` (and HF transformers' X-Codec2): half_l = (L-1)(1+eps)/2,
  offset = 0.5 for even L, level = round(tanh(z + atanh(offset/half_l)) * half_l - offset) + L//2;
  `hard_clamp` replaces tanh by clamp(-1, 1) and atanh by the identity (`bound_hard_clamp`).
- "symmetric": `preserve_symmetry=True` (what `ResidualFSQ` uses, arXiv 2411.19842 s3.2):
  level = floor((L-1)(f(z)+1)/2 + 0.5), f = clamp(-1, 1) with `hard_clamp`, else tanh; the value is
  2/(L-1) level - 1.
- "scaled_tanh": CosyVoice 2's S3Tokenizer v2: level = round(gain * tanh(z)) + 1 with L = 3, gain 0.999.
- "dithered": Stable Codec's posthoc residual FSQ (eval mode): half_l = 2s/(L-1) for the stage's scale s,
  level = round((r + s) / half_l), value level * half_l - s; the input is tanh'ed once, before stage 0.
Residual stages: vector-quantize-pytorch's `ResidualFSQ` divides stage i's input by L^-i and multiplies
its output by the same (the table rows here hold the scaled values); the residual loses each output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .family import FSQ
from .quantizer import Quantizer

RULES = ("tanh", "symmetric", "scaled_tanh", "dithered")


@dataclass(frozen=True)
class FSQRule:
    """How one stage turns values into level indices (see the module docstring)."""

    kind: str = "tanh"
    hard_clamp: bool = False
    eps: float = 1e-3
    gain: float = 0.9990000128746033   # scaled_tanh only

    def __post_init__(self):
        if self.kind not in RULES:
            raise ValueError(f"unknown FSQ rule {self.kind!r} (known: {', '.join(RULES)})")


def grid_size(levels: list[int]) -> int:
    return int(math.prod(int(v) for v in levels))


def basis_of(levels: list[int]) -> torch.Tensor:
    """Mixed-radix place values, dimension 0 fastest: cumprod([1] + levels[:-1]) (int64)."""
    return torch.cumprod(torch.tensor([1] + [int(v) for v in levels[:-1]], dtype=torch.int64), dim=0)


def level_grid(levels: list[int]) -> torch.Tensor:
    """The level index of every dimension for every code: [prod(levels), d] int64."""
    codes = torch.arange(grid_size(levels), dtype=torch.int64).unsqueeze(1)
    return (codes // basis_of(levels)) % torch.tensor(levels, dtype=torch.int64)


def _bound(z: torch.Tensor, levels: torch.Tensor, rule: FSQRule) -> torch.Tensor:
    """vector-quantize-pytorch's `FSQ.bound` before rounding: values in [-(L-1)/2, (L-1)/2] (shifted by
    1/2 for even L)."""
    half_l = (levels - 1) * (1 + rule.eps) / 2
    offset = torch.where(levels % 2 == 0, 0.5, 0.0)
    if rule.hard_clamp:
        return torch.clamp(z + offset / half_l, min=-1.0, max=1.0) * half_l - offset
    return torch.tanh(z + torch.atanh(offset / half_l)) * half_l - offset


def level_indices(z: torch.Tensor, levels: torch.Tensor, rule: FSQRule, stage_scale: float = 1.0) -> torch.Tensor:
    """Level index per dimension of z [..., d] (int64, in [0, L_j - 1]). `levels` is int32 as in the
    sources, so that the float arithmetic promotes the same way."""
    if rule.kind == "tanh":
        level = _bound(z, levels, rule).round() + levels // 2
    elif rule.kind == "symmetric":
        squashed = torch.clamp(z, min=-1.0, max=1.0) if rule.hard_clamp else torch.tanh(z)
        level = torch.floor(((levels - 1) * (squashed + 1) / 2.0) + 0.5)
    elif rule.kind == "scaled_tanh":
        level = (torch.tanh(z) * rule.gain).round() + 1
    else:  # dithered
        half_l = stage_scale * 2 / (levels - 1)
        level = ((z + stage_scale) / half_l).round()
    # Only float edge cases could leave the range (the dithered rule's later stages do not clamp): keep
    # every code a cell of the grid.
    return torch.minimum(level.clamp(min=0).long(), (levels - 1).long())


def level_values(level: torch.Tensor, levels: torch.Tensor, rule: FSQRule, stage_scale: float = 1.0,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The value a stage outputs for level indices [..., d] (before the residual stage scale), computed
    as the sources compute it."""
    level = level.to(dtype)
    if rule.kind == "tanh":
        half_width = levels // 2
        return (level - half_width) / half_width
    if rule.kind == "symmetric":
        return (2.0 / (levels - 1)) * level - 1.0
    if rule.kind == "scaled_tanh":
        return level - 1
    half_l = stage_scale * 2 / (levels - 1)
    return level * half_l - stage_scale


def stage_table(levels: list[int], rule: FSQRule, scale: torch.Tensor | float | None = None,
                rotation: torch.Tensor | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Every cell's output [prod(levels), d] for one stage: what the residual loses when it takes it."""
    lv = torch.tensor(levels, dtype=torch.int32)
    dithered = rule.kind == "dithered"
    values = level_values(level_grid(levels), lv, rule, float(scale) if dithered and scale is not None else 1.0,
                          dtype)
    if rotation is not None:
        values = values @ rotation.t()
    if scale is not None and not dithered:
        values = values * scale
    return values.to(dtype)


def isometric_view(table: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Rows of `table` [K, d] mapped by the Linear weight [D_out, d], written in an orthonormal basis of
    its image: the same distances (so the same PCA or UMAP map) as `table @ weight.T`, at d dims instead of
    D_out (W = U S V^T, so W x = U (S V^T x) and U keeps lengths)."""
    _, s, vh = torch.linalg.svd(weight.double(), full_matrices=False)
    return ((table.double() @ vh.t()) * s).float()


class FSQQuantizer(Quantizer):
    """FSQ with `len(stage_scales)` residual stages over frames of `n_tables` slots of d dims.

    `projections[g]` is group g's `project_in` (weight, bias) or None; `out_projections[g]` its
    `project_out` (used only to place cells on the map); `rotations[i]` stage i's `orthogonal_rot`;
    `pre` what happens to the projected input before stage 0: "none", "soft_clamp" (ResidualFSQ:
    tanh(x/c)*c), "bound" (X-Codec2 bounds once before the FSQ bounds again) or "tanh" (Stable Codec,
    whose posthoc bottleneck then runs in float64: `dtype`; the stored tables stay float32 for the views).
    `divide` says the stage scale divides the stage's input
    (ResidualFSQ) rather than entering the rule (dithered). `heads` slots per group (num_codebooks)."""

    plain_residual = False
    family = FSQ

    def __init__(self, *, levels: list[int], rule: FSQRule, stage_scales: list, projections: list,
                 out_projections: list | None = None, heads: int = 1, pre: str = "none",
                 soft_clamp: torch.Tensor | None = None, rotations: list | None = None,
                 divide: bool = True, dtype: torch.dtype = torch.float32, **kwargs):
        self.levels = [int(v) for v in levels]
        self.rule = rule
        self.heads = int(heads)
        self.groups = len(projections)
        self.n_tables = self.groups * self.heads
        self.stage_scales = [s if s is None or isinstance(s, float) else s.detach().float() for s in stage_scales]
        self.projections = projections
        self.out_projections = out_projections or [None] * self.groups
        self.pre = pre
        self.soft_clamp = soft_clamp
        self.rotations = rotations or [None] * len(stage_scales)
        self.divide = divide
        self.dtype = dtype
        self._levels = torch.tensor(self.levels, dtype=torch.int32)
        self._basis = basis_of(self.levels)
        k = grid_size(self.levels)
        tables = [stage_table(self.levels, rule, scale, rot, dtype)
                  for scale, rot in zip(self.stage_scales, self.rotations)]
        tables = [t.repeat(self.n_tables, 1) if self.n_tables > 1 else t for t in tables]
        # The outputs the residual loses, in the rule's precision; `codebooks` (float32) is what views show.
        self._outputs = tables
        kwargs["codebooks"] = tables
        self._cells = k
        super().__init__(**kwargs)

    @property
    def codes_per_frame(self) -> int:
        return self.n_tables

    @property
    def cells(self) -> int:
        """Cells of one table's grid, prod(levels)."""
        return self._cells

    def table_names(self) -> list[str]:
        if self.groups > 1 and self.heads > 1:
            return [f"group {g} codebook {h}" for g in range(self.groups) for h in range(self.heads)]
        if self.groups > 1:
            return [f"group {g}" for g in range(self.groups)]
        return [f"codebook {h}" for h in range(self.heads)] if self.heads > 1 else ["grid"]

    def prepare(self, frames: torch.Tensor) -> torch.Tensor:
        frames = frames.to(self.device, self.dtype)
        chunks = frames.chunk(self.groups, dim=-1) if self.groups > 1 else [frames]
        with torch.no_grad():
            out = []
            for chunk, proj in zip(chunks, self.projections):
                x = chunk if proj is None else F.linear(chunk, proj[0], proj[1])
                if self.pre == "soft_clamp":
                    x = (x / self.soft_clamp).tanh() * self.soft_clamp
                elif self.pre == "bound":
                    x = _bound(x, self._levels, self.rule)
                elif self.pre == "tanh":
                    x = torch.tanh(x)
                out.append(x)
            return torch.cat(out, dim=-1) if len(out) > 1 else out[0]

    def lookup(self, layer: int, residual: torch.Tensor) -> torch.Tensor:
        n, d = residual.shape[0], len(self.levels)
        x = residual.reshape(n, self.n_tables, d)
        scale = self.stage_scales[layer]
        if self.divide and scale is not None:
            x = x / scale
        if self.rotations[layer] is not None:
            x = x @ self.rotations[layer]
        stage = float(scale) if not self.divide and scale is not None else 1.0
        level = level_indices(x, self._levels, self.rule, stage)
        codes = (level * self._basis).sum(dim=-1)
        if self.n_tables > 1:
            codes = codes + torch.arange(self.n_tables, device=codes.device) * self._cells
        return codes.reshape(-1)

    def layer_output(self, layer: int, codes: torch.Tensor) -> torch.Tensor:
        return self._outputs[layer][codes].reshape(-1, self.n_tables * len(self.levels))

    def display_codebook(self, layer: int) -> torch.Tensor:
        """The cells through `project_out` (as an isometric d-dimensional view), for one table of one
        group; the raw grid values where there is no project_out or several tables."""
        table = self.codebooks[layer]
        proj = self.out_projections[0]
        if proj is None or self.n_tables > 1:
            return table
        return isometric_view(table.cpu(), proj[0].cpu())

    def _move(self, device):
        def move(p):
            return None if p is None else tuple(None if t is None else t.to(device) for t in p)
        self.projections = [move(p) for p in self.projections]
        self.out_projections = [move(p) for p in self.out_projections]
        self.stage_scales = [s if s is None or isinstance(s, float) else s.to(device) for s in self.stage_scales]
        self.soft_clamp = None if self.soft_clamp is None else self.soft_clamp.to(device)
        self.rotations = [None if r is None else r.to(device) for r in self.rotations]
        self._levels = self._levels.to(device)
        self._basis = self._basis.to(device)
        self._outputs = [t.to(device) for t in self._outputs]

    def family_params(self) -> dict:
        out = super().family_params()
        out.update(levels=list(self.levels), stages=self.n_q, cells=self._cells, rule=self.rule.kind)
        return out

    def summary(self) -> dict:
        out = super().summary()
        out.update(levels=list(self.levels), stages=self.n_q, rule=self.rule.kind, codes_per_frame=self.n_tables)
        return out
