"""lucidrains' vector-quantize-pytorch: `VectorQuantize`, `ResidualVQ` and `GroupedResidualVQ`.

Keys (any prefix P, since users save these inside their own models):
- `VectorQuantize`:     `P_codebook.{embed [C,K,D], cluster_size [C,K], embed_avg, initted}`,
                        `Pproject_in.weight` (or `Pproject_in.0.weight` + LayerNorm `Pproject_in.1.*`)
- `ResidualVQ`:         `Players.{i}._codebook.*`, `Pproject_in.*` / `Pproject_out.*`
- `GroupedResidualVQ`:  `Prvqs.{g}.layers.{i}._codebook.*`, `Prvqs.{g}.project_in.*`
`C` is the number of heads with `separate_codebook_per_head`, else 1. `initted` is a 0-dim bool since
1.26 and a float [1] before; both are accepted.

Encode rule (eval mode): input cast to float32, `project_in` once, then per layer: split the frame into
slots (heads of D dims; groups each run their own RVQ on their chunk of the input), for cosine codebooks
L2-normalise each slot (eps 1e-6) and take argmax of the dot product with the stored (unit) rows; for
Euclidean ones argmin of the distance. The residual loses the stored codeword (a unit vector for
cosine codebooks), in the projected space.

In this Quantizer a frame's residual is the concatenation of its S slots, [N, S*D]. When several tables
exist per layer (separate codebooks per head, or groups), layer i's `codebooks[i]` is their
concatenation [T*K, D] and a code is `t*K + k` for table t; its `LayerStep.codes` hold S codes per
frame, flattened frame-major ([N*S]), and `encode` returns [n_q, N*S].
"""

from __future__ import annotations

import re
from collections import defaultdict

import torch
import torch.nn.functional as F

from ...quant import DeadCodeRule, Quantizer
from ...quant.search import nearest_codes
from ...errors import LoadError
from .base import (Checkpoint, Format, check_codebook, find_config_dict, flag_value, float_tensor,
                   layer_indices)

SUFFIX = "_codebook.embed"
_LAYER = re.compile(r"^(?P<stem>(?:.*\.)?)layers\.(?P<layer>\d+)\.$")
_GROUP = re.compile(r"^(?P<stem>(?:.*\.)?)rvqs\.(?P<group>\d+)\.$")
_CONFIG_MARKERS = ("use_cosine_sim", "separate_codebook_per_head", "num_quantizers", "codebook_size")
UNIT_TOLERANCE = 1e-4


def find_sites(state: dict[str, torch.Tensor]) -> dict[tuple[str, str], dict[tuple[int, int], str]]:
    """(root, kind) -> {(group, layer): embed key} for every 3-D `_codebook.embed`.

    kind is 'vq' (one VectorQuantize), 'rvq' (ResidualVQ) or 'grvq' (GroupedResidualVQ)."""
    sites: dict[tuple[str, str], dict[tuple[int, int], str]] = defaultdict(dict)
    for key, value in state.items():
        if not key.endswith(SUFFIX) or not isinstance(value, torch.Tensor) or value.ndim != 3:
            continue
        stem = key[: -len(SUFFIX)]
        layer = _LAYER.match(stem)
        if layer is None:
            sites[(stem, "vq")][(0, 0)] = key
            continue
        group = _GROUP.match(layer["stem"])
        if group is None:
            sites[(layer["stem"], "rvq")][(0, int(layer["layer"]))] = key
        else:
            sites[(group["stem"], "grvq")][(int(group["group"]), int(layer["layer"]))] = key
    return dict(sites)


def _detect(ckpt: Checkpoint) -> bool:
    return bool(find_sites(ckpt.state))


