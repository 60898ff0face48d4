"""The shipped demo assets (made by scripts/make_demo.py): present, loadable, and telling their story."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from rvq_viewer.quant import ResidualVectorQuantization

DEMO = Path(__file__).resolve().parents[1] / "assets" / "demo"
PREFIX = "quantizer.vq."
BUFFERS = ("inited", "cluster_size", "embed", "embed_avg")
CHECKPOINTS = ["healthy.pt", "collapsed.pt"]


def series_paths() -> list[Path]:
    return sorted((DEMO / "series").glob("step_*.pt"))


def load_package(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def load_rvq(state_dict: dict) -> ResidualVectorQuantization:
    state = {k[len(PREFIX):]: v for k, v in state_dict.items()}
    n_q = len({k.split(".")[1] for k in state})
    k, dim = state["layers.0._codebook.embed"].shape
    rvq = ResidualVectorQuantization(num_quantizers=n_q, dim=dim, codebook_size=k)
    rvq.load_state_dict(state)
    return rvq.eval()


@pytest.fixture(scope="module")
def heldout() -> torch.Tensor:
    return torch.from_numpy(np.load(DEMO / "heldout.npy"))


def usage(path: Path, heldout: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-layer (utilization, perplexity) of a checkpoint on the held-out frames."""
    rvq = load_rvq(load_package(path)["state_dict"])
    with torch.no_grad():
        codes = rvq.encode(heldout.t().unsqueeze(0)).reshape(rvq.num_quantizers, -1)
    k = rvq.layers[0]._codebook.codebook_size
    utilization, perplexity = [], []
    for c in codes:
        p = torch.bincount(c, minlength=k).double() / c.numel()
        p = p[p > 0]
        utilization.append(p.numel() / k)
        perplexity.append(math.exp(-(p * p.log()).sum().item()))
    return utilization, perplexity


def test_files_exist_and_fit_the_budget():
    for name in [*CHECKPOINTS, "heldout.npy", "manifest.json", "README.md", "feature_norm.npz"]:
        assert (DEMO / name).is_file(), name
    assert len(series_paths()) >= 3
    assert len(list((DEMO / "features").glob("*.npy"))) >= 2
    total = sum(f.stat().st_size for f in DEMO.parents[0].rglob("*") if f.is_file())
    assert total < 25 * 2**20


@pytest.mark.parametrize("name", CHECKPOINTS + [f"series/{p.name}" for p in series_paths()])
def test_checkpoints_have_the_encodec_layout(name):
    package = load_package(DEMO / name)
    manifest = json.loads((DEMO / "manifest.json").read_text())
    n_q = manifest["runs"]["healthy"]["settings"]["n_q"]
    expected = {f"{PREFIX}layers.{i}._codebook.{b}" for i in range(n_q) for b in BUFFERS}
    state = package["state_dict"]
    assert set(state) == expected
    assert all(state[f"{PREFIX}layers.{i}._codebook.inited"].item() == 1 for i in range(n_q))
    assert state[f"{PREFIX}layers.0._codebook.embed"].shape == (512, 80)
    assert isinstance(package["step"], int) and package["step"] > 0
    assert set(package["config"]) >= {"n_q", "codebook_size", "kmeans_init", "threshold_ema_dead_code"}


def test_features_are_normalised_log_mel(heldout):
    assert heldout.dtype == torch.float32 and heldout.ndim == 2 and heldout.shape[1] == 80
    assert heldout.shape[0] > 2000
    assert abs(heldout.mean().item()) < 0.3 and 0.7 < heldout.std().item() < 1.3
    for path in (DEMO / "features").glob("*.npy"):
        utt = np.load(path)
        assert utt.dtype == np.float32 and utt.ndim == 2 and utt.shape[1] == 80 and utt.shape[0] > 50


def test_healthy_is_used_and_collapsed_is_not(heldout):
    # Measured when the assets were made: healthy 0.91-1.00 utilization, perplexity 280-422;
    # collapsed 0.04-0.13, perplexity 12-46.
    util_h, ppl_h = usage(DEMO / "healthy.pt", heldout)
    util_c, ppl_c = usage(DEMO / "collapsed.pt", heldout)
    assert min(util_h) > 0.8 and min(ppl_h) > 200
    assert max(util_c) < 0.3 and max(ppl_c) < 100
    assert all(h > 4 * c for h, c in zip(util_h, util_c))


def test_manifest_matches_the_checkpoints(heldout):
    manifest = json.loads((DEMO / "manifest.json").read_text())
    for run in ("healthy", "collapsed"):
        util, _ = usage(DEMO / f"{run}.pt", heldout)
        assert np.allclose(util, manifest["runs"][run]["heldout"]["utilization"], atol=1e-3)
    assert manifest["runs"]["healthy"]["events"] > 0
    assert manifest["runs"]["collapsed"]["events"] == 0
    assert manifest["data"]["heldout_frames"] == heldout.shape[0]


def test_series_steps_increase_with_events():
    steps = [load_package(p)["step"] for p in series_paths()]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)
    assert [int(p.stem.split("_")[1]) for p in series_paths()] == steps
    manifest = json.loads((DEMO / "manifest.json").read_text())
    series = manifest["runs"]["healthy"]["series"]
    assert [c["step"] for c in series] == steps
    events = [c["events_so_far"] for c in series]
    assert events[0] > 0 and events == sorted(events)
