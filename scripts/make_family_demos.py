"""Build an FSQ and an LFQ demo quantizer on the bundled demo's speech features (assets/demo/heldout.npy).

    .venv/bin/python scripts/make_family_demos.py OUT_DIR
    .venv/bin/rvq-viewer OUT_DIR/fsq_demo.pt assets/demo/heldout.npy --levels 8,5,5,5
    .venv/bin/rvq-viewer OUT_DIR/lfq_demo.pt assets/demo/heldout.npy

Both are saved as vector-quantize-pytorch users save them (a whole model's `state_dict()`, the quantizer
under `quantizer.`), built with torch only: `project_in` maps the 80 log-mel bins onto principal
directions of the features, scaled to fill the bound, so most of the grid is used. Each carries one
deliberate flaw for the diagnosis to find:
- FSQ (levels 8,5,5,5): dimension 3 keeps a tenth of its scale, so it uses about two of its five levels;
- LFQ (14 bits, 16,384 codes): bit 13 always set (a dead bit), bits 11 and 12 read the same direction.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
FEATURES = ROOT / "assets" / "demo" / "heldout.npy"
FSQ_LEVELS = (8, 5, 5, 5)
LFQ_BITS = 14


def principal_directions(x: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, the top `count` unit directions [count, D], the spread along each)."""
    mean = x.mean(axis=0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    return mean, vt[:count], s[:count] / np.sqrt(len(x) - 1)


def model_state(prefix: str, weight: np.ndarray, bias: np.ndarray, dim: int, extra: dict | None = None) -> dict:
    """A small user model: an encoder, the quantizer's project_in / project_out under `prefix`, a decoder."""
    g = torch.Generator().manual_seed(0)
    state = {"encoder.weight": torch.randn(dim, dim, generator=g) / dim ** 0.5, "encoder.bias": torch.zeros(dim),
             prefix + "project_in.weight": torch.from_numpy(weight).float(),
             prefix + "project_in.bias": torch.from_numpy(bias).float(),
             # project_out: the pseudo-inverse, so the map shows cells where they land in feature space
             prefix + "project_out.weight": torch.from_numpy(np.linalg.pinv(weight)).float(),
             prefix + "project_out.bias": torch.zeros(dim),
             "decoder.weight": torch.randn(dim, dim, generator=g) / dim ** 0.5, "decoder.bias": torch.zeros(dim)}
    state.update(extra or {})
    return state


def build(out: Path, features: Path = FEATURES) -> dict[str, Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    x = np.load(features).astype(np.float64)
    dim = x.shape[1]

    # FSQ: tanh(z) spreads over the levels when z has unit-ish spread.
    mean, dirs, spread = principal_directions(x, len(FSQ_LEVELS))
    scale = 1.2 / spread
    scale[3] *= 0.1
    weight = dirs * scale[:, None]
    bias = -weight @ mean
    torch.save(model_state("quantizer.", weight, bias, dim), out / "fsq_demo.pt")

    # LFQ: centred directions give balanced bits; the flaws are one constant bit and one repeated one.
    mean, dirs, spread = principal_directions(x, LFQ_BITS)
    weight = dirs / spread[:, None]
    weight[12] = weight[11] * 1.05
    bias = -weight @ mean
    weight[13] = 0.0
    bias[13] = 1.0
    mask = {"quantizer.mask": 2 ** torch.arange(LFQ_BITS - 1, -1, -1)}
    torch.save(model_state("quantizer.", weight, bias, dim, mask), out / "lfq_demo.pt")
    return {"fsq": out / "fsq_demo.pt", "lfq": out / "lfq_demo.pt", "features": Path(features)}


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__.strip().splitlines()[2])
    for name, path in build(Path(sys.argv[1])).items():
        print(f"{name}: {path}")
