"""How many CPUs this process may use: what sizes the workers, the worker processes and
the compressors.

``os.cpu_count()`` is the machine's count. In a container with a CPU limit (a
Kubernetes ``resources.limits.cpu``, ``docker run --cpus``) the kernel lets the process
run that many CPUs' worth of time per period and throttles it beyond; a backup sized by
the host's 64 cores would start 64 worker processes (each with its own memory) to share
2 CPUs. So the count is the smallest of the CPU affinity (``taskset``, cpusets) and the
CPU quota of the process's cgroup and its ancestors (v2 ``cpu.max``, v1
``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``), rounded up.
"""

import math
import os
from collections.abc import Callable
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def usable_cores(cgroup_root: Path = CGROUP_ROOT,
                 proc_cgroup: Path = Path("/proc/self/cgroup")) -> int:
    """The CPUs this process may use (at least 1)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no affinity on this platform
        cores = os.cpu_count() or 1
    quota = _cgroup_quota(cgroup_root, proc_cgroup)
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota)))
    return max(1, cores)


def _cgroup_quota(root: Path, proc_cgroup: Path) -> float | None:
    """The tightest CPU quota over this process's cgroup and its ancestors, in CPUs;
    None when there is none (or no cgroup file system to read)."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    quotas = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2: one hierarchy, cpu.max in each cgroup
            quotas += _along(root, path, _v2_quota)
        elif "cpu" in controllers.split(","):
            quotas += _along(root / "cpu", path, _v1_quota)
    return min(quotas, default=None)


def _along(mount: Path, path: str, read: Callable[[Path], float | None]) -> list[float]:
    """The quotas of the cgroup at ``path`` under ``mount`` and of each ancestor. Inside
    a container's cgroup namespace the path is "/" and the mount is its own cgroup."""
    parts = [p for p in path.split("/") if p]
    found = []
    for depth in range(len(parts), -1, -1):
        quota = read(mount.joinpath(*parts[:depth]))
        if quota is not None:
            found.append(quota)
    return found


def _v2_quota(cgroup: Path) -> float | None:
    try:
        limit, period = (cgroup / "cpu.max").read_text().split()
    except (OSError, ValueError):
        return None
    return None if limit == "max" else int(limit) / int(period)


def _v1_quota(cgroup: Path) -> float | None:
    try:
        limit = int((cgroup / "cpu.cfs_quota_us").read_text())
        period = int((cgroup / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if limit <= 0 or period <= 0 else limit / period

