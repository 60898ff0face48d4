"""How the monitor finds the codes in a quantizer module's own output: one small `Adapter` per family.

An adapter names the module classes it serves, which call returns the codes (`forward`, seen through a
forward hook; or a method such as HF's `encode`, for modules without a forward), where the codes sit in
that call's output and along which axis the layers run. Everything else (codebooks, EMA sizes, the
dead-code rule) the monitor reads from the module's state dict with rvq-viewer's own loaders
(`rvq_viewer.io.formats`), so a family that rvq-viewer loads needs only this. To add a family, append an
`Adapter` to `ADAPTERS` (first match wins; match on class names, never by importing the peer).

Codes come out as one flat int64 tensor per layer, in the layer's code numbering of the loaded
`Quantizer` (for vector-quantize-pytorch heads or groups with separate tables, table t's code k is
`t * K + k`, as `io/formats/vqpytorch.py` numbers them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

LAYERS_FIRST = "layers_first"       # [n_q, ...] (EnCodec, GPT-SoVITS, core_vq, HF encode)
BATCH_FIRST = "batch_first"         # [B, n_q, T] (audiocraft, moshi, DAC)
LAYERS_LAST = "layers_last"         # [..., n_q] (vector-quantize-pytorch ResidualVQ)
SINGLE = "single"                   # one layer, any shape (VectorQuantize; heads on the last axis)
GROUPED = "grouped"                 # [G, B, N, n_q] (vector-quantize-pytorch GroupedResidualVQ)
PER_LAYER_LIST = "list"             # a list of per-layer tensors (SNAC: one per level, of different lengths)


class AdapterError(ValueError):
    """The module's output does not hold codes where its adapter looks."""


def pick_codes(output: Any) -> Any:
    """The codes object of a call's output: `.codes` (QuantizedResult, RVQOutput), else item 1 of a tuple
    (every peer's tuple puts them second), else the output itself (an `encode` returning codes)."""
    codes = getattr(output, "codes", None)
    if codes is not None:
        return codes
    if isinstance(output, (tuple, list)) and not _is_code_list(output):
        if len(output) < 2:
            raise AdapterError(f"a {len(output)}-item output has no codes at index 1")
        return output[1]
    return output


def _is_code_list(value) -> bool:
    return isinstance(value, (tuple, list)) and bool(value) and all(
        isinstance(v, torch.Tensor) and not v.is_floating_point() for v in value)


def _integer(t: Any, what: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor) or t.is_floating_point() or t.is_complex():
        raise AdapterError(f"{what} is a {type(t).__name__ if not isinstance(t, torch.Tensor) else t.dtype}, "
                           "not integer codes")
    return t


def split_layers(codes: Any, layout: str, tables: list[int] | None = None, table_size: int | None = None
                 ) -> list[torch.Tensor]:
    """Per-layer flat code tensors from a codes object laid out as `layout`. `tables` (slot -> table) and
    `table_size` renumber codes of several tables per layer (vector-quantize-pytorch heads and groups)."""
    if layout == PER_LAYER_LIST:
        if not _is_code_list(codes):
            raise AdapterError("expected a list of per-layer code tensors")
        return [c.reshape(-1) for c in codes]
    codes = _integer(codes, "the codes")
    if layout == LAYERS_FIRST:
        return list(codes.reshape(codes.shape[0], -1)) if codes.dim() > 1 else [codes]
    if layout == BATCH_FIRST:
        if codes.dim() < 2:
            raise AdapterError(f"codes of shape {tuple(codes.shape)}: expected [B, n_q, T]")
        return list(codes.transpose(0, 1).reshape(codes.shape[1], -1))
    if layout == SINGLE:
        slots = codes.shape[-1] if tables is not None and len(tables) > 1 and codes.dim() > 1 else 1
        return [_renumber(codes.reshape(-1, slots), tables, table_size).reshape(-1)]
    if layout == LAYERS_LAST:
        return list(codes.reshape(-1, codes.shape[-1]).t())
    if layout == GROUPED:
        if codes.dim() < 2:
            raise AdapterError(f"codes of shape {tuple(codes.shape)}: expected [G, ..., n_q]")
        per_group = codes.reshape(codes.shape[0], -1, codes.shape[-1])        # [G, frames, n_q]
        slots = per_group.permute(2, 1, 0)                                    # [n_q, frames, G]
        return [_renumber(layer, tables, table_size).reshape(-1) for layer in slots]
    raise AdapterError(f"unknown code layout {layout!r}")


