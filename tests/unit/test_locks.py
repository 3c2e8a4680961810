"""Markers: round trip, liveness by the store's clock, a gone owner on this machine, and
damaged or foreign objects ignored."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from pitreos import locks
from pitreos.blobcodec import BlobCodec
from pitreos.repository import CLOCK_PREFIX, Repository
from pitreos.stores.local import LocalStore


def test_marker_round_trip() -> None:
    marker = locks.new_marker("gc")
    marker.deleting_blobs = True
    decoded = locks.decode(locks.encode(marker))
    assert decoded == marker
    assert marker.host_id and marker.pid == os.getpid() and marker.pid_start


def test_live_until_finished_or_stale_by_the_stores_clock() -> None:
    marker = locks.new_marker("backup")
    written = 1_000_000.0  # the store's clock; the writer's clock plays no part
    seen = locks.SeenMarker(marker, written)
    assert seen.live(written + 10, stale_after=60)
    assert not seen.live(written + 61, stale_after=60)
    marker.finished = written + 5
    assert not seen.live(written + 10, stale_after=60)


def test_a_marker_whose_process_is_gone_is_stale_at_once() -> None:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    marker = locks.new_marker("gc")
    marker.pid = int(proc.stdout)  # that process has exited
    assert marker.owner_gone()
    assert not locks.SeenMarker(marker, 0.0).live(1.0, stale_after=3600)


def test_a_reused_pid_or_another_boot_is_gone_too() -> None:
    reused = locks.new_marker("backup")
    reused.pid_start = "1"  # this pid, but a process that started at another time
    assert reused.owner_gone()
    rebooted = locks.new_marker("backup")
    rebooted.boot_id = "another-boot"
    assert rebooted.owner_gone()
    elsewhere = locks.new_marker("backup")
    elsewhere.host_id = "another-machine"
    elsewhere.pid = 999_999_999
    assert not elsewhere.owner_gone()  # only staleness can tell


def test_damaged_or_foreign_markers_are_ignored() -> None:
    assert locks.decode(b"{not json") is None
    assert locks.decode(json.dumps({"kind": "gc"}).encode()) is None  # fields missing
    assert locks.decode(json.dumps({"hello": 1}).encode()) is None


def test_reading_the_stores_clock_removes_probes_that_a_crash_left(tmp_path: Path) -> None:
    """A process killed between writing its clock probe and deleting it leaves the probe
    behind. The next reading of the store's clock removes probes older than a marker's
    staleness (by the store's clock), and leaves a fresh one (another process's, being
    read right now) alone."""
    store = LocalStore(tmp_path / "store", create=True)
    repo = Repository(store, BlobCodec())
    store.put(f"{CLOCK_PREFIX}left-by-a-crash", b"", overwrite=True)
    store.put(f"{CLOCK_PREFIX}being-read-elsewhere", b"", overwrite=True)
    old = time.time() - locks.DEFAULT_STALE_AFTER - 60
    os.utime(tmp_path / "store" / "clock" / "left-by-a-crash", (old, old))
    now = repo.store_time()
    assert abs(now - time.time()) < 60
    assert [info.key for info in store.list(CLOCK_PREFIX)] == [
        f"{CLOCK_PREFIX}being-read-elsewhere"]
