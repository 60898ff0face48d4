"""Devices: which to run on, how much memory a GPU has free, and what an out-of-memory error looks like."""

from __future__ import annotations

import torch


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """'auto' is the first CUDA device when there is one, else the CPU; 'cuda' means 'cuda:0'."""
    if device in (None, "auto", ""):
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("CUDA was asked for, but torch sees no CUDA device")
        index = 0 if device.index is None else device.index
        count = torch.cuda.device_count()
        if index >= count:
            raise ValueError(f"there is no {device}: torch sees {count} CUDA device(s)")
        return torch.device("cuda", index)
    if device.type != "cpu":
        raise ValueError(f"unsupported device {device} (use auto, cpu, cuda or cuda:N)")
    return device


def available_devices() -> list[str]:
    return ["auto", "cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]


def is_out_of_memory(exc: BaseException) -> bool:
    """torch's CUDA/CPU allocator failures (torch.OutOfMemoryError, or the older RuntimeError text)."""
    oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    if oom is not None and isinstance(exc, oom):
        return True
    if isinstance(exc, (RuntimeError, MemoryError)):
        text = str(exc).lower()
        return "out of memory" in text or "can't allocate memory" in text or isinstance(exc, MemoryError)
    return False


def release_cached_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def free_memory(device: torch.device) -> int | None:
    """Free bytes on a CUDA device (None elsewhere)."""
    if device.type != "cuda":
        return None
    try:
        free, _ = torch.cuda.mem_get_info(device)
    except Exception:  # noqa: BLE001 - no CUDA context or an old driver: no figure
        return None
    return int(free)
