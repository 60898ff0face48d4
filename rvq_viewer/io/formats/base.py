"""What every format adapter shares: the state dict found in a container, and the registry."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from ...core import Quantizer
from ...errors import LoadError

# Where projects keep the model state inside their checkpoint files, most specific first.
WRAPPER_KEYS = ("weight", "model", "state_dict", "best_state", "fsdp_best_state", "module", "generator")


@dataclass
class Checkpoint:
    """A loaded container: `state` is the flattened tensor dict, `meta` everything else at top level."""

    path: Path
    state: dict[str, torch.Tensor]
    meta: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)

    def tensor(self, key: str) -> torch.Tensor:
        try:
            return self.state[key]
        except KeyError:
            raise LoadError(f"missing key {key!r}", self.path) from None


@dataclass(frozen=True)
class Format:
    """A checkpoint family: `detect` looks at the keys, `build` makes the Quantizer."""

    name: str
    description: str
    detect: Callable[[Checkpoint], bool]
    build: Callable[[Checkpoint], Quantizer]


def flatten_tensors(obj: Any, prefix: str = "", depth: int = 0) -> dict[str, torch.Tensor]:
    """All tensors in nested dicts, keyed by their dotted path (the form of a state dict)."""
    out: dict[str, torch.Tensor] = {}
    if depth > 6 or not isinstance(obj, Mapping):
        return out
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, torch.Tensor):
            out[name] = value
        elif isinstance(value, Mapping):
            out.update(flatten_tensors(value, name + ".", depth + 1))
    return out


def unwrap(obj: Any, path: Path) -> Checkpoint:
    """Find the model state in a project's container (GPT-SoVITS `weight`, Lightning `state_dict`...)."""
    if isinstance(obj, torch.Tensor):
        return Checkpoint(path, {"": obj})
    if not isinstance(obj, Mapping):
        raise LoadError(f"not a checkpoint: the file holds a {type(obj).__name__}, not a dict of tensors", path)
    meta = {k: v for k, v in obj.items() if not isinstance(v, (torch.Tensor, Mapping)) or k in ("config", "metadata")}
    inner = obj
    for _ in range(3):  # e.g. audiocraft's best_state -> model
        wrapper = next((k for k in WRAPPER_KEYS if isinstance(inner.get(k), Mapping)), None)
        if wrapper is None or _has_tensors_at_top(inner):
            break
        inner = inner[wrapper]
    state = flatten_tensors(inner)
    if not state:
        raise LoadError("no tensors found in the file", path)
    return Checkpoint(path, state, meta)


def _has_tensors_at_top(obj: Mapping) -> bool:
    return any(isinstance(v, torch.Tensor) for v in obj.values())


def check_codebook(table: torch.Tensor, layer: int, path: Path) -> None:
    """A codebook table must be a finite, non-empty [K, D] matrix."""
    if table.ndim != 2:
        raise LoadError(f"layer {layer}: codebook has shape {tuple(table.shape)}, expected [K, D]", path)
    if table.shape[0] == 0 or table.shape[1] == 0:
        raise LoadError(f"layer {layer}: codebook is empty (K={table.shape[0]}, D={table.shape[1]})", path)
    if not table.dtype.is_floating_point:
        raise LoadError(f"layer {layer}: codebook dtype {table.dtype} is not floating point", path)
    if not torch.isfinite(table).all():
        raise LoadError(f"layer {layer}: codebook holds NaN or infinite values", path)


def check_same_dim(tables: list[torch.Tensor], path: Path) -> None:
    dims = {int(t.shape[1]) for t in tables}
    if len(dims) > 1:
        raise LoadError(f"layers disagree on the codebook dimension: {sorted(dims)}", path)
