"""vector-quantize-pytorch's `FSQ`, `ResidualFSQ` and `GroupedResidualFSQ`: levels from the user.

What the state dict holds (vector-quantize-pytorch 1.32: `_levels`, `_basis`, `implicit_codebook` and
`scales` are non-persistent buffers), under any prefix P since users save these inside their models:
- `FSQ`:                `Pproject_in.{weight [C*d, D], bias}`, `Pproject_out.*` (absent when D == C*d),
                        `Porthogonal_rot [d, d]` with `orthogonal_rotation=True`;
- `ResidualFSQ`:        the same projections, and nothing per stage (`Players.{i}.orthogonal_rot` only
                        with rotations);
- `GroupedResidualFSQ`: `Prvqs.{g}.project_in.*` per group.
The levels are not stored, and an FSQ cannot be told from a ResidualFSQ by its keys: `levels` (from the
load options, or a `levels` entry in the file's own config) picks the grid, `stages` (or the config's
`num_quantizers`) says ResidualFSQ with that many stages (its symmetric levels, input soft clamp and
stage scales L^-i), none says a plain `FSQ`. Without levels, a file whose only quantizer keys are such
projections is refused with the line that names the option.
"""

from __future__ import annotations

import math
import re

import torch

from ...errors import LoadError
from ...quant import FSQQuantizer, FSQRule, Quantizer
from .base import Checkpoint, Format, float_tensor, layer_indices

# Cells per table beyond which an implicit grid is not expanded (a counts array and a table per layer).
MAX_CELLS = 1 << 22
# FSQ paper (arXiv 2309.15505) Table 1: recommended levels per number of dimensions.
RECOMMENDED = {3: [8, 6, 5], 4: [8, 5, 5, 5], 5: [7, 5, 5, 5, 5], 6: [8, 8, 8, 5, 5, 5]}
_GROUP = re.compile(r"^(?P<stem>(?:.*\.)?)rvqs\.(?P<group>\d+)\.$")
_QUANTIZER_WORDS = ("quant", "fsq", "bottleneck", "vq")
LEVEL_OPTION_HINT = "--levels on the command line, levels=[...] in Python, Levels in File ▸ Open with options"


def levels_option(ckpt: Checkpoint) -> list[int] | None:
    """The levels the user gave (or the file's config names), checked: integers >= 2."""
    return parse_levels(ckpt.config_value("levels", "fsq_levels"), ckpt)


def parse_levels(value, ckpt: Checkpoint) -> list[int] | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = [int(v) for v in value.replace(" ", "").split(",") if v]
        except ValueError:
            raise LoadError(f"levels={value!r}: expected integers like 8,5,5,5", ckpt.path) from None
    if (not isinstance(value, (list, tuple)) or not value
            or any(isinstance(v, bool) or not isinstance(v, int) or v < 2 for v in value)):
        raise LoadError(f"levels={value!r}: expected a list of integers >= 2, like 8,5,5,5", ckpt.path)
    levels = [int(v) for v in value]
    cells = math.prod(levels)
    if cells > MAX_CELLS:
        raise LoadError(f"levels {levels} make a grid of {cells:,} cells per table; more than {MAX_CELLS:,} "
                        "cannot be counted cell by cell", ckpt.path)
    return levels


def count_option(ckpt: Checkpoint, name: str, *config_names: str, limit: int = 256) -> int | None:
    value = ckpt.options.get(name)
    if value is None and config_names:
        value = ckpt.config_value(*config_names)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
        raise LoadError(f"{name}={value!r} is not a valid count (1 to {limit})", ckpt.path)
    return value


def projection(ckpt: Checkpoint, base: str, out_dim: int | None = None) -> tuple | None:
    """`base` weight [out, in] (+ bias) as float32, or None when the Linear is absent."""
    if base + "weight" not in ckpt.state:
        return None
    weight = float_tensor(ckpt, base + "weight", (out_dim, None))
    bias = float_tensor(ckpt, base + "bias", (weight.shape[0],), required=False)
    return weight, bias


def projection_sites(state: dict) -> list[str]:
    """Prefixes P with both `Pproject_in.weight` and `Pproject_out.weight` shaped like an FSQ's
    (project_in [small, D], project_out [D, small]), grouped `rvqs.{g}.` sites folded into their stem."""
    sites = set()
    for key, value in state.items():
        if not key.endswith("project_in.weight") or not isinstance(value, torch.Tensor) or value.ndim != 2:
            continue
        prefix = key[: -len("project_in.weight")]
        out = state.get(prefix + "project_out.weight")
        if not isinstance(out, torch.Tensor) or out.ndim != 2 or tuple(out.shape) != tuple(value.shape)[::-1]:
            continue
        if value.shape[0] > 64 or value.shape[0] >= value.shape[1]:
            continue   # an FSQ projects down to a few dims
        group = _GROUP.match(prefix)
        sites.add(group["stem"] + "rvqs." if group else prefix)
    return sorted(sites)


def describe_site(state: dict, site: str) -> str:
    base = site + "0." if site.endswith("rvqs.") else site
    out, inp = state[base + "project_in.weight"].shape
    return f"'{site or '(top level)'}' (project_in {inp} -> {out})"


def missing_levels(ckpt: Checkpoint, sites: list[str]) -> LoadError:
    base = sites[0] + "0." if sites[0].endswith("rvqs.") else sites[0]
    dims = int(ckpt.state[base + "project_in.weight"].shape[0])
    example = ",".join(str(v) for v in RECOMMENDED.get(dims, [5] * dims))
    where = ", ".join(describe_site(ckpt.state, s) for s in sites[:3])
    return LoadError(f"{where} holds only FSQ projections (vector-quantize-pytorch FSQ / ResidualFSQ: the levels "
                     f"are not stored): give the levels ({LEVEL_OPTION_HINT}), e.g. --levels {example} for "
                     f"{dims} dims, and --stages N for a ResidualFSQ", ckpt.path)


