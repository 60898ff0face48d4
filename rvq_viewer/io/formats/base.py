"""What every format adapter shares: the state dict found in a container, and the registry."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch

from ...quant import Quantizer
from ...errors import LoadError
from ..containers import plain_config

# Where projects keep the model state inside their checkpoint files, most specific first.
WRAPPER_KEYS = ("weight", "model", "state_dict", "best_state", "fsdp_best_state", "module", "generator")
# An audiocraft solver checkpoint (it has `xp.cfg`) holds the latest `model` and the best one; its own
# loader (CompressionSolver.model_from_checkpoint) takes `best_state`, so that comes first.
_AUDIOCRAFT_WRAPPERS = ("best_state", "fsdp_best_state") + WRAPPER_KEYS
# Sidecar configuration a project keeps beside its weights (SNAC, HF repos): read as JSON only.
SIDECAR_CONFIG = "config.json"
_SIDECAR_MAX_BYTES = 1 << 20


@dataclass
class Checkpoint:
    """A loaded container: `state` is the flattened tensor dict, `meta` everything else at top level.

    `wrappers` lists the keys walked to reach the state (e.g. ["best_state", "model"]), `options`
    what the caller asked for (`skip_transform`, `n_q`, `base`, and format options such as `cosine`),
    `header` the file's first bytes (GPT-SoVITS marks its versions there), `config_dir` where a
    `config.json` describes the model (beside the file, or the `save_pretrained` folder opened).
    """

    path: Path
    state: dict[str, torch.Tensor]
    meta: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    wrappers: list[str] = field(default_factory=list)
    header: bytes = b""
    config_dir: Path | None = None
    notes: list[str] = field(default_factory=list)     # what reading it found (a folder, shards...)
    _sidecar: dict | None = field(default=None, repr=False)

    def tensor(self, key: str) -> torch.Tensor:
        try:
            return self.state[key]
        except KeyError:
            raise LoadError(f"missing key {key!r}", self.path) from None

    def sidecar_config(self) -> dict:
        """`config.json` beside the checkpoint (HF / SNAC layout), or {} when absent or unreadable."""
        if self._sidecar is None:
            self._sidecar = {}
            candidate = (self.config_dir or self.path.parent) / SIDECAR_CONFIG
            try:
                if candidate.is_file() and candidate.stat().st_size <= _SIDECAR_MAX_BYTES:
                    data = json.loads(candidate.read_text(encoding="utf-8"))
                    if isinstance(data, dict):
                        self._sidecar = data
            except (OSError, ValueError, UnicodeDecodeError, RecursionError):
                self._sidecar = {}
        return self._sidecar

    def model_type(self) -> str | None:
        """The `model_type` a transformers config.json gives the model, if any."""
        value = self.sidecar_config().get("model_type")
        return value if isinstance(value, str) and value else None

    def config_value(self, *names: str, sidecar: bool = False) -> Any:
        """The first value found under any of `names` in the checkpoint's metadata (nested dicts,
        HParams, metadata.kwargs...), then in the sidecar config.json if `sidecar`; None if absent."""
        for name in names:
            if name in self.options and self.options[name] is not None:
                return self.options[name]
        found = find_config_value(self.meta, names)
        if found is None and sidecar:
            found = find_config_value(self.sidecar_config(), names)
        return found


def find_config_value(obj: Any, names: Iterable[str], depth: int = 0) -> Any:
    """Breadth-first search of nested mappings for the first key in `names` (plain values only)."""
    names = tuple(names)
    if depth > 5 or not isinstance(obj, Mapping):
        return None
    for name in names:
        value = obj.get(name) if isinstance(name, str) else None
        if value is not None and isinstance(value, (bool, int, float, str, list, tuple)):
            return value
    for value in obj.values():
        if isinstance(value, Mapping):
            found = find_config_value(value, names, depth + 1)
            if found is not None:
                return found
    return None


def find_config_dict(obj: Any, markers: Iterable[str], depth: int = 0) -> Mapping | None:
    """The first nested mapping (breadth-first) holding any key in `markers`: a module's own config,
    so generic keys like `heads` are read from it and not from an unrelated model's settings."""
    markers = tuple(markers)
    if depth > 5 or not isinstance(obj, Mapping):
        return None
    if any(isinstance(m, str) and m in obj for m in markers):
        return obj
    for value in obj.values():
        found = find_config_dict(value, markers, depth + 1)
        if found is not None:
            return found
    return None


