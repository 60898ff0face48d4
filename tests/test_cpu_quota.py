"""The CPUs the process may use: affinity capped by a cgroup CPU quota (containers, Kubernetes pods)."""

from __future__ import annotations

import os

import pytest
import torch

from rvq_viewer.runtime import cpu_pool
from rvq_viewer.runtime.cpu_quota import cgroup_cpu_quota, quota_note, usable_cpus


def _write(path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _proc(tmp_path, text: str):
    proc = tmp_path / "proc-cgroup"
    proc.write_text(text)
    return proc


def test_v2_quota_is_read_and_the_tightest_parent_wins(tmp_path):
    root = tmp_path / "cg"
    _write(root / "kubepods" / "pod1" / "cpu.max", "250000 100000\n")     # 2.5 CPUs
    _write(root / "kubepods" / "cpu.max", "150000 100000\n")              # the parent: 1.5
    _write(root / "cpu.max", "max 100000\n")
    proc = _proc(tmp_path, "0::/kubepods/pod1\n")
    assert cgroup_cpu_quota(root, proc) == pytest.approx(1.5)
    assert usable_cpus(root, proc) == min(len(os.sched_getaffinity(0)), 2)


def test_v2_without_a_limit_and_a_container_limit_at_the_mount(tmp_path):
    root = tmp_path / "cg"
    _write(root / "cpu.max", "max 100000\n")
    proc = _proc(tmp_path, "0::/\n")
    assert cgroup_cpu_quota(root, proc) is None
    _write(root / "cpu.max", "50000 100000\n")                            # a container's own limit
    assert cgroup_cpu_quota(root, proc) == pytest.approx(0.5)
    assert usable_cpus(root, proc) == 1                                    # never below one


def test_v1_quota_and_its_unlimited_value(tmp_path):
    root = tmp_path / "cg"
    folder = root / "cpu,cpuacct" / "docker" / "abc"
    _write(folder / "cpu.cfs_quota_us", "-1\n")
    _write(folder / "cpu.cfs_period_us", "100000\n")
    proc = _proc(tmp_path, "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/\n")
    assert cgroup_cpu_quota(root, proc) is None
    _write(folder / "cpu.cfs_quota_us", "300000\n")
    assert cgroup_cpu_quota(root, proc) == pytest.approx(3.0)


@pytest.mark.parametrize("text", ["", "garbage\n", "0::/x\n"])
def test_unreadable_or_missing_files_mean_no_limit(tmp_path, text):
    root = tmp_path / "cg"
    _write(root / "x" / "cpu.max", "not numbers\n")
    assert cgroup_cpu_quota(root, _proc(tmp_path, text)) is None
    assert cgroup_cpu_quota(root, tmp_path / "no-such-file") is None
    assert usable_cpus(root, tmp_path / "no-such-file") >= 1


def test_the_engines_worker_count_keeps_to_the_quota(monkeypatch):
    monkeypatch.setattr(cpu_pool, "usable_cpus", lambda: 1)
    assert cpu_pool._thread_count() == 1
    monkeypatch.setattr(cpu_pool, "usable_cpus", lambda: 64)
    assert cpu_pool._thread_count() == torch.get_num_threads()


def test_the_app_lowers_torchs_threads_to_the_quota_only(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setattr(cpu_pool, "usable_cpus", lambda: 1)
        cpu_pool.fit_torch_threads()
        assert torch.get_num_threads() == 1
        monkeypatch.setattr(cpu_pool, "usable_cpus", lambda: 64)
        cpu_pool.fit_torch_threads()                                       # never raised above torch's own
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_the_set_up_says_when_a_quota_caps_the_cores(tmp_path):
    root = tmp_path / "cg"
    proc = _proc(tmp_path, "0::/\n")
    cores = len(os.sched_getaffinity(0))
    _write(root / "cpu.max", "50000 100000\n")
    if cores > 1:
        want = f"a CPU quota of 0.5 caps the {cores} cores this process may run on at 1"
        assert quota_note(root, proc) == want
    _write(root / "cpu.max", f"{(cores + 1) * 100000} 100000\n")     # more quota than cores: no cap to name
    assert quota_note(root, proc) is None
    assert quota_note(root, tmp_path / "no-such-file") is None