class VQPytorchQuantizer(Quantizer):
    """Residual quantizer whose frames hold S slots of D dims (heads / groups), each looked up in its
    layer's table `slot_table[s]`; cosine or Euclidean lookup. See the module docstring."""

    plain_residual = False

    def __init__(self, *args, slots: int, slot_dim: int, slot_table: list[int], n_tables: int,
                 cosine: bool, group_projections: list[tuple | None], **kwargs):
        self.slots, self.slot_dim, self.slot_table, self.n_tables = slots, slot_dim, slot_table, n_tables
        self.cosine = cosine
        self.group_projections = group_projections
        super().__init__(*args, **kwargs)

    @property
    def codes_per_frame(self) -> int:
        return self.slots

    def prepare(self, frames: torch.Tensor) -> torch.Tensor:
        frames = frames.to(self.device, torch.float32)
        chunks = frames.chunk(len(self.group_projections), dim=-1) if len(self.group_projections) > 1 else [frames]
        with torch.no_grad():
            return torch.cat([_project(chunk, proj) for chunk, proj in zip(chunks, self.group_projections)], dim=-1)

    def lookup(self, layer: int, residual: torch.Tensor) -> torch.Tensor:
        n = residual.shape[0]
        x = residual.reshape(n, self.slots, self.slot_dim)
        if self.cosine:
            x = F.normalize(x, p=2, dim=-1, eps=1e-6)
        k = self.codebooks[layer].shape[0] // self.n_tables
        if self.n_tables == 1:
            return self._search(layer, x.reshape(n * self.slots, self.slot_dim), 0, k)
        out = torch.empty(n, self.slots, dtype=torch.long, device=residual.device)
        for t in range(self.n_tables):
            slots = [s for s in range(self.slots) if self.slot_table[s] == t]
            if slots:
                rows = x[:, slots].reshape(-1, self.slot_dim)
                out[:, slots] = self._search(layer, rows, t, k).reshape(n, len(slots)) + t * k
        return out.reshape(-1)

    def _search(self, layer: int, rows: torch.Tensor, table: int, k: int) -> torch.Tensor:
        codebook = self.codebooks[layer][table * k:(table + 1) * k]
        if self.cosine:
            return _argmax_dot(rows, codebook)
        return nearest_codes(rows, codebook, self._sq_norms[layer][table * k:(table + 1) * k])

    def layer_output(self, layer: int, codes: torch.Tensor) -> torch.Tensor:
        return self.codebooks[layer][codes].reshape(-1, self.slots * self.slot_dim)

    def _move(self, device):
        self.group_projections = [None if p is None else tuple(None if t is None else t.to(device) for t in p)
                                  for p in self.group_projections]

    def summary(self) -> dict:
        out = super().summary()
        out.update(codes_per_frame=self.slots, lookup="cosine" if self.cosine else "euclidean")
        return out


def _project(x: torch.Tensor, proj: tuple | None) -> torch.Tensor:
    if proj is None:
        return x
    weight, bias, ln_weight, ln_bias = proj
    x = F.linear(x, weight, bias)
    if ln_weight is not None:
        x = F.layer_norm(x, (x.shape[-1],), ln_weight, ln_bias, eps=1e-5)
    return x


def _argmax_dot(rows: torch.Tensor, codebook: torch.Tensor, block: int = 4096) -> torch.Tensor:
    """argmax over codes of x . e, block by block (ties go to the lowest index, as torch.argmax)."""
    out = torch.empty(rows.shape[0], dtype=torch.long, device=rows.device)
    embed_t = codebook.t()
    for start in range(0, rows.shape[0], block):
        out[start:start + block] = (rows[start:start + block] @ embed_t).argmax(dim=1)
    return out


def _read_projection(ckpt: Checkpoint, base: str, out_dim: int) -> tuple | None:
    """`project_in` at `base`: a Linear, or a Sequential(Linear, LayerNorm). Returns (w, b, ln_w, ln_b)."""
    state = ckpt.state
    if base + "project_in.weight" in state:
        lin, ln = base + "project_in.", None
    elif base + "project_in.0.weight" in state:
        lin, ln = base + "project_in.0.", base + "project_in.1."
    else:
        return None
    weight = float_tensor(ckpt, lin + "weight", (out_dim, None), f"{lin}weight")
    bias = float_tensor(ckpt, lin + "bias", (out_dim,), required=False)
    ln_w = ln_b = None
    if ln is not None:
        ln_w = float_tensor(ckpt, ln + "weight", (out_dim,), required=False)
        ln_b = float_tensor(ckpt, ln + "bias", (out_dim,), required=False)
    return (weight, bias, ln_w, ln_b)


