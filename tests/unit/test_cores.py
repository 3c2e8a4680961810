"""The CPUs this process may use: the affinity, and the tightest CPU quota of its cgroup
and of the cgroups above it, v1 or v2 (file trees made here, as the kernel lays them
out; tests/e2e/test_cores.py runs in real ones)."""

import os
from pathlib import Path

from pitreos.cores import usable_cores

AFFINITY = len(os.sched_getaffinity(0))


def _cgroup_file(tmp: Path, lines: str) -> Path:
    path = tmp / "proc-self-cgroup"
    path.write_text(lines)
    return path


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_a_v2_quota_of_half_a_cpu_is_one_core(tmp_path: Path) -> None:
    _write(tmp_path / "sys/cpu.max", "50000 100000\n")  # a container's own cgroup
    assert usable_cores(tmp_path / "sys", _cgroup_file(tmp_path, "0::/\n")) == 1


def test_a_v2_quota_rounds_up_and_never_exceeds_the_affinity(tmp_path: Path) -> None:
    _write(tmp_path / "sys/kubepods/pod/cpu.max", "150000 100000\n")
    _write(tmp_path / "sys/kubepods/cpu.max", "max 100000\n")
    cgroup = _cgroup_file(tmp_path, "0::/kubepods/pod\n")
    assert usable_cores(tmp_path / "sys", cgroup) == min(AFFINITY, 2)


def test_a_parent_cgroup_tighter_than_its_child_wins(tmp_path: Path) -> None:
    _write(tmp_path / "sys/cpu/kubepods/cpu.cfs_quota_us", "100000\n")
    _write(tmp_path / "sys/cpu/kubepods/cpu.cfs_period_us", "100000\n")
    _write(tmp_path / "sys/cpu/kubepods/pod/cpu.cfs_quota_us", "800000\n")
    _write(tmp_path / "sys/cpu/kubepods/pod/cpu.cfs_period_us", "100000\n")
    cgroup = _cgroup_file(tmp_path, "2:cpuacct,cpu:/kubepods/pod\n1:memory:/x\n")
    assert usable_cores(tmp_path / "sys", cgroup) == 1


def test_no_quota_leaves_the_affinity(tmp_path: Path) -> None:
    _write(tmp_path / "sys/cpu/cpu.cfs_quota_us", "-1\n")
    _write(tmp_path / "sys/cpu/cpu.cfs_period_us", "100000\n")
    assert usable_cores(tmp_path / "sys", _cgroup_file(tmp_path, "3:cpu:/\n0::/\n")) \
        == AFFINITY
    assert usable_cores(tmp_path / "none", tmp_path / "no-such-file") == AFFINITY


def test_unreadable_quota_files_are_no_quota(tmp_path: Path) -> None:
    _write(tmp_path / "sys/cpu.max", "lots of cpu\n")
    _write(tmp_path / "sys/cpu/cpu.cfs_quota_us", "\n")
    _write(tmp_path / "sys/cpu/cpu.cfs_period_us", "100000\n")
    cgroup = _cgroup_file(tmp_path, "3:cpu:/\n0::/\n")
    assert usable_cores(tmp_path / "sys", cgroup) == AFFINITY
