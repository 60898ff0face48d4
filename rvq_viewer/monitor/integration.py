"""What the framework callbacks share: find the quantizer in the user's model, and make its monitor."""

from __future__ import annotations

from pathlib import Path

import torch

from .adapters import find_adapter
from .monitor import CodebookMonitor, MonitorError


def find_quantizer(model: torch.nn.Module, name: str | None = None) -> torch.nn.Module:
    """`model.<name>` (a dotted path such as "generator.quantizer"), or, without a name, the one module
    of `model` that the monitor knows (the outermost, so a residual stack wins over its layers)."""
    if name:
        module = model
        for part in name.split("."):
            if not hasattr(module, part):
                raise MonitorError(f"{type(model).__name__} has no module {name!r}")
            module = getattr(module, part)
        return module
    for _, module in model.named_modules():
        if find_adapter(module) is not None:
            return module
    raise MonitorError(f"no quantizer rvq-viewer knows inside {type(model).__name__}: name it (module=...)")


def make_monitor(run_dir: str | Path, model: torch.nn.Module, module: str | None, rank: int,
                 options: dict) -> CodebookMonitor:
    return CodebookMonitor(run_dir, rank=rank, **options).attach(find_quantizer(model, module))
