"""Markers: round trip, liveness by the store's clock, a gone owner on this machine, and
damaged or foreign objects ignored."""

import json
import os
import subprocess
import sys

from pitreos import locks


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
