"""Markers: round trip, staleness, and damaged or foreign objects ignored."""

import json

from pitreos import locks


def test_marker_round_trip() -> None:
    marker = locks.new_marker("gc")
    marker.deleting_blobs = True
    decoded = locks.decode(locks.encode(marker))
    assert decoded == marker


def test_live_until_finished_or_stale() -> None:
    marker = locks.new_marker("backup")
    now = marker.updated
    assert marker.live(now + 10, stale_after=60)
    assert not marker.live(now + 61, stale_after=60)
    marker.finished = now + 5
    assert not marker.live(now + 10, stale_after=60)


def test_damaged_or_foreign_markers_are_ignored() -> None:
    assert locks.decode(b"{not json") is None
    assert locks.decode(json.dumps({"kind": "gc"}).encode()) is None  # fields missing
    assert locks.decode(json.dumps({"hello": 1}).encode()) is None
