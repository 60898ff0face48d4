"""The sharded audit (`pipeline.shards`, `pipeline.sharded`) gives the local audit's statistics exactly.

Shards are cut where the local chunks start, so each shard's chunks (and the engine's pieces inside them)
are the local ones: the input moments (every MOMENT_STRIDE-th row of each piece) take the same rows. A
plan cut elsewhere does change them, which is why the plan must not. Run here on thread and process
pools; `test_dask.py` runs the same on a Dask LocalCluster.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import pickle
import shutil
import threading

import numpy as np
import pytest
import torch

from rvq_viewer.errors import LoadError, RvqViewerError
from rvq_viewer.pipeline import AuditSpec, iter_audit_run, load, open_features, run_audit_spec
from rvq_viewer.pipeline.executors import QuantizerRef, ShardJob, audit_shard
from rvq_viewer.pipeline.shards import Reading, Segment, Shard, open_shard, plan_shards, sequences

from shard_corpus import last_accumulator, same_outcome, same_statistics, write_checkpoint, write_corpus

CHUNK = 4096     # two CPU pieces of 2,048 rows per full chunk: the pieces matter too


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    return write_checkpoint(root / "rvq.pt"), write_corpus(root / "feats")


def spec_of(corpus, **changes) -> AuditSpec:
    checkpoint, folder = corpus
    return AuditSpec(checkpoint, (folder,), device="cpu", chunk_frames=CHUNK, **changes)


def audit(spec, **run):
    return last_accumulator(iter_audit_run(spec, **run))


@pytest.mark.parametrize("pack", [None, False], ids=["packed", "per-sequence"])
def test_sharded_on_threads_equals_the_local_audit(corpus, pack):
    spec = spec_of(corpus, pack=pack)
    local, local_acc = audit(spec)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        sharded, sharded_acc = audit(spec, executor=pool, shard_frames=3 * CHUNK)
    assert sharded.shards.count >= 4 and sharded.shards.merged == sharded.shards.count
    same_statistics(local_acc, sharded_acc)
    same_outcome(local, sharded)
    assert sharded.frames_read == local.frames_read == sharded.frames_total
    assert any("f_broken.npy: skipped" in w for w in sharded.warnings)


def test_shards_start_where_local_chunks_start(corpus):
    spec = spec_of(corpus)
    quantizer = load(spec)
    for pack in (True, False):
        source = open_features(spec.replace(pack=pack), quantizer)
        total = sum(length for *_, length in sequences(source))
        shards = plan_shards(source, 2 * CHUNK + 1)          # rounded up to 3 chunks
        assert sum(s.frames for s in shards) == total
        offset = 0
        for shard in shards:
            if pack:       # packed: the concatenation is cut every CHUNK frames
                assert offset % CHUNK == 0
            else:          # per sequence: a sequence's start or a multiple of CHUNK inside it
                assert all(seg.start % CHUNK == 0 for seg in shard.segments)
            offset += shard.frames
        assert all(s.frames == 3 * CHUNK for s in shards[:-1]) if pack else True
        assert pickle.loads(pickle.dumps(shards[0])) == shards[0]
        assert len(pickle.dumps(shards[0])) < 2000


def test_a_cut_between_chunk_starts_would_change_the_moments(corpus, tmp_path):
    """The check above can fail: cut the long file at row 1,000 and the moments take other rows."""
    spec = spec_of(corpus, pack=False)
    quantizer = load(spec)
    path = str(corpus[1] / "a_long.npy")
    source = open_features(spec.replace(features=(corpus[1] / "a_long.npy",)), quantizer)
    reading = Reading.of(source)
    whole = Shard(0, (Segment(0, path, "", None, 0, 23_003),), reading)
    cut = [Shard(0, (Segment(0, path, "", None, 0, 1_000),), reading),
           Shard(1, (Segment(0, path, "", None, 1_000, 23_003),), reading)]
    job = ShardJob("cpu", None, True)
    acc = audit_shard(quantizer, whole, job).accumulator
    misaligned = audit_shard(quantizer, cut[0], job).accumulator.merge(audit_shard(quantizer, cut[1], job).accumulator)
    np.testing.assert_array_equal(acc.layers[0].counts, misaligned.layers[0].counts)
    assert acc.pairs.moments[0].count != misaligned.pairs.moments[0].count


def test_a_stride_two_quantizer_is_cut_at_even_rows(tmp_path):
    from fixtures_formats import family_files
    checkpoint = family_files(tmp_path / "ckpt")["gpt_sovits"][0]
    rng = np.random.default_rng(3)
    (tmp_path / "f").mkdir()
    for i, n in enumerate((9_001, 4_097, 12_345)):
        np.save(tmp_path / "f" / f"{i}.npy", rng.normal(size=(n, 32)).astype(np.float32))
    spec = AuditSpec(checkpoint, (tmp_path / "f",), device="cpu", chunk_frames=4_097)
    local, local_acc = audit(spec)
    assert local.quantizer.frame_stride == 2
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        sharded, sharded_acc = audit(spec, executor=pool, shard_frames=5_000)
    assert all(seg.start % 2 == 0 for seg in plan_shards(sharded.source, 5_000)[1].segments)
    same_statistics(local_acc, sharded_acc)
    same_outcome(local, sharded)


def test_a_process_pool_loads_the_quantizer_once_per_process(corpus):
    spec = spec_of(corpus)
    local, local_acc = audit(spec)
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        sharded, sharded_acc = audit(spec, executor=pool, shard_frames=4 * CHUNK)
    same_statistics(local_acc, sharded_acc)
    same_outcome(local, sharded)
    # Pickled, the reference is the checkpoint's path and a fingerprint; loaded once, then cached.
    ref = QuantizerRef(local.quantizer, spec.checkpoint, spec.load)
    assert len(pickle.dumps(ref)) < 1000
    first, second = pickle.loads(pickle.dumps(ref)), pickle.loads(pickle.dumps(ref))
    assert first.get() is second.get()
    other = write_checkpoint(corpus[0].parent / "other.pt", seed=9)
    wrong = QuantizerRef(local.quantizer, other, spec.load)
    with pytest.raises(LoadError, match="differs on .* from the quantizer the audit was started with"):
        pickle.loads(pickle.dumps(wrong)).get()
    missing = QuantizerRef(local.quantizer, corpus[0].parent / "elsewhere.pt", spec.load)
    with pytest.raises(LoadError, match="elsewhere.pt: not found on worker .*: with a plain executor"):
        pickle.loads(pickle.dumps(missing)).get()


class _Hooked(concurrent.futures.ThreadPoolExecutor):
    """A thread pool that runs `hook` once, before its first task is submitted (after the plan)."""

    def __init__(self, hook, workers=2):
        super().__init__(workers)
        self.hook, self.futures = hook, []

    def submit(self, fn, *args, **kwargs):
        if self.hook is not None:
            hook, self.hook = self.hook, None
            hook()
        future = super().submit(fn, *args, **kwargs)
        self.futures.append(future)
        return future


def test_a_file_a_worker_cannot_read_is_skipped_by_name_and_counted_once(corpus, tmp_path):
    folder = tmp_path / "feats"
    shutil.copytree(corpus[1], folder)
    spec = spec_of((corpus[0], folder))
    local = run_audit_spec(spec)
    victim = folder / "b_short_3.npy"
    with _Hooked(lambda: victim.write_bytes(b"\x93NUMPY garbage")) as pool:
        outcome = run_audit_spec(spec, executor=pool, shard_frames=2 * CHUNK)
    skipped = [(index, path) for index, path, _ in outcome.shards.skipped]
    assert {path for _, path in skipped} == {str(victim)}       # in each shard that held some of it
    shards = ", ".join(str(index) for index, _ in skipped)
    assert [w for w in outcome.warnings if w.startswith(f"{victim}: skipped:")] == \
        [f"{victim}: skipped: {outcome.shards.skipped[0][2]} (shard{'s' if len(skipped) > 1 else ''} {shards})"]
    assert outcome.frames_read == local.frames_read - 7_777
    assert outcome.result.frames == local.result.frames - 7_777
    assert outcome.complete and outcome.verdicts is not None


def test_a_path_missing_on_the_worker_fails_with_one_line(corpus, tmp_path):
    folder = tmp_path / "feats"
    shutil.copytree(corpus[1], folder)
    spec = spec_of((corpus[0], folder))
    with _Hooked(lambda: folder.rename(tmp_path / "moved")) as pool:
        with pytest.raises(RvqViewerError) as caught:
            run_audit_spec(spec, executor=pool, shard_frames=2 * CHUNK)
    message = str(caught.value)
    assert "\n" not in message and str(folder) in message
    assert "not found on worker" in message and "a filesystem every worker reads" in message


def test_a_nan_is_named_at_the_frame_the_local_audit_names(tmp_path):
    checkpoint = write_checkpoint(tmp_path / "rvq.pt")
    frames = np.random.default_rng(0).normal(size=(20_000, 16)).astype(np.float32)
    frames[13_337, 5] = np.nan
    np.save(tmp_path / "nan.npy", frames)
    spec = AuditSpec(checkpoint, (tmp_path / "nan.npy",), device="cpu", chunk_frames=CHUNK)
    with pytest.raises(LoadError) as local:
        run_audit_spec(spec)
    with concurrent.futures.ThreadPoolExecutor(2) as pool, pytest.raises(LoadError) as sharded:
        run_audit_spec(spec, executor=pool, shard_frames=2 * CHUNK)
    assert "frame 13337 holds NaN" in str(local.value)
    assert str(sharded.value) == str(local.value)


def test_stopping_cancels_the_pending_shards(corpus):
    spec = spec_of(corpus)
    started = threading.Event()

    def stop() -> bool:
        return started.is_set()

    with _Hooked(None, workers=1) as pool:
        items = iter_audit_run(spec, executor=pool, shard_frames=CHUNK, should_stop=stop)
        first = next(items)
        started.set()
        outcome = list(items)[-1]
    assert first.frames_done > 0
    assert not outcome.complete and outcome.verdicts is None
    assert outcome.shards.merged < outcome.shards.count
    assert any(f.cancelled() for f in pool.futures)


def test_an_empty_shard_plan_is_the_local_error(tmp_path):
    checkpoint = write_checkpoint(tmp_path / "rvq.pt")
    np.save(tmp_path / "empty.npy", np.zeros((0, 16), dtype=np.float32))
    spec = AuditSpec(checkpoint, (tmp_path / "empty.npy",), device="cpu")
    with concurrent.futures.ThreadPoolExecutor(1) as pool, pytest.raises(LoadError, match="no frames"):
        run_audit_spec(spec, executor=pool)


def test_open_shard_skips_unreadable_found_files_but_not_named_ones(corpus, tmp_path):
    spec = spec_of(corpus)
    quantizer = load(spec)
    source = open_features(spec, quantizer)
    shard = plan_shards(source, 1 << 30)[0]
    broken = tmp_path / "gone.npy"
    broken.write_bytes(b"")
    found = Shard(0, (Segment(99, str(broken), "", None, 0, 10),) + shard.segments[:1], shard.reading)
    opened, skipped = open_shard(found)
    assert opened is not None and skipped == [(broken, "file is empty (0 bytes)")]
    named = Shard(0, found.segments, shard.reading, frozenset({str(broken)}))
    with pytest.raises(LoadError, match="empty"):
        open_shard(named)
    assert torch.cat([c.frames for c in opened]).shape[0] == shard.segments[0].frames


@pytest.fixture(scope="module")
def families(tmp_path_factory):
    from fixtures_families import implicit_family_files
    from fixtures_formats import family_files
    root = tmp_path_factory.mktemp("families")
    found = {name: path for name, (path, _) in family_files(root / "learned").items()}
    found.update({name: entry[0] for name, entry in implicit_family_files(root / "implicit").items()})
    return found


@pytest.mark.parametrize("family", ["snac", "dac", "vq_heads", "residual_lfq", "grouped_rvq"])
def test_other_families_shard_to_the_same_audit(families, family, tmp_path):
    """Multi-rate levels (SNAC, frame_stride 4), factorized projections (DAC), heads, LFQ bits, groups."""
    spec = AuditSpec(families[family], (), device="cpu", chunk_frames=1024)
    frames = np.random.default_rng(0).normal(size=(9_001, load(spec).dim)).astype(np.float32)
    np.save(tmp_path / "f.npy", frames)
    spec = spec.replace(features=(tmp_path / "f.npy",))
    local, local_acc = audit(spec)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        sharded, sharded_acc = audit(spec, executor=pool, shard_frames=2_048)
    assert sharded.shards.count == 5
    same_statistics(local_acc, sharded_acc)
    same_outcome(local, sharded)
