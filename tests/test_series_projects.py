"""Checkpoint series as other projects' training loops leave them.

GPT-SoVITS's `logs_s2_v2/` holds G_<step>.pth and D_<step>.pth side by side, both written by its
`utils.save_checkpoint(model, optimizer, learning_rate, epoch, path)`: {"model": state_dict,
"iteration": <the epoch>, "optimizer", "learning_rate"} (s2_train.py passes the epoch, and names the
file by global_step). GPT-SoVITS is not a package on the registry: that function is re-created here
in its few lines, saving a real torch optimizer's state; the generator's quantizer is EnCodec's own
core_vq (PyPI encodec 0.1.1), which GPT-SoVITS's copies, and the discriminator is weight-normed
convolutions under MultiPeriodDiscriminator's names.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import warnings

import numpy as np
import pytest
import torch

from fixtures_formats import fill_encodec_rvq
from peers import encodec_core_vq
from rvq_viewer.analysis.series import open_series, stored_step
from rvq_viewer.app.series_jobs import SeriesResult, series_job
from rvq_viewer.errors import LoadError

DIM, BINS = 32, 64
RUN = [(4, 48), (8, 96), (12, 144)]       # (epoch, global step) of each save


class Generator(torch.nn.Module):
    def __init__(self, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.ssl_proj = torch.nn.Conv1d(DIM, DIM, 2, stride=2)
        self.quantizer = torch.nn.Module()
        self.quantizer.vq = encodec_core_vq().ResidualVectorQuantization(num_quantizers=1, dim=DIM, codebook_size=BINS)
        fill_encodec_rvq(self.quantizer.vq, torch.Generator().manual_seed(seed))
        self.enc_p = torch.nn.Linear(DIM, 8)
        self.eval()

    def extract_latent(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.quantizer.vq.encode(self.ssl_proj(x.t().unsqueeze(0)))[:, 0]


class Discriminator(torch.nn.Module):
    """Old-API weight norm (weight_g / weight_v), as GPT-SoVITS's MultiPeriodDiscriminator uses."""

    def __init__(self):
        super().__init__()
        wn = torch.nn.utils.weight_norm
        self.discriminators = torch.nn.ModuleList([torch.nn.Module() for _ in range(2)])
        with warnings.catch_warnings():   # torch deprecates the old API GPT-SoVITS uses
            warnings.simplefilter("ignore", FutureWarning)
            for d in self.discriminators:
                d.convs = torch.nn.ModuleList([wn(torch.nn.Conv2d(1, 4, (5, 1))), wn(torch.nn.Conv2d(4, 4, (5, 1)))])
                d.conv_post = wn(torch.nn.Conv2d(4, 1, (3, 1)))


def save_checkpoint(model, optimizer, learning_rate, iteration, checkpoint_path):
    """GPT-SoVITS utils.save_checkpoint (its my_save is torch.save through a temporary name)."""
    torch.save({"model": model.state_dict(), "iteration": iteration, "optimizer": optimizer.state_dict(),
                "learning_rate": learning_rate}, checkpoint_path)


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("logs_s2_v2")
    generators = {}
    for seed, (epoch, step) in enumerate(RUN):
        net_g, net_d = Generator(seed), Discriminator()
        save_checkpoint(net_g, torch.optim.AdamW(net_g.parameters(), 1e-4), 1e-4, epoch, folder / f"G_{step}.pth")
        save_checkpoint(net_d, torch.optim.AdamW(net_d.parameters(), 1e-4), 1e-4, epoch, folder / f"D_{step}.pth")
        generators[step] = net_g
    return folder, generators


def test_gpt_sovits_training_folder_skips_discriminators_and_orders_by_step(logs):
    folder, generators = logs
    series = open_series([folder])
    assert series.steps == [48, 96, 144]
    assert "file names" in series.order and "`iteration` they store is the epoch" in series.order
    assert [p.name for p in series.skipped] == ["D_144.pth", "D_48.pth", "D_96.pth"]
    assert len(series.warnings) == 3
    assert all("skipped, it holds no quantizer" in w for w in series.warnings)
    x = torch.randn(120, DIM, generator=torch.Generator().manual_seed(4))
    for entry in series.entries:
        assert entry.quantizer.format == "gpt-sovits"
        assert torch.equal(entry.quantizer.encode(x), generators[entry.step].extract_latent(x))