def _detect(ckpt: Checkpoint) -> bool:
    return bool(projection_sites(ckpt.state)) or ckpt.options.get("levels") is not None


def _choose_site(ckpt: Checkpoint, sites: list[str], dims: int) -> str | None:
    fitting = []
    for site in sites:
        base = site + "0." if site.endswith("rvqs.") else site
        if int(ckpt.state[base + "project_in.weight"].shape[0]) % dims == 0:
            fitting.append(site)
    if not fitting:
        if sites:
            raise LoadError(f"levels give {dims} dims but {describe_site(ckpt.state, sites[0])} projects to another "
                            "size: check --levels", ckpt.path)
        return None
    if len(fitting) > 1:
        named = [s for s in fitting if any(w in s.lower() for w in _QUANTIZER_WORDS)]
        if len(named) != 1:
            raise LoadError("several FSQ-shaped projections fit these levels: "
                            + ", ".join(describe_site(ckpt.state, s) for s in fitting[:4]), ckpt.path)
        fitting = named
    return fitting[0]


def _build(ckpt: Checkpoint) -> Quantizer:
    sites = projection_sites(ckpt.state)
    levels = levels_option(ckpt)
    if levels is None:
        if sites:
            raise missing_levels(ckpt, sites)
        raise LoadError(f"no FSQ projections found and no levels given ({LEVEL_OPTION_HINT})", ckpt.path)
    d = len(levels)
    stages = count_option(ckpt, "stages", "num_quantizers")
    site = _choose_site(ckpt, sites, d)
    notes: list[str] = []
    if site is not None and site.endswith("rvqs."):
        found = (_GROUP.match(k[: -len("project_in.weight")]) for k in ckpt.state
                 if k.startswith(site) and k.endswith("project_in.weight"))
        groups = layer_indices((int(m["group"]) for m in found if m), "GroupedResidualFSQ groups", ckpt.path)
        bases = [f"{site}{g}." for g in groups]
        stages = stages or 1
        if any(k.startswith(site) and k.endswith("orthogonal_rot") for k in ckpt.state):
            raise LoadError("GroupedResidualFSQ with orthogonal_rotation is not supported (a rotation per group "
                            "and stage)", ckpt.path)
    else:
        bases = [site or ""]
    projections = [projection(ckpt, b + "project_in.") for b in bases]
    outs = [projection(ckpt, b + "project_out.") for b in bases]
    width = int(projections[0][0].shape[0]) if projections[0] is not None else None
    if any((p is None) != (projections[0] is None) or (p is not None and p[0].shape != projections[0][0].shape)
           for p in projections):
        raise LoadError("GroupedResidualFSQ groups have different projections", ckpt.path)
    heads = (width // d) if width is not None else (count_option(ckpt, "heads") or 1)
    if stages is not None and heads != 1:
        raise LoadError(f"project_in gives {width} dims for {d} levels: a ResidualFSQ has one codebook of "
                        f"{d} dims (levels or stages do not fit)", ckpt.path)
    if stages is None and f"{bases[0]}layers.0.orthogonal_rot" in ckpt.state:     # rotations reveal the stages
        stages = len([k for k in ckpt.state if re.fullmatch(re.escape(bases[0]) + r"layers\.\d+\.orthogonal_rot", k)])
    rotations_at = [bases[0] + "orthogonal_rot"] if stages is None else \
        [f"{bases[0]}layers.{i}.orthogonal_rot" for i in range(stages)]
    rotations = [float_tensor(ckpt, key, (d, d), required=False) for key in rotations_at]
    lt = torch.tensor(levels)
    if stages is None:
        rule, scales, pre, soft = FSQRule("tanh"), [None], "none", None
        kind = f"FSQ (levels {levels}" + (f", {heads} codebooks" if heads > 1 else "") + ")"
        notes.append("plain FSQ rule (no stages given); a ResidualFSQ needs --stages N / stages=N")
    else:
        rule, pre = FSQRule("symmetric", hard_clamp=True), "soft_clamp"
        scales = [lt.float() ** -i for i in range(stages)]
        soft = 1 + (1 / (lt - 1))
        kind = (f"{'Grouped' if len(bases) > 1 else ''}ResidualFSQ ({stages} stages of levels {levels}"
                + (f", {len(bases)} groups" if len(bases) > 1 else "") + ")")
        notes.append("ResidualFSQ defaults assumed (bound_hard_clamp=True: soft clamp 1 + 1/(L-1), "
                     "symmetric levels); they are not stored")
    in_dim = int(projections[0][0].shape[1]) if projections[0] is not None else heads * d
    if projections[0] is None:
        notes.append(f"no project_in: frames are taken as the {heads * d} FSQ dims themselves")
    notes.insert(0, f"vector-quantize-pytorch {kind} at '{site or '(top level)'}'; levels from "
                 + ("the options" if ckpt.options.get("levels") is not None else "the file's config"))
    return FSQQuantizer(format="fsq", source=str(ckpt.path), input_dim=len(bases) * in_dim, notes=notes,
                        levels=levels, rule=rule, stage_scales=scales, projections=projections, out_projections=outs,
                        heads=heads, pre=pre, soft_clamp=soft, rotations=rotations)


FSQ = Format("fsq", "vector-quantize-pytorch FSQ / ResidualFSQ / GroupedResidualFSQ (project_in/out only; "
             "levels and stages from the options)", _detect, _build)
