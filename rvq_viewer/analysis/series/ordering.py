"""A training run's saved checkpoints, in training order: by the step stored in each file, else by the
number in its name, else by the epoch stored in each file, else alphabetically (and the order says which).

Each project means something of its own by its keys: rvq-viewer's trainer writes `step`, Lightning
`global_step` and `epoch`; GPT-SoVITS's exports say "<epoch>epoch_<step>iteration" in `info`, but its
training checkpoints (`utils.save_checkpoint`: {"model", "iteration", "optimizer", "learning_rate"},
saved as G_<global step>.pth) hold the EPOCH under `iteration`, so their step is the number in the name.

Files in the series that hold no quantizer (GPT-SoVITS's D_*.pth discriminators beside its G_*.pth)
are skipped with a warning naming them, as long as two or more others hold one.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ...errors import LoadError
from ...io.checkpoints import NoQuantizerError, open_quantizer
from ...quant import Quantizer

CHECKPOINT_EXTENSIONS = (".pt", ".pth", ".ckpt", ".th", ".bin", ".safetensors")
STEP_KEYS = ("step", "global_step", "iteration")
EPOCH_KEYS = ("epoch",)
SOVITS_INFO = re.compile(r"(\d+)epoch_(\d+)iteration")
# What GPT-SoVITS's utils.save_checkpoint stores beside the "model" state.
SOVITS_TRAINING_META = frozenset({"iteration", "optimizer", "learning_rate"})


@dataclass
class SeriesEntry:
    path: Path
    step: int
    quantizer: Quantizer


@dataclass
class Series:
    entries: list[SeriesEntry]
    order: str   # how the steps were found, said to the user
    warnings: list[str] = field(default_factory=list)   # skipped files, stored steps that were not numbers
    skipped: list[Path] = field(default_factory=list)   # files that hold no quantizer

    @property
    def steps(self) -> list[int]:
        return [e.step for e in self.entries]


def list_checkpoints(paths: list[str | Path]) -> list[Path]:
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in CHECKPOINT_EXTENSIONS)
            if not found:
                raise LoadError("no checkpoint files in this folder", path)
            files.extend(found)
        else:
            files.append(path)
    if len(files) < 2:
        raise LoadError("a series needs at least two checkpoints", paths[0] if paths else None)
    return files


def is_sovits_training_checkpoint(meta: dict, fmt: str | None) -> bool:
    """GPT-SoVITS's G_*.pth, whose `iteration` is the epoch."""
    return fmt == "gpt-sovits" and SOVITS_TRAINING_META <= set(meta) and "info" not in meta


def stored_step(meta: dict, fmt: str | None = None) -> tuple[int, str] | None:
    """The training step a checkpoint records about itself, and under which key (`fmt`, the format
    the file was read as, tells whose meaning the keys have)."""
    info = meta.get("info")
    if isinstance(info, str) and (match := SOVITS_INFO.search(info)):
        return int(match[2]), "info"
    keys = () if is_sovits_training_checkpoint(meta, fmt) else STEP_KEYS
    return _first_number(meta, keys)


def stored_epoch(meta: dict, fmt: str | None = None) -> tuple[int, str] | None:
    """The epoch a checkpoint records, and under which key."""
    info = meta.get("info")
    if isinstance(info, str) and (match := SOVITS_INFO.search(info)):
        return int(match[1]), "info"
    if is_sovits_training_checkpoint(meta, fmt):
        return _first_number(meta, ("iteration",))
    return _first_number(meta, EPOCH_KEYS)


