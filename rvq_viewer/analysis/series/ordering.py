"""A training run's saved checkpoints, in training order: by the step stored in each file, else by the
number in its name, else alphabetically (and the order says which)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from ...errors import LoadError
from ...io import detect_format, read_checkpoint
from ...quant import Quantizer

CHECKPOINT_EXTENSIONS = (".pt", ".pth", ".ckpt", ".th", ".bin", ".safetensors")
STEP_KEYS = ("step", "global_step", "iteration", "epoch")
SOVITS_INFO = re.compile(r"(\d+)epoch_(\d+)iteration")


@dataclass
class SeriesEntry:
    path: Path
    step: int
    quantizer: Quantizer


@dataclass
class Series:
    entries: list[SeriesEntry]
    order: str   # how the steps were found, said to the user

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


def stored_step(meta: dict) -> tuple[int, str] | None:
    """The training step a checkpoint records about itself, and under which key."""
    info = meta.get("info")
    if isinstance(info, str) and (match := SOVITS_INFO.search(info)):
        return int(match[2]), "info"
    for key in STEP_KEYS:
        value = meta.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return int(value), key
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            return int(value.item()), key
    return None


def name_number(path: Path) -> int | None:
    numbers = re.findall(r"\d+", path.stem)
    return int(numbers[-1]) if numbers else None


def open_series(paths: list[str | Path], **load_options) -> Series:
    """Load every checkpoint and order them by stored step, else by the number in the file name."""
    loaded = []
    for path in list_checkpoints(paths):
        ckpt = read_checkpoint(path, **load_options)
        loaded.append((path, stored_step(ckpt.meta), detect_format(ckpt).build(ckpt)))
    if all(step is not None for _, step, _ in loaded):
        keys = sorted({step[1] for _, step, _ in loaded})
        order = f"training step stored in the files ({', '.join(keys)})"
        entries = [SeriesEntry(p, s[0], q) for p, s, q in loaded]
    elif all(name_number(p) is not None for p, _, _ in loaded):
        order = "number in the file names (no step stored in every file)"
        entries = [SeriesEntry(p, name_number(p), q) for p, _, q in loaded]
    else:
        order = "file names, alphabetically (no step stored and no number in every name)"
        entries = [SeriesEntry(p, i, q) for i, (p, _, q) in enumerate(sorted(loaded, key=lambda t: t[0].name))]
    entries.sort(key=lambda e: (e.step, e.path.name))
    _check_compatible(entries)
    return Series(entries, order)


def _check_compatible(entries: list[SeriesEntry]) -> None:
    first = entries[0].quantizer
    for entry in entries[1:]:
        q = entry.quantizer
        if q.codebook_sizes != first.codebook_sizes or q.codebooks[0].shape[1] != first.codebooks[0].shape[1]:
            raise LoadError(f"not the same quantizer as {entries[0].path.name}: n_q/K/D differ", entry.path)
