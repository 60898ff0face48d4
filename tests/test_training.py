"""Qt-free helpers of the series timeline and the live trainer (rvq_viewer.training)."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from rvq_viewer.core.train import TrainSettings, Trainer
from rvq_viewer.io import load_quantizer, read_checkpoint
from rvq_viewer.projection import pca_2d
from rvq_viewer.series import Event, Summary, stored_step
from rvq_viewer.training import (EVENT_KINDS, EventTable, PcaProjection, RunHistory, StepBatch, TrainControl,
                                 TrainStatus, died_at_mapping, died_at_steps, evaluate_codebooks,
                                 loaded_codebooks_reason, read_training_frames, settings_diff, summary_arrays,
                                 threshold_meaning, train_stream)

DEMO = Path(__file__).resolve().parents[1] / "assets" / "demo"
TINY = TrainSettings(n_q=2, codebook_size=16, kmeans_init=False, threshold_ema_dead_code=2.0, batch_size=128,
                     steps=12, seed=3)


def _frames(n=2000, d=8, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g)


# --- event table -----------------------------------------------------------------------------------------

def _events():
    return [Event(400, 1, 7, "died", 2.5, 1.0, None), Event(200, 0, 3, "replaced", 1.0, 1.0, 4.0),
            Event(200, 0, 3, "replaced", 1.0, 1.0, 5.0), Event(200, 0, 9, "replaced", None, None, 2.0),
            Event(200, 0, 1, "died", 3.0, 0.5, None), Event(400, 0, 3, "revived", 0.5, 3.0, None)]


def test_event_table_columns_sort_and_groups():
    table = EventTable.from_events(_events())
    assert len(table) == 6
    keys = list(zip(table.steps, table.layers, table.kinds, table.codes))
    assert keys == sorted(keys)
    assert table.counts_by_kind() == {"died": 2, "revived": 1, "replaced": 3}
    np.testing.assert_array_equal(table.codes_at(200, 0, "replaced"), [3, 9])
    assert table.group(200, 0, "replaced").size == 3
    assert table.codes_at(600, 0, "died").size == 0
    rows = table.of_code(0, 3)
    assert [int(table.steps[r]) for r in rows] == [200, 200, 400]
    assert "EMA size 3 → 0.5" in table.describe_row(int(table.group(200, 0, "died")[0]))
    assert np.isnan(table.size_before[table.group(200, 0, "replaced")]).sum() == 1


def test_aggregate_counts_events_and_distinct_codes():
    table = EventTable.from_events(_events())
    agg = table.aggregate()
    marks = {(int(s), int(l), EVENT_KINDS[int(k)]): (int(c), int(d))
             for s, l, k, c, d in zip(agg.steps, agg.layers, agg.kinds, agg.counts, agg.distinct)}
    assert marks == {(200, 0, "died"): (1, 1), (200, 0, "replaced"): (3, 2), (400, 0, "revived"): (1, 1),
                     (400, 1, "died"): (1, 1)}
    assert int(agg.counts.sum()) == len(table)
    assert len(EventTable.empty().aggregate()) == 0


def test_aggregate_scales_to_hundreds_of_thousands():
    rng = np.random.default_rng(0)
    n = 400_000
    table = EventTable(rng.integers(0, 50, n) * 100, rng.integers(0, 8, n).astype(np.int32),
                       rng.integers(0, 65536, n), rng.integers(0, 3, n).astype(np.int8),
                       *(np.full(n, np.nan, np.float32) for _ in range(3))).sorted()
    agg = table.aggregate()
    assert len(agg) == 50 * 8 * 3 and int(agg.counts.sum()) == n
    step, layer, kind = int(agg.steps[5]), int(agg.layers[5]), int(agg.kinds[5])
    assert table.codes_at(step, layer, kind).size == int(agg.distinct[5])


def test_summary_arrays_leave_unknowns_nan():
    sums = [Summary(200, 0, 5, 10, 7.5), Summary(200, 1, None), Summary(400, 0, 3, 12, 9.0)]
    arrays = summary_arrays(sums, [200, 400], 2)
    assert arrays["ema_dead"][0, 0] == 5 and np.isnan(arrays["ema_dead"][0, 1])
    assert arrays["perplexity"][1, 0] == 9.0 and np.isnan(arrays["used"][1, 1])


def test_died_at_is_the_start_of_the_current_dead_run():
    dead = np.array([[1, 0, 0, 1, 0],
                     [1, 1, 0, 0, 0],
                     [1, 1, 1, 0, 1],
                     [1, 0, 1, 0, 1]], dtype=bool)     # 4 checkpoints x 5 codes
    steps = [100, 200, 300, 400]
    codes, when = died_at_steps(dead, steps)
    assert dict(zip(codes.tolist(), when.tolist())) == {0: 100, 2: 300, 4: 300}
    codes, when = died_at_steps(dead, steps, reference=1)  # as seen at step 200
    assert dict(zip(codes.tolist(), when.tolist())) == {0: 100, 1: 200}
    assert died_at_mapping([dead, dead[:, :2]], steps) == {(0, 0): 100, (0, 2): 300, (0, 4): 300, (1, 0): 100}


def test_pca_projection_matches_pca_2d_and_projects_new_points():
    points = np.random.default_rng(1).normal(size=(300, 12)).astype(np.float32) * np.linspace(3, 0.1, 12)
    proj = PcaProjection.fit(points, max_points=10_000)
    np.testing.assert_allclose(proj.transform(points), pca_2d(points), rtol=1e-4, atol=1e-4)
    shifted = proj.transform(points[:3] + 1.0)
    assert shifted.shape == (3, 2)


# --- frames ----------------------------------------------------------------------------------------------

def test_read_training_frames_subsamples_and_reads_all_when_small():
    heldout = np.load(DEMO / "heldout.npy")
    everything = read_training_frames([DEMO / "heldout.npy"], 80, max_frames=10 ** 6)
    assert everything.frames.shape == heldout.shape
    np.testing.assert_array_equal(everything.frames.numpy(), heldout)
    assert "(all)" in everything.note
    few = read_training_frames([DEMO / "heldout.npy"], 80, max_frames=1000, seed=1)
    again = read_training_frames([DEMO / "heldout.npy"], 80, max_frames=1000, seed=1)
    assert 800 <= len(few.frames) <= 1000 and few.frames.shape[1] == 80
    torch.testing.assert_close(few.frames, again.frames)
    assert few.key == again.key != everything.key


def test_read_training_frames_can_be_cancelled():
    from rvq_viewer.errors import CancelledError
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(CancelledError):
        read_training_frames([DEMO / "heldout.npy"], 80, cancel=cancel)


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


def test_train_stream_pauses_stops_and_evaluates(tmp_path):
    settings = dataclasses.replace(TINY, steps=10_000)
    control = TrainControl()
    cancel = threading.Event()
    frames = read_training_frames([DEMO / "heldout.npy"], 80, max_frames=3000)
    stream = train_stream(cancel, control, dataclasses.replace(settings, codebook_size=32), frames=frames,
                          interval=0.0)
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


def test_train_stream_reads_frames_and_finishes():
    control = TrainControl()
    out = list(train_stream(threading.Event(), control, TINY, feature_paths=[DEMO / "heldout.npy"], dim=80,
                            max_frames=2000, interval=0.0))
    states = [v.state for v in out if isinstance(v, TrainStatus)]
    assert states[0] == "reading" and states[-1] == "finished"
    assert sum(len(v) for v in out if isinstance(v, StepBatch)) == TINY.steps
    assert control.trainer.step_count == TINY.steps
    # with k-means init the first step (which runs k-means) is done before "running" is said
    kmeans = dataclasses.replace(TINY, kmeans_init=True, kmeans_iters=3, steps=3)
    out = list(train_stream(threading.Event(), TrainControl(), kmeans, frames=out[1].frames, interval=0.0))
    states = [(v.state, v.step) for v in out if isinstance(v, TrainStatus)]
    assert states[0] == ("initialising", 0) and states[1] == ("running", 1) and states[-1] == ("finished", 3)
    assert sum(len(v) for v in out if isinstance(v, StepBatch)) == 3



def test_stop_during_kmeans_init_ends_at_once_with_nothing_to_save():
    # k-means is inside the first step and takes seconds at large K: Stop must not wait for it.
    frames = read_training_frames([DEMO / "heldout.npy"], 80, max_frames=2000)
    settings = dataclasses.replace(TINY, kmeans_init=True, kmeans_iters=50, steps=5)
    control = TrainControl()
    stream = train_stream(threading.Event(), control, settings, frames=frames, interval=0.0)
    assert next(stream).state == "initialising"
    control.stop.set()
    rest = list(stream)
    assert [(v.state, v.step) for v in rest] == [("stopped", 0)]
    assert control.trainer is None          # a half-initialised quantizer is not offered for saving


def test_kmeans_asks_should_stop_before_every_step():
    from rvq_viewer.core.kmeans import kmeans
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
    stream = train_stream(cancel, TrainControl(), dataclasses.replace(TINY, steps=10 ** 6),
                          frames=read_training_frames([DEMO / "heldout.npy"], 80, max_frames=2000), interval=0.0)
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
