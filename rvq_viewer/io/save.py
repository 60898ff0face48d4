"""Writing files atomically, and saving quantizers in the EnCodec / GPT-SoVITS layout."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

# Keys of the saved state: what EnCodec's `ResidualVectorQuantizer` holds under a model's `quantizer.`.
QUANTIZER_PREFIX = "quantizer.vq."


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it over `path` only if the block succeeds.

    A crash or an error mid-write leaves the old file (or none), never a half-written one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual permissions
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once at import: os.umask is process-wide, so toggling it later could race with other threads.
_UMASK = _read_umask()


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def save_checkpoint(path: str | Path, rvq: nn.Module, step: int | None = None,
                    config: dict | None = None) -> None:
    """Save a `ResidualVectorQuantization` as `{"state_dict": {"quantizer.vq.layers.{i}._codebook.*"},
    "step": int, "config": dict}`: the keys EnCodec and GPT-SoVITS use, loadable with weights_only."""
    state = {QUANTIZER_PREFIX + k: v.detach().cpu().clone() for k, v in rvq.state_dict().items()}
    package = {"state_dict": state}
    if step is not None:
        package["step"] = int(step)
    if config is not None:
        package["config"] = dict(config)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        # Through a file object: torch.save(path) would store the random temporary name in the archive,
        # so the same state would give different bytes on every save.
        torch.save(package, fh)
