"""EnCodec-family RVQs (EnCodec, audiocraft, GPT-SoVITS, SpeechTokenizer, WavTokenizer): Euclidean
lookup, residual minus the codeword, buffers `inited`, `cluster_size`, `embed`, `embed_avg` per layer.

The quantizer may sit under any prefix (a bare RVQ, `quantizer.vq.`, a whole model, a Lightning module).
"""

from __future__ import annotations

import re
from collections import defaultdict

import torch

from ...core import DeadCodeRule, Quantizer
from ...errors import LoadError
from .base import Checkpoint, Format, check_codebook, check_same_dim

EMBED_KEY = re.compile(r"^(?P<prefix>(?:.*\.)?)layers\.(?P<index>\d+)\._codebook\.embed$")


def find_rvq_prefixes(state: dict[str, torch.Tensor]) -> dict[str, list[int]]:
    """Prefixes under which `layers.{i}._codebook.embed` tables (2-D) live, with their layer indices."""
    found: dict[str, list[int]] = defaultdict(list)
    for key, value in state.items():
        match = EMBED_KEY.match(key)
        if match and value.ndim == 2:
            found[match["prefix"]].append(int(match["index"]))
    return {prefix: sorted(indices) for prefix, indices in found.items()}


def main_prefix(ckpt: Checkpoint) -> str:
    """The RVQ with the most layers; a model holding several names them all in a note."""
    prefixes = find_rvq_prefixes(ckpt.state)
    if not prefixes:
        raise LoadError("no EnCodec-style codebooks (layers.N._codebook.embed) found", ckpt.path)
    return max(prefixes, key=lambda p: (len(prefixes[p]), -len(p)))


class ProjectedQuantizer(Quantizer):
    """EnCodec rule with per-layer `project_in` / `project_out` Linear layers (when codebook_dim != dim)."""

    def __init__(self, *args, projections: list[tuple | None], **kwargs):
        self.projections = projections
        super().__init__(*args, **kwargs)

    def lookup(self, layer, residual):
        proj = self.projections[layer]
        if proj is not None:
            residual = torch.nn.functional.linear(residual, proj[0], proj[1])
        return super().lookup(layer, residual)

    def layer_output(self, layer, codes):
        out = super().layer_output(layer, codes)
        proj = self.projections[layer]
        return out if proj is None else torch.nn.functional.linear(out, proj[2], proj[3])

    def _move(self, device):
        self.projections = [None if p is None else tuple(t.to(device) if t is not None else None for t in p)
                            for p in self.projections]


def build_encodec_rvq(ckpt: Checkpoint, prefix: str, fmt: str, **kwargs) -> Quantizer:
    """Read the codebooks under `prefix`; refuse layers whose k-means init never ran."""
    indices = find_rvq_prefixes(ckpt.state)[prefix]
    if indices != list(range(len(indices))):
        raise LoadError(f"codebook layers are not numbered 0..{len(indices) - 1}: {indices}", ckpt.path)
    tables, sizes, projections = [], [], []
    for i in indices:
        base = f"{prefix}layers.{i}."
        table = ckpt.tensor(base + "_codebook.embed")
        check_codebook(table, i, ckpt.path)
        inited = ckpt.state.get(base + "_codebook.inited")
        if inited is not None and inited.numel() and float(inited.float().flatten()[0]) == 0.0:
            raise LoadError(f"layer {i} has no trained codebook (inited = 0: k-means init never ran); "
                            "nothing to audit", ckpt.path)
        tables.append(table.float())
        sizes.append(ckpt.state.get(base + "_codebook.cluster_size"))
        projections.append(_projection(ckpt, base))
    check_same_dim(tables, ckpt.path)
    for i, size in enumerate(sizes):
        if size is not None and size.numel() != tables[i].shape[0]:
            raise LoadError(f"layer {i}: cluster_size has {size.numel()} entries for {tables[i].shape[0]} codes",
                            ckpt.path)
    cluster_size = [s.float() for s in sizes] if all(s is not None for s in sizes) else None
    notes = list(kwargs.pop("notes", []))
    others = [p for p in find_rvq_prefixes(ckpt.state) if p != prefix]
    if others:
        notes.append(f"using the quantizer at '{prefix}'; also found: {', '.join(others)}")
    rule = _stored_dead_code_rule(ckpt)
    if rule is not None:
        kwargs.setdefault("dead_code_rule", rule)
        notes.append(f"dead-code rule from the checkpoint's config: {rule.describe()}")
    common = dict(format=fmt, codebooks=tables, cluster_size=cluster_size, notes=notes,
                  source=str(ckpt.path), **kwargs)
    if any(p is not None for p in projections):
        return ProjectedQuantizer(projections=projections, input_dim=_projected_dim(projections), **common)
    return Quantizer(**common)


def _stored_dead_code_rule(ckpt: Checkpoint) -> DeadCodeRule | None:
    """The threshold a run was trained with, where its checkpoint records it (rvq-viewer's trainer
    writes `config.threshold_ema_dead_code` and `config.threshold_relative`)."""
    config = ckpt.meta.get("config")
    value = config.get("threshold_ema_dead_code") if isinstance(config, dict) else None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        return None
    return DeadCodeRule("relative" if config.get("threshold_relative") else "absolute", float(value))


def _projection(ckpt: Checkpoint, base: str) -> tuple | None:
    w_in = ckpt.state.get(base + "project_in.weight")
    w_out = ckpt.state.get(base + "project_out.weight")
    if w_in is None or w_out is None:
        return None
    return (w_in.float(), _opt_float(ckpt.state.get(base + "project_in.bias")),
            w_out.float(), _opt_float(ckpt.state.get(base + "project_out.bias")))


def _opt_float(t):
    return None if t is None else t.float()


def _projected_dim(projections) -> int:
    return int(next(p for p in projections if p is not None)[0].shape[1])


def _detect(ckpt: Checkpoint) -> bool:
    return bool(find_rvq_prefixes(ckpt.state))


def _build(ckpt: Checkpoint) -> Quantizer:
    return build_encodec_rvq(ckpt, main_prefix(ckpt), "encodec")


ENCODEC = Format("encodec", "EnCodec-layout RVQ (EnCodec, audiocraft, a bare RVQ state dict, any prefix)",
                 _detect, _build)