def _number(value: Any) -> float | None:
    """A stored count as a float (NaN and infinities included), or None when it is not a number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.dtype.is_complex:
        return float(value.detach().reshape(()).item())
    return None


def _first_number(meta: dict, keys) -> tuple[int, str] | None:
    for key in keys:
        number = _number(meta.get(key))
        if number is not None and math.isfinite(number):
            return int(number), key
    return None


def _not_finite(meta: dict, path: Path) -> str | None:
    for key in STEP_KEYS + EPOCH_KEYS:
        number = _number(meta.get(key))
        if number is not None and not math.isfinite(number):
            return f"{path.name}: its stored {key} is {number} (not a finite number), so it is not used"
    return None


def name_number(path: Path) -> int | None:
    numbers = re.findall(r"\d+", path.stem)
    return int(numbers[-1]) if numbers else None


@dataclass
class _Loaded:
    path: Path
    quantizer: Quantizer
    step: tuple[int, str] | None
    epoch: tuple[int, str] | None
    sovits_training: bool


def open_series(paths: list[str | Path], **load_options) -> Series:
    """Load every checkpoint and order them by stored step, else by the number in the file name."""
    loaded: list[_Loaded] = []
    warnings: list[str] = []
    skipped: list[tuple[Path, NoQuantizerError]] = []
    for path in list_checkpoints(paths):
        try:
            quantizer, ckpt = open_quantizer(path, **load_options)
        except NoQuantizerError as exc:
            skipped.append((path, exc))
            continue
        fmt = quantizer.format
        if (problem := _not_finite(ckpt.meta, path)) is not None:
            warnings.append(problem)
        loaded.append(_Loaded(path, quantizer, stored_step(ckpt.meta, fmt), stored_epoch(ckpt.meta, fmt),
                              is_sovits_training_checkpoint(ckpt.meta, fmt)))
    if skipped:
        if len(loaded) < 2:
            path, exc = skipped[0]
            raise LoadError(f"{len(skipped)} of the {len(skipped) + len(loaded)} files hold no quantizer, which "
                            f"leaves {len(loaded)}: a series needs at least two ({path.name}: {exc.reason})",
                            path.parent)
        warnings[:0] = [f"{path.name}: skipped, it holds no quantizer ({exc.reason})" for path, exc in skipped]
    order, steps = _order(loaded)
    entries = [SeriesEntry(item.path, step, item.quantizer) for item, step in zip(loaded, steps)]
    entries.sort(key=lambda e: (e.step, e.path.name))
    _check_compatible(entries)
    return Series(entries, order, warnings, [path for path, _ in skipped])


def _order(loaded: list[_Loaded]) -> tuple[str, list[int]]:
    """How to order the files, said to the user, and each file's step."""
    if all(item.step is not None for item in loaded):
        keys = sorted({item.step[1] for item in loaded})
        return f"training step stored in the files ({', '.join(keys)})", [item.step[0] for item in loaded]
    numbers = [name_number(item.path) for item in loaded]
    if all(n is not None for n in numbers):
        if all(item.sovits_training for item in loaded):
            return ("training step in the file names (GPT-SoVITS names its training checkpoints G_<step>.pth; "
                    "the `iteration` they store is the epoch)"), numbers
        return "number in the file names (no step stored in every file)", numbers
    if all(item.epoch is not None for item in loaded):
        keys = sorted({item.epoch[1] for item in loaded})
        what = "GPT-SoVITS's iteration, the epoch" if keys == ["iteration"] else ", ".join(keys)
        return f"epoch stored in the files ({what}; no step stored and no number in every name)", \
            [item.epoch[0] for item in loaded]
    by_name = sorted(range(len(loaded)), key=lambda i: loaded[i].path.name)
    steps = [0] * len(loaded)
    for rank, index in enumerate(by_name):
        steps[index] = rank
    return "file names, alphabetically (no step stored and no number in every name)", steps


def _check_compatible(entries: list[SeriesEntry]) -> None:
    first = entries[0].quantizer
    for entry in entries[1:]:
        q = entry.quantizer
        if q.codebook_sizes != first.codebook_sizes or q.codebooks[0].shape[1] != first.codebooks[0].shape[1]:
            raise LoadError(f"not the same quantizer as {entries[0].path.name}: n_q/K/D differ", entry.path)
