"""Moshi / Mimi (kyutai) quantizers, in moshi's own names and in HF transformers' names.

Codebooks: `E = embedding_sum / clamp(cluster_usage, 1e-5)` (no laplace smoothing); lookup by
Euclidean distance (torch.cdist, argmin); residual minus the codeword. `cluster_usage` is the EMA
usage, and Moshi's dead-code rule is relative: a code is dead when its usage is below 0.1 of the
uniform share (`0.1 * sum(usage) / K`).

Keys:
- split (Mimi), moshi names: `P.rvq_first.{input_proj,output_proj}.weight` (bias-free 1x1 convs) and
  `P.rvq_first.vq.layers.{i}._codebook.{_initialized, cluster_usage, embedding_sum}`, the same under
  `P.rvq_rest`; safetensors (bare) or `{"model": state}`.
- split, HF transformers `MimiModel` names: `P.semantic_residual_vector_quantizer.{input_proj,
  output_proj}.weight` and `...layers.{i}.codebook.{initialized, cluster_usage, embed_sum}`, the same
  under `acoustic_residual_vector_quantizer`.
- one moshi `ResidualVectorQuantizer`: `P.vq.layers.{i}._codebook.embedding_sum` (+ optional
  `P.input_proj.weight`).

Mimi stores 32 codebooks (1 semantic + 31 acoustic) and uses the first 8 by default (moshi's
`get_mimi(num_codebooks=8)`); the loader does the same unless `n_q` is given.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ...quant import DeadCodeRule, Quantizer
from ...errors import LoadError
from .base import Checkpoint, Format, check_codebook, flag_value, float_tensor, layer_indices

MIMI_RULE = DeadCodeRule("relative", 0.1, "Moshi/Mimi")
MIMI_DEFAULT_N_Q = 8
EPSILON = 1e-5

# (branch name pattern, layer key pattern): group 'root' is the prefix before the branch name.
_MOSHI_LAYER = re.compile(r"^(?P<branch>(?P<root>(?:.*\.)?)(?P<name>rvq_first|rvq_rest)\.)vq\.layers\.(?P<i>\d+)"
                          r"\._codebook\.embedding_sum$")
_HF_LAYER = re.compile(r"^(?P<branch>(?P<root>(?:.*\.)?)(?P<name>semantic|acoustic)_residual_vector_quantizer\.)"
                       r"layers\.(?P<i>\d+)\.codebook\.embed_sum$")
_SINGLE_LAYER = re.compile(r"^(?P<branch>(?P<root>(?:.*\.)?))vq\.layers\.(?P<i>\d+)\._codebook\.embedding_sum$")


@dataclass
class _Site:
    style: str                       # "moshi", "hf" or "single"
    root: str
    branches: list[tuple[str, list[int]]]   # (branch prefix, layer indices), semantic first


def find_site(state: dict[str, torch.Tensor]) -> _Site | None:
    found: dict[tuple[str, str], dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for key in state:
        for style, pattern in (("moshi", _MOSHI_LAYER), ("hf", _HF_LAYER)):
            match = pattern.match(key)
            if match:
                found[(style, match["root"])][match["branch"]].append(int(match["i"]))
                break
        else:
            match = _SINGLE_LAYER.match(key)
            if match:
                found[("single", match["root"])][match["branch"]].append(int(match["i"]))
    if not found:
        return None
    # Prefer a split quantizer, then the one with most layers.
    (style, root), branches = max(found.items(), key=lambda item: (item[0][0] != "single",
                                                                    sum(map(len, item[1].values()))))
    order = sorted(branches, key=lambda b: 0 if ("rvq_first" in b or "semantic_" in b) else 1)
    return _Site(style, root, [(b, sorted(branches[b])) for b in order])


class MimiQuantizer(Quantizer):
    """Split residual quantizer: each branch projects the same input x with its own bias-free 1x1
    `input_proj` and runs its own RVQ (layers `branch_of[i]`).

    Residuals. The latent that `prepare` returns is the concatenation of the active branches'
    projections, [x_sem | x_ac] ([T, 2*D] for Mimi), and every layer's residual lives in that joined
    space: after the semantic layer it is [x_sem - q_sem | x_ac]; after acoustic layer j it is
    [x_sem - q_sem | x_ac - (q_ac_0 + ... + q_ac_j)]. Each branch's half is exactly that branch's own
    residual (the semantic residual x_sem - q, the acoustic one continuing from the acoustic projection
    of x, never from the semantic residual); the joined norm makes `residual / latent` the share of the
    projected input's energy that the layers so far leave unexplained, over both branches. With n_q
    not above the semantic layers, the latent is the semantic projection alone. A layer's `output` is
    its codeword in its branch's half and zeros in the other. `decode` gives [q_sem | sum q_ac] in the
    same space (not the 512-dim output_proj space).
    """

    plain_residual = False

    def __init__(self, *args, branch_of: list[int], branch_proj: list[torch.Tensor | None],
                 branch_dims: list[int], **kwargs):
        self.branch_of, self.branch_proj, self.branch_dims = branch_of, branch_proj, branch_dims
        super().__init__(*args, **kwargs)

    def _active(self) -> list[int]:
        return sorted(set(self.branch_of[: self.n_q]))

    def _slice(self, layer: int) -> slice:
        start = 0
        for b in self._active():
            if b == self.branch_of[layer]:
                return slice(start, start + self.branch_dims[b])
            start += self.branch_dims[b]
        raise IndexError(layer)

    def prepare(self, frames: torch.Tensor) -> torch.Tensor:
        frames = frames.to(self.device, torch.float32)
        with torch.no_grad():
            parts = [frames if self.branch_proj[b] is None else F.linear(frames, self.branch_proj[b])
                     for b in self._active()]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def lookup(self, layer: int, residual: torch.Tensor) -> torch.Tensor:
        return super().lookup(layer, residual[:, self._slice(layer)])

    def layer_output(self, layer: int, codes: torch.Tensor) -> torch.Tensor:
        width = sum(self.branch_dims[b] for b in self._active())
        out = torch.zeros(codes.shape[0], width, device=self.codebooks[layer].device)
        out[:, self._slice(layer)] = self.codebooks[layer][codes]
        return out

    def truncate(self, n_q: int) -> None:
        super().truncate(n_q)
        self.branch_of = self.branch_of[:n_q]

    def _move(self, device):
        self.branch_proj = [None if w is None else w.to(device) for w in self.branch_proj]

    def summary(self) -> dict:
        out = super().summary()
        out["semantic_layers"] = sum(1 for b in self.branch_of if b == 0) if len(self.branch_dims) > 1 else 0
        return out


def _names(style: str) -> tuple[str, str, str, str]:
    """(layer template, sum, usage, initialized) names for a style."""
    if style == "hf":
        return "layers.{i}.codebook.", "embed_sum", "cluster_usage", "initialized"
    return "vq.layers.{i}._codebook.", "embedding_sum", "cluster_usage", "_initialized"


_BRANCH_NAMES = {"moshi": ("rvq_first", "rvq_rest"),
                 "hf": ("semantic_residual_vector_quantizer", "acoustic_residual_vector_quantizer")}


def _check_split(ckpt: Checkpoint, site: _Site) -> None:
    """A split quantizer needs both branches, each with or each without its input_proj: with one
    missing, the codes of the other are not Mimi's (both encode the same input, side by side)."""
    if site.style not in _BRANCH_NAMES:
        return
    names = _BRANCH_NAMES[site.style]
    present = [name for name in names if any(b == f"{site.root}{name}." for b, _ in site.branches)]
    if len(present) < 2:
        missing = next(name for name in names if name not in present)
        raise LoadError(f"Mimi split quantizer with only its {present[0]} branch: {site.root}{missing} is missing "
                        "(both branches encode the same input; codes of one alone are not Mimi's)", ckpt.path)
    projected = [f"{branch}input_proj.weight" in ckpt.state for branch, _ in site.branches]
    if any(projected) and not all(projected):
        lacking = next(branch for (branch, _), has in zip(site.branches, projected) if not has)
        raise LoadError(f"Mimi split quantizer: {lacking}input_proj.weight is missing (the other branch has one)",
                        ckpt.path)


