"""vector-quantize-pytorch's `LFQ`, `ResidualLFQ` and `GroupedResidualLFQ`.

The persistent `mask` buffer (2^(d-1), ..., 2, 1, int64) names the sign-bit weights and so the d bits; the
2^d-row codebook is non-persistent. Keys, under any prefix P:
- `LFQ`:                 `Pmask [d]`, `Pproject_in.{weight, bias}` / `Pproject_out.*` when the input is
                         not C*d wide (C = num_codebooks), `Porthogonal_rot [d, d]` with rotations; with
                         `cosine_sim_project_in` the in-projection is a `CosineSimLinear`, weight [D, C*d]
                         and no bias;
- `ResidualLFQ`:         `Players.{i}.mask` per stage (codebook_scale 2^-i), `Pproject_in.*` / `Pproject_out.*`;
- `GroupedResidualLFQ`:  `Prvqs.{g}.layers.{i}.mask`, `Prvqs.{g}.project_in.*`.
"""

from __future__ import annotations

import re
from collections import defaultdict

import torch

from ...errors import LoadError
from ...quant import LFQQuantizer, Quantizer
from ...quant.lfq import bit_weights
from .base import Checkpoint, Format, float_tensor, layer_indices
from .fsq import count_option

MAX_BITS = 22          # 4,194,304 codes per table: counted code by code
_SITE = re.compile(r"^(?P<stem>(?:.*?\.)?)(?:rvqs\.(?P<group>\d+)\.)?(?:layers\.(?P<layer>\d+)\.)?mask$")


def _is_bit_mask(value) -> bool:
    if not isinstance(value, torch.Tensor) or value.ndim != 1 or value.dtype.is_floating_point:
        return False
    bits = int(value.numel())
    return 1 <= bits <= 62 and torch.equal(value.long().cpu(), bit_weights(bits))


def find_sites(state: dict) -> dict[str, dict[tuple[int, int], str]]:
    """stem -> {(group, stage): mask key}; group -1 for an ungrouped quantizer, stage -1 for a plain LFQ."""
    sites: dict[str, dict[tuple[int, int], str]] = defaultdict(dict)
    for key, value in state.items():
        if not key.endswith("mask"):
            continue
        match = _SITE.match(key)
        if match and _is_bit_mask(value):
            group = -1 if match["group"] is None else int(match["group"])
            stage = -1 if match["layer"] is None else int(match["layer"])
            sites[match["stem"]][(group, stage)] = key
    return dict(sites)


def _detect(ckpt: Checkpoint) -> bool:
    return bool(find_sites(ckpt.state))


def _projection(ckpt: Checkpoint, base: str, bits: int) -> tuple[tuple | None, tuple | None, str]:
    """(project_in as (weight, bias, cosine), project_out as (weight, bias), note) at `base`."""
    w_in = ckpt.state.get(base + "project_in.weight")
    w_out = ckpt.state.get(base + "project_out.weight")
    out = None
    if isinstance(w_out, torch.Tensor):
        out = (float_tensor(ckpt, base + "project_out.weight", (None, None)),
               float_tensor(ckpt, base + "project_out.bias", (int(w_out.shape[0]),), required=False))
    if not isinstance(w_in, torch.Tensor):
        return None, out, ""
    weight = float_tensor(ckpt, base + "project_in.weight", (None, None))
    has_bias = base + "project_in.bias" in ckpt.state
    cosine = (not has_bias and weight.shape[1] % bits == 0 and weight.shape[0] != weight.shape[1]
              and (w_out is None or tuple(w_out.shape) == tuple(weight.shape)))
    bias = None if cosine else float_tensor(ckpt, base + "project_in.bias", (int(weight.shape[0]),), required=False)
    return (weight, bias, cosine), out, "cosine-similarity project_in (CosineSimLinear)" if cosine else ""


def _build(ckpt: Checkpoint) -> Quantizer:
    sites = find_sites(ckpt.state)
    stem, masks = max(sites.items(), key=lambda item: (len(item[1]), -len(item[0])))
    groups = sorted({g for g, _ in masks})
    stages = sorted({s for _, s in masks})
    grouped, residual = groups != [-1], stages != [-1]
    if grouped:
        layer_indices(groups, "GroupedResidualLFQ groups", ckpt.path)
    if residual:
        layer_indices(stages, f"ResidualLFQ at '{stem}'", ckpt.path)
    if len(masks) != len(groups) * len(stages):
        raise LoadError("GroupedResidualLFQ groups hold different numbers of stages", ckpt.path)
    widths = {int(ckpt.state[key].numel()) for key in masks.values()}
    if len(widths) != 1:
        raise LoadError(f"LFQ stages disagree on the number of bits: {sorted(widths)}", ckpt.path)
    bits = widths.pop()
    if bits > MAX_BITS:
        raise LoadError(f"{bits} bits make 2^{bits} codes per table; more than 2^{MAX_BITS} cannot be counted "
                        "code by code", ckpt.path)
    bases = [f"{stem}rvqs.{g}." for g in groups] if grouped else [stem]
    found = [_projection(ckpt, b, bits) for b in bases]
    projections, outs = [f[0] for f in found], [f[1] for f in found]
    notes = sorted({f[2] for f in found if f[2]})
    if projections[0] is not None:
        proj = projections[0]
        width = int(proj[0].shape[1] if proj[2] else proj[0].shape[0])
        if width % bits:
            raise LoadError(f"project_in gives {width} dims, not a multiple of the {bits} bits", ckpt.path)
        heads = width // bits
        in_dim = int(proj[0].shape[0] if proj[2] else proj[0].shape[1])
    else:
        heads = count_option(ckpt, "heads") or 1
        in_dim = heads * bits
        notes.append(f"no project_in: frames are taken as the {in_dim} sign dims themselves"
                     + ("" if heads > 1 else " (load with heads=N for N codebooks of these bits)"))
    if residual and heads != 1:
        raise LoadError(f"ResidualLFQ layers take {bits} dims, but project_in gives {heads * bits}", ckpt.path)
    stage_list = stages if residual else [-1]
    rot_keys = [f"{bases[0]}layers.{s}.orthogonal_rot" if residual else f"{bases[0]}orthogonal_rot" for s in stage_list]
    rotations = [float_tensor(ckpt, key, (bits, bits), required=False) for key in rot_keys]
    if grouped and any(k.startswith(stem) and k.endswith("orthogonal_rot") for k in ckpt.state):
        raise LoadError("GroupedResidualLFQ with orthogonal_rotation is not supported (a rotation per group "
                        "and stage)", ckpt.path)
    scales = [2.0 ** -s for s in stages] if residual else [1.0]
    kind = ("GroupedResidualLFQ" if grouped else "ResidualLFQ" if residual else "LFQ")
    notes.insert(0, f"vector-quantize-pytorch {kind} at '{stem or '(top level)'}': {bits} bits (2^{bits} = "
                 f"{2 ** bits:,} codes)" + (f", {len(stage_list)} stages" if residual else "")
                 + (f", {len(bases)} groups" if grouped else "") + (f", {heads} codebooks" if heads > 1 else ""))
    return LFQQuantizer(format="lfq", source=str(ckpt.path), input_dim=len(bases) * in_dim, notes=notes, bits=bits,
                        scales=scales, projections=projections, out_projections=outs, heads=heads,
                        rotations=rotations)


LFQ = Format("lfq", "vector-quantize-pytorch LFQ / ResidualLFQ / GroupedResidualLFQ (a persistent bit `mask`)",
             _detect, _build)