def _build(ckpt: Checkpoint) -> Quantizer:
    sites = find_sites(ckpt.state)
    (root, kind), tables_at = max(sites.items(), key=lambda item: (len(item[1]), -len(item[0][0])))
    path = ckpt.path
    for key in ckpt.state:
        if key.startswith(root) and (".codebook_mean" in key or key.startswith(root + "mlps.")
                                     or "._codebook.vq_bridge." in key):
            what = ("affine_param codebooks (batch statistics)" if ".codebook_mean" in key else
                    "implicit neural codebooks (QINCo MLPs)" if "mlps." in key else "a vq_bridge codebook transform")
            raise LoadError(f"vector-quantize-pytorch with {what} is not supported: its codes depend on more "
                            "than the stored codebook", path)
    groups = sorted({g for g, _ in tables_at})
    layers = sorted({i for _, i in tables_at})
    layer_indices(groups, "GroupedResidualVQ groups", path)
    layer_indices(layers, f"quantizer '{root}'", path)
    if len(tables_at) != len(groups) * len(layers):
        raise LoadError("GroupedResidualVQ groups hold different numbers of layers", path)

    def base_of(g: int, i: int) -> str:
        if kind == "vq":
            return root
        if kind == "rvq":
            return f"{root}layers.{i}."
        return f"{root}rvqs.{g}.layers.{i}."

    # Tables: embed [C, K, D] per (group, layer).
    first = ckpt.state[tables_at[(0, 0)]]
    n_books, _, dim = (int(s) for s in first.shape)
    codebooks, cluster, any_ema = [], [], True
    for i in layers:
        parts, sizes = [], []
        for g in groups:
            base = base_of(g, i)
            embed = ckpt.state[tables_at[(g, i)]]
            if embed.ndim != 3 or embed.shape[0] != n_books or embed.shape[2] != dim:
                raise LoadError(f"{base}_codebook.embed has shape {list(embed.shape)}, expected "
                                f"[{n_books}, K, {dim}] like the first layer", path)
            k = int(embed.shape[1])
            if parts and k != parts[0].shape[0]:
                raise LoadError(f"layer {i}: groups disagree on the codebook size", path)
            for c in range(n_books):
                check_codebook(embed[c], i, path)
                parts.append(embed[c].float())
            if flag_value(ckpt.state.get(base + "_codebook.initted")) is False:
                raise LoadError(f"layer {i} has no trained codebook (initted = False: k-means init never ran); "
                                "nothing to audit", path)
            size = float_tensor(ckpt, base + "_codebook.cluster_size", (n_books, k),
                                f"layer {i} cluster_size", required=False)
            sizes.append(size)
        codebooks.append(torch.cat(parts) if len(parts) > 1 else parts[0])
        if any(s is None for s in sizes):
            any_ema = False
        else:
            cluster.append(torch.cat([s.reshape(-1) for s in sizes]))

    config = find_config_dict(ckpt.meta, _CONFIG_MARKERS) or {}
    notes: list[str] = []

    # Projections and heads.
    group_bases = [f"{root}rvqs.{g}." for g in groups] if kind == "grvq" else [root]
    if kind == "vq":
        proj = _probe_projection(ckpt, root)
        if proj is not None:
            out = int(proj.shape[0])
            if out % dim:
                raise LoadError(f"project_in gives {out} dims, not a multiple of the codebook dim {dim}", path)
            heads = out // dim
        elif n_books > 1:
            heads = n_books
        else:
            heads = _int_option(ckpt, config, "heads", 1)
            if heads > 1:
                notes.append(f"{heads} heads sharing one codebook (asked for, or from the config)")
            else:
                notes.append(f"no project_in and one shared codebook: heads cannot be seen in the keys, so 1 "
                             f"head of {dim} dims is assumed (load with heads=N if features are N x {dim} wide)")
        if n_books not in (1, heads):
            raise LoadError(f"{n_books} codebooks for {heads} heads", path)
    else:
        heads = 1
        if n_books != 1:
            raise LoadError(f"ResidualVQ layers hold {n_books} codebooks per layer; expected 1 (no heads)", path)
    projections, in_dims = [], []
    for gbase in group_bases:
        p = _read_projection(ckpt, gbase, heads * dim)
        projections.append(p)
        in_dims.append(int(p[0].shape[1]) if p is not None else heads * dim)
    if len(set(in_dims)) > 1:
        raise LoadError(f"groups take different input sizes {in_dims}", path)
    n_groups = len(group_bases)
    slots = n_groups * heads
    slot_table = [g * n_books + (h if n_books > 1 else 0) for g in range(n_groups) for h in range(heads)]
    n_tables = n_groups * n_books

    cosine = _cosine_mode(ckpt, config, codebooks, notes)
    threshold = config.get("threshold_ema_dead_code") if isinstance(config, dict) else None
    if isinstance(threshold, (int, float)) and not isinstance(threshold, bool) and threshold > 0:
        rule = DeadCodeRule("absolute", float(threshold), "vector-quantize-pytorch (config)")
    else:
        rule = DeadCodeRule("absolute", 2.0, "vector-quantize-pytorch Codebook default")
        if any_ema:
            notes.append("EMA-dead uses the Codebook default threshold 2; VectorQuantize/ResidualVQ default "
                         "to 0 (no expiry), so training may never have replaced these codes")
    kind_name = {"vq": "VectorQuantize", "rvq": "ResidualVQ", "grvq": "GroupedResidualVQ"}[kind]
    notes.insert(0, f"{kind_name} at '{root or '(top level)'}': {len(layers)} layer(s)"
                 + (f", {n_groups} groups" if kind == "grvq" else "")
                 + (f", {heads} heads" if heads > 1 else "")
                 + (", separate codebook per head" if n_books > 1 else ""))
    if n_tables > 1:
        notes.append(f"each layer's {n_tables} tables are shown as one codebook of {n_tables}x{codebooks[0].shape[0] // n_tables} "
                     "codes (code = table*K + k)")
    if any(v.ndim == 1 for k, v in ckpt.state.items() if k.startswith(root) and k.endswith("_codebook.initted")):
        notes.append("initted stored as float [1]: saved by vector-quantize-pytorch < 1.26")
    return VQPytorchQuantizer(
        format="vector-quantize-pytorch", codebooks=codebooks, cluster_size=cluster if any_ema else None,
        dead_code_rule=rule, input_dim=n_groups * in_dims[0], notes=notes, source=str(path),
        slots=slots, slot_dim=dim, slot_table=slot_table, n_tables=n_tables, cosine=cosine,
        group_projections=projections)