@dataclass(frozen=True)
class Format:
    """A checkpoint family: `detect` looks at the keys, `build` makes the Quantizer.

    `partial` says why a file that carries this family's marks is not one it can open (a part is
    missing), or None: detection stops there with that message, instead of handing the file to a
    more general family that would read it another way.
    """

    name: str
    description: str
    detect: Callable[[Checkpoint], bool]
    build: Callable[[Checkpoint], Quantizer]
    partial: Callable[[Checkpoint], str | None] | None = None


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
    inner = obj
    wrappers: list[str] = []
    for depth in range(3):  # e.g. audiocraft's best_state -> model
        order = _AUDIOCRAFT_WRAPPERS if depth == 0 and "xp.cfg" in obj else WRAPPER_KEYS
        wrapper = next((k for k in order if isinstance(inner.get(k), Mapping) and inner[k]), None)
        if wrapper is None or _has_tensors_at_top(inner):
            break
        wrappers.append(wrapper)
        inner = inner[wrapper]
    top_wrapper = wrappers[0] if wrappers else None
    # Beside a walked wrapper, one-number tensors are metadata (a `global_step` saved as a tensor).
    meta = {str(k): plain_config(v) for k, v in obj.items()
            if k != top_wrapper and (not isinstance(v, torch.Tensor) or (wrappers and v.numel() == 1))}
    state = flatten_tensors(inner)
    if not state:
        raise LoadError("no tensors found in the file", path)
    return Checkpoint(path, state, meta, wrappers=wrappers)


def _has_tensors_at_top(obj: Mapping) -> bool:
    """Weights at this level (a state dict), not just a number kept as a tensor beside a wrapper."""
    return any(isinstance(v, torch.Tensor) and v.numel() > 1 for v in obj.values())


def check_codebook(table: torch.Tensor, layer: int, path: Path) -> None:
    """A codebook table must be a finite, non-empty [K, D] matrix."""
    if not isinstance(table, torch.Tensor):
        raise LoadError(f"layer {layer}: codebook is not a tensor", path)
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


def float_tensor(ckpt: Checkpoint, key: str, shape: tuple | None = None, what: str | None = None,
                 required: bool = True) -> torch.Tensor | None:
    """`state[key]` as finite float32, checked against `shape` (None entries match any size)."""
    value = ckpt.state.get(key)
    if value is None:
        if required:
            raise LoadError(f"missing key {key!r}", ckpt.path)
        return None
    name = what or key
    if not value.dtype.is_floating_point:
        raise LoadError(f"{name} has dtype {value.dtype}, expected floats", ckpt.path)
    if shape is not None and (value.ndim != len(shape) or
                              any(s is not None and s != d for s, d in zip(shape, value.shape))):
        want = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
        raise LoadError(f"{name} has shape {list(value.shape)}, expected {want}", ckpt.path)
    if value.numel() == 0:
        raise LoadError(f"{name} is empty (shape {list(value.shape)})", ckpt.path)
    value = value.detach().float()
    if not torch.isfinite(value).all():
        raise LoadError(f"{name} holds NaN or infinite values", ckpt.path)
    return value


def flag_value(value: torch.Tensor | None) -> bool | None:
    """A stored flag buffer (`inited` [1] float, `initted` 0-dim bool or [1] float) as a bool."""
    if value is None or not isinstance(value, torch.Tensor) or value.numel() == 0:
        return None
    first = float(value.detach().flatten()[0].float())
    if math.isnan(first):
        return None
    return first != 0.0


def layer_indices(found: Iterable[int], what: str, path: Path) -> list[int]:
    """Sorted layer numbers, which must be exactly 0..n-1."""
    indices = sorted(set(found))
    if indices != list(range(len(indices))):
        raise LoadError(f"{what}: layers are not numbered 0..{len(indices) - 1}: {indices[:12]}", path)
    return indices
