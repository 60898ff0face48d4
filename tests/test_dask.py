"""The audit on a Dask cluster is the local audit: a LocalCluster of 2 worker processes gives every count,
every statistic (to rounding) and every verdict of the local run, also when a worker is killed mid-shard
(the scheduler re-runs its shards elsewhere, and none is counted twice), and through `--dask`."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import numpy as np
import pytest
import torch

from rvq_viewer.cli import main as cli
from rvq_viewer.pipeline import AuditSpec, iter_audit_run, run_audit_spec
from rvq_viewer.pipeline.cluster import dask_client, parse_address
from rvq_viewer.errors import LoadError, RvqViewerError

from shard_corpus import (last_accumulator, same_numbers, same_outcome, same_statistics, write_checkpoint,
                          write_corpus)

pytest.importorskip("distributed", reason="the dask extra (pip install 'rvq-viewer[dask]') is not installed")

CHUNK = 4096


@pytest.fixture(scope="module")
def client():
    with dask_client("local:2") as c:
        yield c


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("dask")
    return write_checkpoint(root / "rvq.pt"), write_corpus(root / "feats")


def test_two_workers_give_the_local_audit(client, corpus):
    checkpoint, folder = corpus
    spec = AuditSpec(checkpoint, (folder,), device="cpu", chunk_frames=CHUNK)
    local, local_acc = last_accumulator(iter_audit_run(spec))
    sharded, sharded_acc = last_accumulator(iter_audit_run(spec, executor=client, shard_frames=3 * CHUNK))
    report = sharded.shards
    assert report.count >= 4 and report.merged == report.count and len(set(report.workers.values())) == 2
    assert all(w.startswith("Dask worker tcp://") for w in report.workers.values())
    same_statistics(local_acc, sharded_acc)
    same_outcome(local, sharded)
    assert sharded.frames_read == local.frames_read and sharded.device == "cpu"


def _heavy(tmp_path):
    """A quantizer and file heavy enough that shards take a noticeable time (~0.1 s each)."""
    rng = np.random.default_rng(5)
    state = {}
    for i in range(4):
        embed = rng.normal(size=(512, 48)).astype(np.float32)
        base = f"quantizer.vq.layers.{i}._codebook."
        state.update({base + "embed": torch.from_numpy(embed), base + "inited": torch.ones(1),
                      base + "cluster_size": torch.full((512,), 5.0), base + "embed_avg": torch.from_numpy(embed)})
    torch.save(state, tmp_path / "heavy.pt")
    np.save(tmp_path / "heavy.npy", rng.normal(size=(96_000, 48)).astype(np.float32))
    return AuditSpec(tmp_path / "heavy.pt", (tmp_path / "heavy.npy",), device="cpu", chunk_frames=CHUNK)


def test_a_worker_killed_mid_shard_changes_nothing(client, tmp_path):
    spec = _heavy(tmp_path)
    local, local_acc = last_accumulator(iter_audit_run(spec))
    killed = {}

    def kill_a_busy_worker() -> None:
        busy = {addr: keys for addr, keys in client.processing().items() if keys}
        if not busy:
            return
        victim = sorted(busy)[0]
        killed["address"], killed["shards"] = victim, {int(k.split("-")[2]) for k in busy[victim]}
        pid = client.run(os.getpid, workers=[victim])[victim]
        os.kill(pid, signal.SIGKILL)

    items = []
    for item in iter_audit_run(spec, executor=client, shard_frames=4 * CHUNK):
        items.append(item)
        if not killed:
            kill_a_busy_worker()
    sharded, sharded_acc = last_accumulator(items)
    assert killed, "no worker was busy to kill"
    report = sharded.shards
    assert report.merged == report.count
    for index in killed["shards"]:              # re-run on a worker that was alive
        assert report.workers[index] != f"Dask worker {killed['address']}"
    same_statistics(local_acc, sharded_acc)
    same_outcome(local, sharded)
    assert sharded.frames_read == local.frames_read == 96_000


def test_cancel_cancels_the_futures(client, tmp_path, monkeypatch):
    import distributed
    spec = _heavy(tmp_path)
    cancelled = []
    original = distributed.Future.cancel

    def cancel(future, *args, **kwargs):
        cancelled.append(future)
        return original(future, *args, **kwargs)

    monkeypatch.setattr(distributed.Future, "cancel", cancel)
    stop = threading.Event()
    items = iter_audit_run(spec, executor=client, shard_frames=2 * CHUNK, should_stop=stop.is_set)
    next(items)
    stop.set()
    outcome = list(items)[-1]
    assert not outcome.complete and outcome.shards.merged < outcome.shards.count
    assert cancelled and all(f.key.startswith("rvq-shard-") for f in cancelled)

    def settled() -> bool:
        busy = [key for keys in client.processing().values() for key in keys if key.startswith("rvq-shard-")]
        return not busy and all(f.status == "cancelled" for f in cancelled)

    deadline = time.monotonic() + 10          # the scheduler acts on the cancel within moments
    while not settled() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert settled()


def test_the_command_line_audits_on_a_running_cluster(client, tmp_path, corpus, capsys):
    """`--dask tcp://...` (the fixture's own cluster, started as `--dask local:2` starts one)."""
    checkpoint, folder = corpus
    common = [str(checkpoint), str(folder), "--batch", str(CHUNK), "--device", "cpu", "--quiet"]
    assert cli(["audit", *common, "--json", str(tmp_path / "local.json")]) == 0
    address = client.scheduler.address
    assert cli(["audit", *common, "--json", str(tmp_path / "dask.json"), "--dask", address]) == 0
    out = capsys.readouterr().out
    local, sharded = (json.loads((tmp_path / name).read_text()) for name in ("local.json", "dask.json"))
    frames = local["frames"]
    assert f"shards audited on Dask {address} (2 workers), {frames} of {frames} input frames" in out
    same_numbers(local, sharded)


def test_an_error_on_a_worker_is_the_local_one_line(client, corpus, tmp_path, capsys):
    frames = np.random.default_rng(0).normal(size=(3 * CHUNK, 16)).astype(np.float32)
    frames[2 * CHUNK + 7] = np.inf
    np.save(tmp_path / "inf.npy", frames)
    args = ["audit", str(corpus[0]), str(tmp_path / "inf.npy"), "--batch", str(CHUNK), "--quiet"]
    assert cli(args) == 2
    local = capsys.readouterr().err.strip()
    assert cli(args + ["--dask", client.scheduler.address]) == 2
    assert capsys.readouterr().err.strip() == local
    assert local == f"rvq-viewer: error: {tmp_path / 'inf.npy'}: frame {2 * CHUNK + 7} holds NaN or infinite values"
    spec = AuditSpec(corpus[0], (tmp_path / "inf.npy",), device="cpu", chunk_frames=CHUNK)
    with pytest.raises(LoadError) as caught:     # in the third of three shards, counted from the file's start
        run_audit_spec(spec, executor=client, shard_frames=CHUNK)
    assert f"rvq-viewer: error: {caught.value}" == local


@pytest.mark.parametrize("address", ["local:0", "local:two", ""])
def test_a_bad_address_is_one_line(address, corpus, capsys):
    checkpoint, folder = corpus
    assert cli(["audit", str(checkpoint), str(folder), "--dask", address]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rvq-viewer: error: --dask") and "\n" not in err


def test_addresses():
    assert parse_address("local") == ("local", None)
    assert parse_address("local:3") == ("local", 3)
    assert parse_address("tcp://10.0.0.1:8786") == ("remote", None)
    with pytest.raises(RvqViewerError):
        parse_address("local:-1")


def test_an_unreachable_scheduler_is_one_line(corpus, capsys, monkeypatch):
    import rvq_viewer.pipeline.cluster as cluster
    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT", "1s")
    checkpoint, folder = corpus
    assert cli(["audit", str(checkpoint), str(folder), "--dask", "tcp://127.0.0.1:1", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rvq-viewer: error: --dask tcp://127.0.0.1:1: cannot reach the scheduler") and "\n" not in err
