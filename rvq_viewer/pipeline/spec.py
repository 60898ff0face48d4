"""What an audit is asked to do, as one value every client builds the same way.

An `AuditSpec` names the checkpoint and how to load it, the feature files and how to read them, the
device, which statistics to gather and the dead-code threshold. Two clients with equal specs get equal
answers: the CLI, the app, the report and the tests all go through `rvq_viewer.pipeline` with one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

# Frames read and encoded per chunk. Large enough for the CPU workers (eight pieces of 2,048 rows);
# the app's redraw is throttled separately, so it needs no smaller chunks.
CHUNK_FRAMES = 16384


@dataclass(frozen=True)
class LoadOptions:
    """How to read the checkpoint (see `rvq_viewer.io.load_quantizer`)."""

    format: str | None = None            # force a family instead of detecting it
    n_q: int | None = None               # keep the first n_q layers
    skip_transform: bool = False         # features are already projected (GPT-SoVITS after ssl_proj)
    cosine: bool | None = None           # vector-quantize-pytorch lookup (None: from config or detected)
    heads: int | None = None             # vector-quantize-pytorch heads sharing one codebook
    vq_strides: tuple[int, ...] | None = None   # SNAC level strides
    base: Path | None = None             # GPT-SoVITS v3/v4 LoRA: the base model holding ssl_proj
    levels: tuple[int, ...] | str | None = None  # FSQ levels (8, 5, 5, 5), or a Stable Codec preset name
    stages: int | None = None            # residual FSQ stages (vector-quantize-pytorch ResidualFSQ)

    def __post_init__(self):
        if isinstance(self.levels, list):   # frozen and hashable: a list given by a client becomes a tuple
            object.__setattr__(self, "levels", tuple(self.levels))

    def kwargs(self) -> dict:
        out = {"format": self.format, "n_q": self.n_q, "skip_transform": self.skip_transform}
        for name in ("cosine", "heads", "vq_strides", "base", "levels", "stages"):
            value = getattr(self, name)
            if value is not None:
                out[name] = list(value) if isinstance(value, tuple) else value
        return out


@dataclass(frozen=True)
class AuditSpec:
    """One audit: a checkpoint on feature files. Paths are kept as given (messages name them so)."""

    checkpoint: Path
    features: tuple[Path, ...] = ()
    load: LoadOptions = field(default_factory=LoadOptions)
    layout: str | None = None            # TD, DT, BDT, BTD for ambiguous array shapes
    key: str | None = None               # array name inside .npz / .safetensors / .pt dict files
    pack: bool | None = None             # join short files into full chunks (None: where frame_stride is 1)
    chunk_frames: int = CHUNK_FRAMES
    device: str = "auto"
    batch: int | None = None             # most frames encoded at once on a GPU (None: from free memory)
    pairs: bool = True                   # layer-pair statistics: stage redundancy and the input-rank reference
    verdicts: bool = True                # diagnose the finished audit
    ema_threshold: float | None = None   # EMA dead-code threshold (None: the format's or the checkpoint's)

    def __post_init__(self):
        object.__setattr__(self, "checkpoint", Path(self.checkpoint))
        object.__setattr__(self, "features", tuple(Path(p) for p in self.features))

    def read_paths(self) -> list[Path]:
        """The files and folders this audit reads as given (no output may be written over one)."""
        return [self.checkpoint, *([self.load.base] if self.load.base is not None else []), *self.features]

    def replace(self, **changes) -> "AuditSpec":
        return dataclasses.replace(self, **changes)