def _renumber(codes: torch.Tensor, tables: list[int] | None, table_size: int | None) -> torch.Tensor:
    """[frames, slots] codes of slot s -> `tables[s] * table_size + code` (one table: unchanged)."""
    if not tables or len(set(tables)) <= 1 or table_size is None:
        return codes
    shift = torch.tensor(tables, dtype=codes.dtype, device=codes.device)[: codes.shape[-1]] * table_size
    return codes + shift


@dataclass(frozen=True)
class Adapter:
    """One family's way to its codes. `classes` are module class names (`type(m).__name__`); `packages`,
    when given, must appear in the class's module path (names shared by several peers); `layout` says how
    the codes object is laid out, or `layout_of(module)` decides per instance."""

    family: str
    classes: tuple[str, ...]
    layout: str = LAYERS_FIRST
    method: str = "forward"
    packages: tuple[str, ...] = ()
    layout_of: Callable[[torch.nn.Module], str] | None = None
    load_options: Callable[[torch.nn.Module], dict] | None = None
    sizes: Callable[[torch.nn.Module], list[int]] | None = None   # codebook sizes before the loader can tell

    def matches(self, module: torch.nn.Module) -> bool:
        cls = type(module)
        if cls.__name__ not in self.classes:
            return False
        where = cls.__module__ or ""
        return not self.packages or any(p in where for p in self.packages)

    def layout_for(self, module: torch.nn.Module) -> str:
        return self.layout_of(module) if self.layout_of is not None else self.layout

    def options_for(self, module: torch.nn.Module) -> dict:
        return self.load_options(module) if self.load_options is not None else {}


def _snac_options(module) -> dict:
    strides = [int(getattr(q, "stride", 1)) for q in getattr(module, "quantizers", [])]
    return {"vq_strides": strides} if strides else {}


def _moshi_sizes(module) -> list[int]:
    """moshi initialises a codebook at its first training use: before that the loader cannot read it."""
    return [int(module.cardinality)] * int(module.total_codebooks)


ADAPTERS: list[Adapter] = [
    # audiocraft and moshi transpose the codes to [B, n_q, T]; EnCodec, GPT-SoVITS and SpeechTokenizer keep
    # [n_q, B, T]. All call their wrapper ResidualVectorQuantizer.
    Adapter("audiocraft", ("ResidualVectorQuantizer",), BATCH_FIRST, packages=("audiocraft",)),
    Adapter("moshi", ("ResidualVectorQuantizer", "SplitResidualVectorQuantizer"), BATCH_FIRST,
            packages=("moshi",), sizes=_moshi_sizes),
    Adapter("encodec", ("ResidualVectorQuantizer", "ResidualVectorQuantization"), LAYERS_FIRST),
    Adapter("vector-quantize-pytorch", ("ResidualVQ",), LAYERS_LAST),
    Adapter("vector-quantize-pytorch", ("GroupedResidualVQ",), GROUPED),
    Adapter("vector-quantize-pytorch", ("VectorQuantize",), SINGLE),
    # DAC and SNAC share the class name: SNAC returns a list of per-level codes (see `split_layers`).
    Adapter("snac", ("ResidualVectorQuantize",), PER_LAYER_LIST, packages=("snac",), load_options=_snac_options),
    Adapter("dac", ("ResidualVectorQuantize",), BATCH_FIRST),
    # Hugging Face transformers' codecs quantize in `encode` (no forward): codes [n_q, B, T].
    Adapter("encodec-hf", ("EncodecResidualVectorQuantizer",), LAYERS_FIRST, method="encode"),
    Adapter("mimi-hf", ("MimiSplitResidualVectorQuantizer", "MimiResidualVectorQuantizer"), LAYERS_FIRST,
            method="encode"),
]


def find_adapter(module: torch.nn.Module) -> Adapter | None:
    return next((a for a in ADAPTERS if a.matches(module)), None)


def extract(adapter: Adapter, module: torch.nn.Module, output: Any, tables: list[int] | None = None,
            table_size: int | None = None) -> list[torch.Tensor]:
    """Per-layer flat codes from `output`, a call of `module` (a list of code tensors is taken per layer
    whatever the declared layout, as SNAC returns)."""
    codes = pick_codes(output)
    layout = PER_LAYER_LIST if _is_code_list(codes) else adapter.layout_for(module)
    return split_layers(codes, layout, tables, table_size)