def test_gpt_sovits_iteration_is_read_as_the_epoch():
    meta = {"iteration": 8, "optimizer": {}, "learning_rate": 1e-4}
    assert stored_step(meta, "gpt-sovits") is None
    assert stored_step(meta) == (8, "iteration")          # elsewhere `iteration` is a step
    assert stored_step({"info": "8epoch_96iteration"}, "gpt-sovits") == (96, "info")


def test_events_command_on_a_gpt_sovits_folder(logs, tmp_path):
    folder, generators = logs
    out = tmp_path / "events.json"
    x = torch.randn(240, DIM, generator=torch.Generator().manual_seed(6))
    np.save(tmp_path / "hubert.npy", x.numpy())
    proc = subprocess.run([sys.executable, "-m", "rvq_viewer", "events", str(folder), str(tmp_path / "hubert.npy"),
                           "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("rvq-viewer: warning: ")]
    assert len(warnings) == 3 and all("D_" in w and "holds no quantizer" in w for w in warnings)
    assert "steps 48..144" in proc.stdout and "GPT-SoVITS names its training checkpoints G_<step>.pth" in proc.stdout
    report = json.loads(out.read_text())
    assert report["steps"] == [48, 96, 144]
    used = {s["step"]: s["used"] for s in report["summaries"]}
    assert len(used) == 3
    assert used == {step: len(set(generators[step].extract_latent(x)[0].tolist())) for step in used}


def test_the_app_series_job_shows_the_skipped_files(logs):
    folder, _ = logs
    result = [item for item in series_job(threading.Event(), [folder]) if isinstance(item, SeriesResult)][0]
    assert result.steps == [48, 96, 144]
    assert len(result.warnings) == 3 and "D_48.pth: skipped" in result.note


def test_a_folder_with_fewer_than_two_quantizers_says_so(logs, tmp_path):
    folder, _ = logs
    for name in ("G_48.pth", "D_48.pth", "D_96.pth"):
        (tmp_path / name).write_bytes((folder / name).read_bytes())
    with pytest.raises(LoadError, match=r"2 of the 3 files hold no quantizer, which leaves 1: a series needs at "
                                        r"least two \(D_48.pth: no quantizer recognised"):
        open_series([tmp_path])


def trainer_like(path, step, seed):
    """A checkpoint of a loop that stores its step (here one that went wrong: NaN, infinity)."""
    g = Generator(seed)
    torch.save({"model": g.state_dict(), "step": step}, path)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), torch.tensor(float("nan"))])
def test_a_stored_step_that_is_not_a_number_falls_back_to_file_names(tmp_path, bad):
    trainer_like(tmp_path / "ckpt_100.pt", 100, 0)
    trainer_like(tmp_path / "ckpt_200.pt", bad, 1)
    series = open_series([tmp_path])
    assert series.steps == [100, 200] and "number in the file names" in series.order
    assert any("ckpt_200.pt: its stored step is" in w and "not a finite number" in w for w in series.warnings)


def test_non_finite_steps_and_no_numbers_in_names_order_alphabetically(tmp_path):
    trainer_like(tmp_path / "first.pt", float("nan"), 0)
    trainer_like(tmp_path / "second.pt", float("-inf"), 1)
    series = open_series([tmp_path])
    assert [e.path.name for e in series.entries] == ["first.pt", "second.pt"]
    assert "alphabetically" in series.order and len(series.warnings) == 2


def test_the_events_command_with_a_nan_step_prints_one_warning_line(tmp_path):
    trainer_like(tmp_path / "ckpt_1.pt", 1, 0)
    trainer_like(tmp_path / "ckpt_2.pt", float("nan"), 1)
    proc = subprocess.run([sys.executable, "-m", "rvq_viewer", "events", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert [line for line in proc.stderr.splitlines() if "warning" in line] == [
        "rvq-viewer: warning: ckpt_2.pt: its stored step is nan (not a finite number), so it is not used"]


def test_epochs_order_a_series_whose_names_carry_no_number(tmp_path):
    for name, epoch, seed in (("best.pt", 7, 0), ("last.pt", 3, 1)):
        torch.save({"state_dict": Generator(seed).state_dict(), "epoch": epoch}, tmp_path / name)
    series = open_series([tmp_path])
    assert series.steps == [3, 7] and series.order.startswith("epoch stored in the files (epoch")
    np.testing.assert_array_equal([e.path.name for e in series.entries], ["last.pt", "best.pt"])
