"""vector-quantize-pytorch's `SimVQ` and `ResidualSimVQ`: a frozen codebook and its learned transform.

Keys, under any prefix P: `Pfrozen_codebook [K, Df]` (a persistent buffer) and `Pcode_transform.weight
[D, Df]` (+ `.bias`) for `SimVQ`; `Players.{i}.frozen_codebook` and `Players.{i}.code_transform.*` per
stage for `ResidualSimVQ`. The effective codebook W(C) is built once at load (`quant.simvq`) and audited as
a Euclidean VQ. A `code_transform` that is a deeper module (`code_transform.0.weight`, ...) is refused:
its activations are not in the file.
"""

from __future__ import annotations

import re
from collections import defaultdict

import torch

from ...errors import LoadError
from ...quant import SimVQQuantizer, effective_codebook
from ...quant.quantizer import Quantizer
from .base import Checkpoint, Format, check_codebook, check_same_dim, float_tensor, layer_indices

_SITE = re.compile(r"^(?P<stem>(?:.*?\.)?)(?:layers\.(?P<layer>\d+)\.)?frozen_codebook$")


def find_sites(state: dict) -> dict[str, dict[int, str]]:
    """stem -> {stage: prefix of the stage's keys}; stage -1 for a single SimVQ."""
    sites: dict[str, dict[int, str]] = defaultdict(dict)
    for key, value in state.items():
        match = _SITE.match(key) if key.endswith("frozen_codebook") else None
        if match is None or not isinstance(value, torch.Tensor) or value.ndim != 2:
            continue
        prefix = key[: -len("frozen_codebook")]
        if any(k.startswith(prefix + "code_transform.") for k in state):
            sites[match["stem"]][-1 if match["layer"] is None else int(match["layer"])] = prefix
    return dict(sites)


def _detect(ckpt: Checkpoint) -> bool:
    return bool(find_sites(ckpt.state))


def _stage_codebook(ckpt: Checkpoint, prefix: str, index: int) -> torch.Tensor:
    frozen = float_tensor(ckpt, prefix + "frozen_codebook", (None, None), f"layer {index} frozen_codebook")
    if prefix + "code_transform.weight" not in ckpt.state:
        deeper = sorted(k for k in ckpt.state if k.startswith(prefix + "code_transform."))
        raise LoadError(f"SimVQ code_transform at '{prefix}' is not one Linear ({deeper[0]}, ...): its activations "
                        "are not stored; save model.codebook (the effective codebook) as a plain tensor instead",
                        ckpt.path)
    weight = float_tensor(ckpt, prefix + "code_transform.weight", (None, frozen.shape[1]),
                          f"layer {index} code_transform.weight")
    bias = float_tensor(ckpt, prefix + "code_transform.bias", (weight.shape[0],), required=False)
    table = effective_codebook(frozen, weight, bias)
    check_codebook(table, index, ckpt.path)
    return table


def _build(ckpt: Checkpoint) -> Quantizer:
    sites = find_sites(ckpt.state)
    stem, stages = max(sites.items(), key=lambda item: (len(item[1]), -len(item[0])))
    residual = list(stages) != [-1]
    order = layer_indices(stages, f"ResidualSimVQ at '{stem}'", ckpt.path) if residual else [-1]
    tables = [_stage_codebook(ckpt, stages[i], max(i, 0)) for i in order]
    check_same_dim(tables, ckpt.path)
    kind = "ResidualSimVQ" if residual else "SimVQ"
    notes = [f"vector-quantize-pytorch {kind} at '{stem or '(top level)'}': {len(tables)} layer(s) of "
             f"{tables[0].shape[0]} codes; the effective codebook is code_transform(frozen_codebook)",
             "no EMA statistics: usage comes from encoding alone"]
    return SimVQQuantizer(format="simvq", codebooks=tables, source=str(ckpt.path), notes=notes)


SIMVQ = Format("simvq", "vector-quantize-pytorch SimVQ / ResidualSimVQ (frozen_codebook + code_transform)",
               _detect, _build)
