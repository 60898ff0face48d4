"""Dead-code events recovered from the checkpoints of a run of the project's own trainer."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from rvq_viewer.training.trainer import Trainer, TrainSettings
from rvq_viewer.errors import LoadError
from rvq_viewer.analysis.series import find_events, open_series, stored_step
from rvq_viewer.pipeline import series_events


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A GPT-SoVITS-order run (expiry after the EMA update, so a respawned code is in the checkpoint
    written after that step), saved after every step, with its recorded expiry events."""
    root = tmp_path_factory.mktemp("series")
    gen = torch.Generator().manual_seed(0)
    frames = torch.cat([torch.randn(300, 6, generator=gen) + 4 * torch.randn(1, 6, generator=gen)
                        for _ in range(8)])
    settings = TrainSettings(n_q=2, codebook_size=32, kmeans_init=True, kmeans_iters=5, batch_size=256,
                             threshold_ema_dead_code=3.0, expire_before_ema=False, seed=1)
    trainer = Trainer(frames, settings)
    for _ in range(12):
        trainer.step()
        trainer.save(root / f"ckpt_{trainer.step_count:04d}.pt")
    np.save(root.parent / "series_features.npy", frames[:500].numpy())
    return root, trainer.events, root.parent / "series_features.npy"


def test_series_is_ordered_by_stored_step(run_dir):
    root, _, _ = run_dir
    series = open_series([root])
    assert series.steps == list(range(1, 13))
    assert "step" in series.order


def test_every_recorded_replacement_is_found_at_its_step_and_layer(run_dir):
    root, recorded, _ = run_dir
    assert recorded, "the run must expire codes for this test to mean anything"
    report = find_events(open_series([root]))
    found = {(e.step, e.layer, e.code) for e in report.events if e.kind == "replaced"}
    # Step 1 has no earlier checkpoint to compare with.
    expected = {(e.step, e.layer, e.code) for e in recorded if e.step > 1}
    assert expected, "replacements after the first step are needed"
    missing = expected - found
    assert not missing, f"replacements not recovered: {sorted(missing)[:10]}"
    for event in report.events:
        if event.kind == "replaced":
            assert event.jump is not None and event.jump > 1.0


def test_died_and_revived_follow_the_ema_sizes(run_dir):
    root, _, _ = run_dir
    series = open_series([root])
    report = find_events(series)
    by_step = {e.step: e for e in series.entries}
    for event in report.events:
        if event.kind not in ("died", "revived"):
            continue
        before = by_step[event.step - 1].quantizer.cluster_size[event.layer][event.code]
        after = by_step[event.step].quantizer.cluster_size[event.layer][event.code]
        assert event.ema_size_before == pytest.approx(float(before))
        if event.kind == "died":
            assert after < 3.0 <= before
        else:
            assert before < 3.0 <= after


def test_summaries_with_features_give_usage_per_step(run_dir):
    root, _, features = run_dir
    _, report = series_events([root], [features])
    assert len(report.summaries) == 12 * 2
    assert all(s.used is not None and 1 <= s.used <= 32 and s.perplexity >= 1 for s in report.summaries)


def test_order_falls_back_to_the_number_in_file_names(tmp_path, run_dir):
    root, _, _ = run_dir
    for step in (3, 10, 7):
        ckpt = torch.load(root / f"ckpt_{step:04d}.pt", weights_only=True)
        del ckpt["step"]
        torch.save(ckpt, tmp_path / f"G_{step}.pth")
    series = open_series([tmp_path])
    assert series.steps == [3, 7, 10] and "file names" in series.order


def test_stored_step_reads_gpt_sovits_info_and_tensors():
    assert stored_step({"info": "12epoch_3456iteration"}) == (3456, "info")
    assert stored_step({"iteration": 77}) == (77, "iteration")
    assert stored_step({"global_step": torch.tensor(5)}) == (5, "global_step")
    assert stored_step({"config": {}}) is None


def test_a_series_of_one_is_refused(tmp_path, run_dir):
    root, _, _ = run_dir
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "a.pt").write_bytes((root / "ckpt_0001.pt").read_bytes())
    with pytest.raises(LoadError, match="at least two"):
        open_series([tmp_path / "one"])


def test_events_command_writes_the_documented_json(run_dir, tmp_path):
    root, _, features = run_dir
    out = tmp_path / "events.json"
    proc = subprocess.run([sys.executable, "-m", "rvq_viewer", "events", str(root), str(features),
                           "--json", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert set(data) >= {"order", "steps", "events", "summaries"}
    assert data["steps"] == list(range(1, 13))
    event = data["events"][0]
    assert set(event) == {"step", "layer", "code", "kind", "ema_size_before", "ema_size_after", "jump"}
    assert {"step", "layer", "used", "perplexity", "ema_dead"} <= set(data["summaries"][0])
