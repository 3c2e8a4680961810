"""In a real cgroup with a CPU quota (what a Kubernetes CPU limit is) and under a real
CPU affinity, pitreos sizes its worker processes by what the process may use, not by
the machine's cores. Tests run as root (the suite's premise); a machine where no cgroup
can be made fails here, loudly."""

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

V1_CPU = Path("/sys/fs/cgroup/cpu")
V2 = Path("/sys/fs/cgroup")

SCRIPT = """
import os
from pitreos.cores import usable_cores
from pitreos.parallel import imap_unordered

def pid(_: int) -> int:
    return os.getpid()

if __name__ == "__main__":
    pids = set(imap_unordered(pid, range(40), workers=8, processes=True))
    print(usable_cores(), len(pids - {os.getpid()}))
"""


@contextmanager
def _cgroup_of_half_a_cpu() -> Iterator[Path]:
    """A new cgroup allowed 50 ms of CPU per 100 ms, v2 or v1, removed afterwards."""
    name = f"pitreos-test-{uuid.uuid4().hex[:8]}"
    if (V2 / "cgroup.controllers").exists():
        group = V2 / name
        group.mkdir()
        (group / "cpu.max").write_text("50000 100000\n")
    elif V1_CPU.is_dir():
        group = V1_CPU / name
        group.mkdir()
        (group / "cpu.cfs_period_us").write_text("100000\n")
        (group / "cpu.cfs_quota_us").write_text("50000\n")
    else:
        raise AssertionError("no cgroup file system to make a cgroup in (v1 or v2)")
    try:
        yield group
    finally:
        _wait_until_empty(group)
        group.rmdir()


def _wait_until_empty(group: Path, seconds: float = 10.0) -> list[str]:
    """The processes left in ``group`` once they had ``seconds`` to end (a command's
    worker processes and their server end just after it: they watch it go)."""
    deadline = time.monotonic() + seconds
    while (left := (group / "cgroup.procs").read_text().split()) and \
            time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def _run(prefix: list[str], tmp: Path, one_cpu: bool = False) -> tuple[int, int]:
    script = tmp / "cores_probe.py"
    script.write_text(SCRIPT)
    done = subprocess.run([*prefix, sys.executable, str(script)], cwd=tmp,
                          capture_output=True, text=True, check=True, timeout=120,
                          preexec_fn=(lambda: os.sched_setaffinity(0, {min(
                              os.sched_getaffinity(0))})) if one_cpu else None)
    cores, workers = done.stdout.split()
    return int(cores), int(workers)


def test_a_cpu_quota_of_half_a_cpu_means_one_worker_process(tmp_path: Path) -> None:
    with _cgroup_of_half_a_cpu() as group:
        enter = f'echo $$ > {group / "cgroup.procs"} && exec "$@"'
        assert _run(["sh", "-c", enter, "sh"], tmp_path) == (1, 1)
        assert _wait_until_empty(group) == []  # no worker outlives the command


def test_an_affinity_of_one_cpu_means_one_worker_process(tmp_path: Path) -> None:
    assert _run([], tmp_path, one_cpu=True) == (1, 1)  # as `taskset -c 0` sets it
