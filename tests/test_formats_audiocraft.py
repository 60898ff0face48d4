"""audiocraft training checkpoints: a pickled OmegaConf DictConfig under `xp.cfg`, and the best and
latest models side by side.

The quantizer is audiocraft 1.3.0's own `ResidualVectorQuantizer` (from the registry, --no-deps; its
quantization files run by path). The checkpoint is written by flashy 0.0.2's own `StateManager`
(`flashy/state.py`, run by path) and `write_and_rename`, as audiocraft's solvers do; the solver itself
cannot be built here (it needs dora, hydra, xformers and an older torch), so the few lines that
register its state are re-created: flashy's BaseSolver registers `history`, `xp.cfg`, `xp.sig`,
audiocraft's StandardSolver `best_state`, `fsdp_best_state` and `ema`, its CompressionSolver
`model`, `optimizer` and `adv_losses`; `checkpoint._safe_save_checkpoint` on rank 0 is torch.save
into write_and_rename. The config is a real DictConfig (omegaconf from the registry).
"""

from __future__ import annotations

import copy
import pickle
import types

import pytest
import torch
from omegaconf import OmegaConf

from fixtures_formats import audiocraft_quantization, fill_encodec_rvq, flashy_modules
from rvq_viewer.errors import UnsafeFileError
from rvq_viewer.io import load_quantizer, read_checkpoint

DIM, BINS, N_Q = 32, 64, 4


class CompressionModel(torch.nn.Module):
    """An EncodecModel's attribute names: `quantizer` is audiocraft's ResidualVectorQuantizer."""

    def __init__(self, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.encoder = torch.nn.Conv1d(1, DIM, 7)
        self.quantizer = audiocraft_quantization().ResidualVectorQuantizer(dimension=DIM, n_q=N_Q, bins=BINS)
        fill_encodec_rvq(self.quantizer.vq, torch.Generator().manual_seed(seed))
        self.eval()

    def codes(self, frames: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.quantizer.encode(frames.t().unsqueeze(0))[0]


def xp_config():
    return OmegaConf.create({"sample_rate": 24000, "channels": 1, "compression_model": "encodec",
                             "rvq": {"n_q": N_Q, "bins": BINS, "decay": 0.99, "kmeans_init": True},
                             "encodec": {"ratios": [8, 5, 4, 2], "causal": False},
                             "optim": {"epochs": 200, "lr": 3e-4}, "dataset": {"segment_duration": None},
                             "checkpoint": {"save_last": True, "save_every": None}})


def solver_checkpoint(path, best: CompressionModel | None, latest: CompressionModel) -> None:
    """A CompressionSolver's `checkpoint.th`, gathered by flashy's StateManager and written the way
    audiocraft's `_safe_save_checkpoint` does on rank 0."""
    state_module, utils_module = flashy_modules()
    solver = types.SimpleNamespace(
        history=[{"train": {"l1": 0.3}, "valid": {"sisnr": 4.0}}] * 3,
        xp=types.SimpleNamespace(cfg=xp_config(), sig="97d170e1"),
        best_state={"model": copy.deepcopy(best.state_dict())} if best is not None else {},
        fsdp_best_state={}, ema=None, model=latest, adv_losses=torch.nn.ModuleDict(),
        optimizer=torch.optim.Adam(latest.parameters(), lr=3e-4))
    stateful = state_module.StateManager()
    for name in ("history", "xp.cfg", "xp.sig", "best_state", "fsdp_best_state", "model", "optimizer",
                 "adv_losses", "ema"):
        owner = solver
        *parents, leaf = name.split(".")
        for part in parents:
            owner = getattr(owner, part)
        stateful.register(name, state_module.AttributeWrapper(owner, leaf), write_only=name.startswith("xp."))
    with utils_module.write_and_rename(path) as f:
        torch.save(stateful.state_dict(), f)


@pytest.fixture(scope="module")
def models():
    return CompressionModel(1), CompressionModel(2)


def frames():
    return torch.randn(200, DIM, generator=torch.Generator().manual_seed(3)) * 2


def test_training_checkpoint_with_a_dict_config_opens(tmp_path, models):
    best, latest = models
    path = tmp_path / "checkpoint.th"
    solver_checkpoint(path, best, latest)
    ckpt = read_checkpoint(path)
    # The DictConfig reads as the YAML it came from; no omegaconf code ran to build it.
    assert ckpt.meta["xp.cfg"]["rvq"] == {"n_q": N_Q, "bins": BINS, "decay": 0.99, "kmeans_init": True}
    assert ckpt.meta["xp.cfg"]["encodec"]["ratios"] == [8, 5, 4, 2]
    quantizer = load_quantizer(path)
    assert quantizer.format == "audiocraft" and quantizer.n_q == N_Q
    assert any("the quantizer of best_state.model (what audiocraft's own loader takes)" in n for n in quantizer.notes)
    assert any("xp.cfg: sample_rate=24000, channels=1" in n for n in quantizer.notes)
    x = frames()
    assert torch.equal(quantizer.encode(x), best.codes(x))
    assert not torch.equal(best.codes(x), latest.codes(x))


def test_before_the_first_best_state_the_latest_model_is_used(tmp_path, models):
    _, latest = models
    path = tmp_path / "checkpoint.th"
    solver_checkpoint(path, None, latest)
    quantizer = load_quantizer(path)
    assert any("no best state saved yet: the latest `model`" in n for n in quantizer.notes)
    x = frames()
    assert torch.equal(quantizer.encode(x), latest.codes(x))


class CallsEval:
    """Unpickling this calls the builtin `eval` (written as `__builtin__ eval`, reported as 'eval')."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (eval, (f"open({self.marker!r}, 'w')",))


def test_a_builtin_function_is_still_refused_by_its_full_name(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.th"
    torch.save({"xp.cfg": xp_config(), "model": {"x": CallsEval(marker)}}, path, pickle_protocol=2)
    with pytest.raises(UnsafeFileError, match="asks to build 'builtins.eval'"):
        load_quantizer(path)
    assert not marker.exists()
    path.write_bytes(pickle.dumps({"w": CallsEval(marker)}, protocol=2))
    with pytest.raises(UnsafeFileError):
        load_quantizer(path)
    assert not marker.exists()


def test_builtin_types_in_metadata_are_the_real_ones(tmp_path):
    """Protocol 2 (torch.save's) writes a set as a call of `__builtin__ set`, and OmegaConf refers to
    `dict`, `list` and `bytes` as node types: sets come back as sets, the type references load."""
    meta = {"tags": {"a", "b"}, "frozen": frozenset({1}), "cfg": OmegaConf.create({"x": b"raw", "y": [1, 2]})}
    torch.save({"model": {"quantizer.vq.layers.0._codebook.embed": torch.randn(8, 4)}, **meta},
               tmp_path / "m.th")
    ckpt = read_checkpoint(tmp_path / "m.th")
    assert ckpt.meta["tags"] == {"a", "b"} and ckpt.meta["frozen"] == frozenset({1})
    assert ckpt.meta["cfg"]["y"] == [1, 2]
