"""How many CPUs this process may use: the cores it may run on, capped by its cgroup's CPU quota.

A container or a Kubernetes pod limited to 2 CPUs on a 64-core node still sees 64 cores (affinity,
`os.cpu_count()`, torch's default thread count); 64 workers there would share a 2-CPU quota, be
throttled in every period and measure every search path wrongly. Slurm's cpusets show up as affinity.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


def usable_cpus(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> int:
    """CPUs the process may run on (its affinity), capped by the quota of its cgroup and its parents."""
    cores, quota = _cores(), cgroup_cpu_quota(root, proc_cgroup)
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota)))
    return max(1, cores)


def quota_note(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> str | None:
    """Where a CPU quota is what caps the CPUs used, a few words saying so (the set-up prints them)."""
    cores, quota = _cores(), cgroup_cpu_quota(root, proc_cgroup)
    if quota is None or math.ceil(quota) >= cores:
        return None
    usable = max(1, math.ceil(quota))
    return f"a CPU quota of {quota:g} caps the {cores} cores this process may run on at {usable}"


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def cgroup_cpu_quota(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> float | None:
    """CPUs per period the cgroup limits (cgroup v2 `cpu.max` or v1 `cpu.cfs_quota_us`), the tightest
    over the process's cgroup and its parents; None where nothing limits it or nothing can be read."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    limits = []
    for line in lines:
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if controllers == "":                                      # v2: "0::/path"
            limits += [_v2_limit(d) for d in _dirs(root, path)]
        elif "cpu" in controllers.split(","):                       # v1: "4:cpu,cpuacct:/path"
            for mount in (root / controllers, root / "cpu,cpuacct", root / "cpu"):
                if mount.is_dir():
                    limits += [_v1_limit(d) for d in _dirs(mount, path)]
                    break
    limits = [q for q in limits if q is not None]
    return min(limits) if limits else None


def _dirs(mount: Path, path: str) -> list[Path]:
    """The cgroup's folder and its parents' under `mount` (inside a container the path is often "/",
    and the container's own limit sits at the mount itself)."""
    parts = [p for p in path.strip().split("/") if p and p != ".."]
    return [mount.joinpath(*parts[:i]) for i in range(len(parts), -1, -1)]


def _v2_limit(folder: Path) -> float | None:
    try:
        quota, period = (folder / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else _ratio(quota, period)
    except (OSError, ValueError):
        return None


def _v1_limit(folder: Path) -> float | None:
    try:
        quota = (folder / "cpu.cfs_quota_us").read_text().strip()
        period = (folder / "cpu.cfs_period_us").read_text().strip()
    except OSError:
        return None
    return _ratio(quota, period)


def _ratio(quota: str, period: str) -> float | None:
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None                      # -1: no limit (v1)