def _probe_projection(ckpt: Checkpoint, root: str) -> torch.Tensor | None:
    for key in (root + "project_in.weight", root + "project_in.0.weight"):
        value = ckpt.state.get(key)
        if isinstance(value, torch.Tensor):
            if value.ndim != 2 or value.numel() == 0:
                raise LoadError(f"{key} has shape {list(value.shape)}, expected a Linear weight [out, in]", ckpt.path)
            return value
    return None


def _int_option(ckpt: Checkpoint, config, name: str, default: int) -> int:
    value = ckpt.options.get(name)
    if value is None and isinstance(config, dict):
        value = config.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 4096:
        raise LoadError(f"{name}={value!r} is not a valid count", ckpt.path)
    return value


def _cosine_mode(ckpt: Checkpoint, config, codebooks: list[torch.Tensor], notes: list[str]) -> bool:
    forced = ckpt.options.get("cosine")
    if forced is not None:
        notes.append(f"lookup: {'cosine' if forced else 'euclidean'} (asked for)")
        return bool(forced)
    if isinstance(config, dict) and isinstance(config.get("use_cosine_sim"), bool):
        notes.append(f"lookup: {'cosine' if config['use_cosine_sim'] else 'euclidean'} (from the config)")
        return config["use_cosine_sim"]
    unit = all(bool(((c.norm(dim=1) - 1).abs() < UNIT_TOLERANCE).all()) for c in codebooks)
    if unit:
        notes.append("lookup: cosine, detected because every codebook row is unit-norm (no config says); "
                     "load with cosine=False to override")
    else:
        notes.append("lookup: euclidean (codebook rows are not unit-norm and no config says otherwise)")
    return unit


VQPYTORCH = Format("vector-quantize-pytorch", "lucidrains' vector-quantize-pytorch VectorQuantize / ResidualVQ / "
                   "GroupedResidualVQ (3-D _codebook.embed)", _detect, _build)
