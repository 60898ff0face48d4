"""The what-if trainer's runs (rvq_viewer.training) and its frames, read through the pipeline."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from rvq_viewer.analysis.series import stored_step
from rvq_viewer.app.trainer_jobs import train_job
from rvq_viewer.io import load_quantizer, read_checkpoint
from rvq_viewer.pipeline import AuditSpec, sample_frames
from rvq_viewer.training import (RunHistory, StepBatch, TrainControl, TrainStatus, evaluate_codebooks,
                                 loaded_codebooks_reason, settings_diff, threshold_meaning, train_steps)
from rvq_viewer.training.trainer import Trainer, TrainSettings

DEMO = Path(__file__).resolve().parents[1] / "assets" / "demo"
TINY = TrainSettings(n_q=2, codebook_size=16, kmeans_init=False, threshold_ema_dead_code=2.0, batch_size=128,
                     steps=12, seed=3)


HELDOUT = AuditSpec(DEMO / "healthy.pt", (DEMO / "heldout.npy",), device="cpu")


def read_frames(max_frames: int = 200_000, seed: int = 0, should_stop=None):
    return sample_frames(HELDOUT, load_quantizer(DEMO / "healthy.pt"), max_frames, seed, should_stop)


def _frames(n=2000, d=8, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g)


# --- frames ----------------------------------------------------------------------------------------------

def test_sampled_frames_subsample_and_read_all_when_small():
    heldout = np.load(DEMO / "heldout.npy")
    everything = read_frames(max_frames=10 ** 6)
    assert everything.frames.shape == heldout.shape
    np.testing.assert_array_equal(everything.frames.numpy(), heldout)
    assert "(all)" in everything.note
    few = read_frames(max_frames=1000, seed=1)
    again = read_frames(max_frames=1000, seed=1)
    assert 800 <= len(few.frames) <= 1000 and few.frames.shape[1] == 80
    torch.testing.assert_close(few.frames, again.frames)
    assert few.key == again.key != everything.key


def test_sampling_frames_can_be_cancelled():
    from rvq_viewer.errors import CancelledError
    with pytest.raises(CancelledError):
        read_frames(should_stop=lambda: True)


def test_loaded_codebooks_reason():
    assert loaded_codebooks_reason(load_quantizer(DEMO / "healthy.pt")) == ""
    assert loaded_codebooks_reason(None)


# --- runs ------------------------------------------------------------------------------------------------

def test_step_batches_add_up_to_the_trainers_events():
    trainer = Trainer(_frames(), TINY)
    history = RunHistory("run 1", TINY)
    stats = trainer.run()
    for start in range(0, len(stats), 5):
        history.add(StepBatch.from_stats(stats[start:start + 5], TINY.n_q))
    assert len(history) == TINY.steps and history.last_step == TINY.steps
    assert history.curve("perplexity").shape == (TINY.steps, TINY.n_q)
    events = trainer.events
    assert events, "a random init with threshold 2 must replace codes"
    assert history.total_events == len(events) == int(history.curve("events").sum())
    assert int(history.raster.sum()) == len(events) == int(history.replace_count.sum())
    distinct = {(e.layer, e.code) for e in events}
    assert int(history.distinct_replaced().sum()) == len(distinct)
    steps, layers, codes = history.event_log()
    assert sorted(zip(steps.tolist(), layers.tolist(), codes.tolist())) == \
        sorted((e.step, e.layer, e.code) for e in events)
    np.testing.assert_array_equal(history.curve("dead")[-1], stats[-1].dead)


def test_train_steps_pause_stop_and_evaluate(tmp_path):
    settings = dataclasses.replace(TINY, steps=10_000)
    control = TrainControl()
    cancel = threading.Event()
    frames = read_frames(max_frames=3000)
    stream = train_steps(cancel, control, dataclasses.replace(settings, codebook_size=32), frames, interval=0.0)
    first = next(stream)
    assert isinstance(first, TrainStatus) and first.state == "running" and first.frames is frames
    batch = next(stream)
    assert isinstance(batch, StepBatch) and len(batch) == 1
    control.pause.set()
    paused = next(stream)
    assert isinstance(paused, TrainStatus) and paused.state == "paused" and paused.step == 1
    # saving while paused takes the lock; the checkpoint opens with its step and settings
    step = control.save(tmp_path / "paused.pt")
    assert step == 1
    q = load_quantizer(tmp_path / "paused.pt")
    assert q.n_q == 2 and q.codebook_size == 32
    ckpt = read_checkpoint(tmp_path / "paused.pt")
    assert stored_step(ckpt.meta) == (1, "step")
    control.stop.set()
    rest = list(stream)
    final = rest[-1]
    assert final.state == "stopped" and final.step == 1 and final.evaluation is not None
    assert len(final.evaluation.utilization) == 2


def test_train_job_reads_frames_and_finishes():
    control = TrainControl()
    out = list(train_job(threading.Event(), control, TINY, spec=HELDOUT, quantizer=load_quantizer(DEMO / "healthy.pt"),
                         max_frames=2000, interval=0.0))
    states = [v.state for v in out if isinstance(v, TrainStatus)]
    assert states[0] == "reading" and states[-1] == "finished"
    assert sum(len(v) for v in out if isinstance(v, StepBatch)) == TINY.steps
    assert control.trainer.step_count == TINY.steps
    # with k-means init the first step (which runs k-means) is done before "running" is said
    kmeans = dataclasses.replace(TINY, kmeans_init=True, kmeans_iters=3, steps=3)
    out = list(train_steps(threading.Event(), TrainControl(), kmeans, out[1].frames, interval=0.0))
    states = [(v.state, v.step) for v in out if isinstance(v, TrainStatus)]
    assert states[0] == ("initialising", 0) and states[1] == ("running", 1) and states[-1] == ("finished", 3)
    assert sum(len(v) for v in out if isinstance(v, StepBatch)) == 3



def test_stop_during_kmeans_init_ends_at_once_with_nothing_to_save():
    # k-means is inside the first step and takes seconds at large K: Stop must not wait for it.
    frames = read_frames(max_frames=2000)
    settings = dataclasses.replace(TINY, kmeans_init=True, kmeans_iters=50, steps=5)
    control = TrainControl()
    stream = train_steps(threading.Event(), control, settings, frames, interval=0.0)
    assert next(stream).state == "initialising"
    control.stop.set()
    rest = list(stream)
    assert [(v.state, v.step) for v in rest] == [("stopped", 0)]
    assert control.trainer is None          # a half-initialised quantizer is not offered for saving


def test_kmeans_asks_should_stop_before_every_step():
    from rvq_viewer.quant.kmeans import kmeans
    from rvq_viewer.errors import CancelledError
    asked = []
    data = torch.randn(500, 4, generator=torch.Generator().manual_seed(0))
    with pytest.raises(CancelledError):
        kmeans(data, 8, iters=10, should_stop=lambda: asked.append(1) or len(asked) > 3)
    assert len(asked) == 4
    asked.clear()
    kmeans(data, 8, iters=10, should_stop=lambda: asked.append(1) and False)
    assert len(asked) == 10

def test_cancel_ends_the_stream_quietly():
    cancel = threading.Event()
    stream = train_steps(cancel, TrainControl(), dataclasses.replace(TINY, steps=10 ** 6),
                         read_frames(max_frames=2000), interval=0.0)
    next(stream)
    next(stream)
    cancel.set()
    assert list(stream) == []


def test_evaluate_codebooks_counts_use():
    frames = _frames(500, 4)
    perfect = evaluate_codebooks([frames[:50].clone()], frames[:50])
    assert perfect.used == [50] and perfect.utilization == [1.0] and perfect.residual_mse < 1e-10
    one = evaluate_codebooks([torch.zeros(8, 4)], frames)
    assert one.used == [1] and one.perplexity[0] == pytest.approx(1.0)


def test_settings_words():
    a = TrainSettings(codebook_size=1024, batch_size=2048)
    b = dataclasses.replace(a, expire_before_ema=False, kmeans_init=False, threshold_ema_dead_code=0.5)
    diff = settings_diff(a, b)
    assert "EnCodec order → GPT-SoVITS order" in diff and "k-means init → random init" in diff
    assert "threshold 2 → 0.5" in diff
    assert "1× the uniform share" in threshold_meaning(a)               # 2 / (2048 / 1024)
    big = dataclasses.replace(a, codebook_size=65536)
    assert "most codes of a uniform codebook would count as dead" in threshold_meaning(big)
    assert "uniform share" in threshold_meaning(dataclasses.replace(a, threshold_relative=True))
    assert "never expired" in threshold_meaning(dataclasses.replace(a, threshold_ema_dead_code=0))
