"""A loaded residual quantizer seen as frames in, codes out: what loaders build and the audit consumes.

`Quantizer` implements the EnCodec / GPT-SoVITS rule (plain Euclidean lookup, residual minus the
codeword). Formats with another rule subclass it, override `lookup` and `layer_output`, and declare
`plain_residual = False` so engines do not take the in-place fast path meant for the plain rule.
Nothing here runs a peer's `forward`, so a loaded codebook is never changed by k-means or EMA.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Iterator

import torch

from .family import VQ, Family
from .search import nearest_codes, squared_norms


@dataclass(frozen=True)
class DeadCodeRule:
    """How a format declares a code EMA-dead: `absolute` (cluster size < value, EnCodec's 2) or
    `relative` (usage < value * total / K, Moshi's 0.1)."""

    kind: str = "absolute"
    value: float = 2.0
    origin: str = ""   # whose rule this is, e.g. "Moshi/Mimi": said in `describe()`

    def dead_mask(self, cluster_size: torch.Tensor) -> torch.Tensor:
        if self.kind == "relative":
            return cluster_size < self.value * cluster_size.sum() / cluster_size.numel()
        return cluster_size < self.value

    def describe(self) -> str:
        if self.kind == "relative":
            text = f"EMA usage < {self.value:g} x uniform share"
        else:
            text = f"EMA cluster size < {self.value:g}"
        return f"{text} ({self.origin} rule)" if self.origin else text


@dataclass
class LayerStep:
    """What one layer did to a block of frames."""

    index: int
    codes: torch.Tensor      # [N] (see `Quantizer.layer_strides` / `codes_per_frame` for other counts)
    output: torch.Tensor     # [N, D'] the layer's contribution in the residual space
    residual: torch.Tensor   # [N, D'] what is left after this layer


@dataclass
class Quantizer:
    """Residual quantizer over frames. `codebooks[i]` is layer i's [K, Dc] table in float32.

    `transform` maps one contiguous sequence of input frames [T, dim] to the space the residual lives
    in (GPT-SoVITS's ssl_proj, a project_in); `frame_stride` is how many input frames make one code
    frame, so callers cut sequences only at multiples of it.
    """

    # True when a layer's output is its codebook row and the residual is input minus output: engines may
    # then run the layers in place (`rvq_viewer.analysis.audit.engine`). Subclasses with another rule
    # declare False.
    plain_residual = True
    # What kind of quantizer this is (`rvq_viewer.quant.family`): clients read it instead of testing classes.
    family: ClassVar[Family] = VQ
    # Tables per layer: a layer whose frames hold several slots with a table each (vector-quantize-pytorch
    # separate codebooks per head, groups; FSQ/LFQ num_codebooks) stores them one after another, code
    # t*K + k for table t. Usage is per table, never pooled (vector-quantize-pytorch #109).
    n_tables = 1

    format: str
    codebooks: list[torch.Tensor]
    cluster_size: list[torch.Tensor] | None = None
    dead_code_rule: DeadCodeRule = field(default_factory=DeadCodeRule)
    input_dim: int | None = None
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None
    frame_stride: int = 1
    notes: list[str] = field(default_factory=list)
    source: str = ""

    def __post_init__(self):
        self.codebooks = [c.detach().float().contiguous() for c in self.codebooks]
        if self.cluster_size is not None:
            self.cluster_size = [c.detach().float() for c in self.cluster_size]
        self._sq_norms = [squared_norms(c) for c in self.codebooks]

    # --- shape ------------------------------------------------------------------------------------
    @property
    def n_q(self) -> int:
        return len(self.codebooks)

    @property
    def codebook_size(self) -> int:
        return int(self.codebooks[0].shape[0])

    @property
    def codebook_sizes(self) -> list[int]:
        return [int(c.shape[0]) for c in self.codebooks]

    @property
    def layer_strides(self) -> list[int]:
        """Residual frames per code of each layer: 1 everywhere except multi-rate quantizers (SNAC),
        whose layer i codes one frame per `layer_strides[i]` frames of the residual."""
        return [1] * self.n_q

    @property
    def codes_per_frame(self) -> int:
        """Codes each layer emits per residual frame (1; vector-quantize-pytorch heads/groups emit
        several, flattened frame-major into `LayerStep.codes`)."""
        return 1

    def frames_per_layer(self, n_frames: int) -> list[int]:
        """How many codes each layer gives for `n_frames` residual frames."""
        return [(n_frames // s) * self.codes_per_frame for s in self.layer_strides]

    @property
    def dim(self) -> int:
        """Dimension of the feature frames this quantizer takes."""
        return self.input_dim if self.input_dim is not None else int(self.codebooks[0].shape[1])

    @property
    def has_ema(self) -> bool:
        return self.cluster_size is not None

    @property
    def device(self) -> torch.device:
        return self.codebooks[0].device

    def to(self, device: str | torch.device) -> "Quantizer":
        """A copy whose tables (and transform, via `_move`) live on `device`; self is left as it is,
        so a GUI can audit one loaded quantizer on two devices at once."""
        device = torch.device(device)
        if device == self.device:
            return self
        clone = copy.copy(self)
        clone.codebooks = [c.to(device) for c in self.codebooks]
        clone._sq_norms = [n.to(device) for n in self._sq_norms]
        if isinstance(self.transform, torch.nn.Module):
            clone.transform = copy.deepcopy(self.transform).to(device)
        clone._move(device)
        return clone

    def _move(self, device: torch.device) -> None:
        """Subclasses holding more tensors replace them with copies on `device` here."""

    def truncate(self, n_q: int) -> None:
        """Keep the first `n_q` layers (a codec run at a lower bandwidth)."""
        self.codebooks = self.codebooks[:n_q]
        self._sq_norms = self._sq_norms[:n_q]
        if self.cluster_size is not None:
            self.cluster_size = self.cluster_size[:n_q]

    # --- per-layer rule (override for other formats) ----------------------------------------------
    def lookup(self, layer: int, residual: torch.Tensor) -> torch.Tensor:
        return nearest_codes(residual, self.codebooks[layer], self._sq_norms[layer])

    def layer_output(self, layer: int, codes: torch.Tensor) -> torch.Tensor:
        return self.codebooks[layer][codes]

    # --- frames API -------------------------------------------------------------------------------
    def prepare(self, frames: torch.Tensor) -> torch.Tensor:
        """Input frames of one sequence [T, dim] -> frames in the residual space [T', D']."""
        frames = frames.to(self.device, torch.float32)
        if self.transform is None:
            return frames
        with torch.no_grad():
            return self.transform(frames)

    @torch.no_grad()
    def iter_layers(self, latent: torch.Tensor, n_q: int | None = None) -> Iterator[LayerStep]:
        """Run the layers over prepared frames, yielding each layer's codes, output and residual."""
        residual = latent
        for index in range(n_q or self.n_q):
            codes = self.lookup(index, residual)
            output = self.layer_output(index, codes)
            residual = residual - output
            yield LayerStep(index, codes, output, residual)

    def encode(self, frames: torch.Tensor, n_q: int | None = None) -> torch.Tensor:
        """Frames [N, dim] of one sequence -> codes [n_q, N'] (N' = N / frame_stride)."""
        latent = self.prepare(frames)
        return torch.stack([step.codes for step in self.iter_layers(latent, n_q)])

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes [n_q, N] -> the sum of the layers' outputs [N, D'] in the residual space."""
        codes = codes.to(self.device)
        out = self.layer_output(0, codes[0])
        for index in range(1, codes.shape[0]):
            out = out + self.layer_output(index, codes[index])
        return out

    def table_names(self) -> list[str]:
        """A name per table of a layer ("head 2", "group 1 head 0"); subclasses that know say which."""
        return [f"table {t}" for t in range(self.n_tables)]

    def family_params(self) -> dict:
        """What a family's statistics need beside the code counts (FSQ levels, LFQ bits), plain JSON."""
        out = {"family": self.family.name, "tables": int(self.n_tables)}
        if self.n_tables > 1:
            out["table_names"] = self.table_names()
        return out

    def display_codebook(self, layer: int) -> torch.Tensor:
        """Layer `layer`'s codes as the maps should place them (the stored rows here; implicit grids
        override this to show their cells through `project_out`)."""
        return self.codebooks[layer]

    def ema_dead_codes(self, layer: int) -> torch.Tensor | None:
        """Indices of codes the checkpoint's EMA statistics call dead, by this format's rule."""
        if self.cluster_size is None:
            return None
        return self.dead_code_rule.dead_mask(self.cluster_size[layer]).nonzero().flatten()

    def summary(self) -> dict:
        return {"format": self.format, "family": self.family.name, "n_q": self.n_q, "codebook_size": self.codebook_size,
                "dim": self.dim, "codebook_dim": int(self.codebooks[0].shape[1]),
                "ema_statistics": self.has_ema,
                "dead_code_rule": self.dead_code_rule.describe() if self.has_ema or self.family.learned
                else f"none: an implicit grid keeps no EMA statistics (see {self.family.unused})"}