def _build(ckpt: Checkpoint) -> Quantizer:
    site = find_site(ckpt.state)
    path = ckpt.path
    _check_split(ckpt, site)
    template, sum_name, usage_name, init_name = _names(site.style)
    codebooks, usages, branch_of, branch_proj, branch_dims = [], [], [], [], []
    in_dim = None
    for b, (branch, indices) in enumerate(site.branches):
        layer_indices(indices, f"quantizer '{branch}'", path)
        dim = None
        for i in indices:
            base = branch + template.format(i=i)
            embed_sum = ckpt.tensor(base + sum_name)
            check_codebook(embed_sum, len(codebooks), path)
            k = int(embed_sum.shape[0])
            if dim is None:
                dim = int(embed_sum.shape[1])
            elif embed_sum.shape[1] != dim:
                raise LoadError(f"{branch}: layers disagree on the codebook dimension", path)
            usage = float_tensor(ckpt, base + usage_name, (k,), f"{base}{usage_name}")
            if flag_value(ckpt.state.get(base + init_name)) is False:
                raise LoadError(f"{base.rstrip('.')}: codebook never initialised ({init_name} = 0); nothing to audit",
                                path)
            codebooks.append(embed_sum.float() / usage.clamp(min=EPSILON)[:, None])
            usages.append(usage)
            branch_of.append(b)
        weight = ckpt.state.get(branch + "input_proj.weight")
        if weight is not None:
            weight = float_tensor(ckpt, branch + "input_proj.weight", (dim, in_dim, 1) if weight.ndim == 3
                                  else (dim, in_dim), f"{branch}input_proj")
            weight = weight.reshape(weight.shape[0], weight.shape[1])
            branch_in = int(weight.shape[1])
        else:
            branch_in = dim
        if in_dim is not None and branch_in != in_dim:
            raise LoadError(f"the branches take inputs of different sizes ({in_dim} and {branch_in})", path)
        in_dim = branch_in
        branch_proj.append(weight)
        branch_dims.append(dim)
    for table in codebooks:
        if not torch.isfinite(table).all():
            raise LoadError("codebook = embedding_sum / cluster_usage is not finite", path)
    names = {"moshi": "Mimi split quantizer (moshi names)", "hf": "Mimi split quantizer (HF transformers names)",
             "single": "moshi ResidualVectorQuantizer"}
    notes = [f"{names[site.style]} at '{site.root or '(top level)'}': "
             + " + ".join(f"{len(ix)} {'semantic' if b == 0 and len(site.branches) > 1 else 'acoustic' if b else 'layers'}"
                          for b, (_, ix) in enumerate(site.branches)),
             "EMA-dead codes use Moshi's relative rule (usage < 0.1 x uniform share)"]
    if len(site.branches) > 1:
        notes.append("both branches encode the same input through their own input_proj; residual norms are "
                     "taken in the joined [semantic | acoustic] projection space")
    quantizer = MimiQuantizer(format="mimi" if len(site.branches) > 1 else "moshi-rvq", codebooks=codebooks,
                              cluster_size=usages, dead_code_rule=MIMI_RULE, input_dim=in_dim, notes=notes,
                              source=str(path), branch_of=branch_of, branch_proj=branch_proj,
                              branch_dims=branch_dims)
    if len(site.branches) > 1 and ckpt.options.get("n_q") is None and quantizer.n_q > MIMI_DEFAULT_N_Q:
        quantizer.notes.append(f"using {MIMI_DEFAULT_N_Q} of {quantizer.n_q} stored codebooks (Mimi's default); "
                               "ask for n_q to audit more")
        quantizer.truncate(MIMI_DEFAULT_N_Q)
    return quantizer


MIMI = Format("mimi", "Moshi / Mimi quantizer (moshi or HF transformers names; split semantic + acoustic RVQ)",
              lambda ckpt: find_site(ckpt.state) is not None, _build)
