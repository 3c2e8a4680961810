"""The cyclic collector paused while chunk lists are built (pitreos.collector): the
pause ends with the block, leaves a caller's own pause alone, and covers the two bulk
builders, a manifest's load and the catalog's previous chunk lists.

The allocations of a paused block still count, so the collector makes one pass as the
block ends: "at most one pass" is what a pause looks like from outside, against dozens
without it."""

import gc
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pitreos import manifest as mf
from pitreos.catalog import Catalog
from pitreos.collector import collector_paused
from pitreos.hashing import ChunkDigest

CHUNK = 1 << 20
CHUNKS = 20_000  # ~40,000 tuples: dozens of the collector's passes when it runs


def _manifest(chunks: int) -> mf.Manifest:
    listed = [mf.Chunk(i * CHUNK, ChunkDigest(os.urandom(20).hex(), os.urandom(32).hex()))
              for i in range(chunks)]
    entry = mf.Entry(path="blocks/blocks.log", type="file", mode=0o644, mtime_ns=0,
                     size=chunks * CHUNK, chunks=listed)
    return mf.Manifest(name="2026-11-27T00-00-00Z--log", tag="log",
                       created=datetime(2026, 11, 27, tzinfo=UTC), chunk_size=CHUNK,
                       entries=[entry], meta={})


@pytest.fixture
def passes() -> Iterator[list[int]]:
    """The generations of the collector's passes while the test runs."""
    seen: list[int] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            seen.append(info["generation"])

    gc.callbacks.append(count)
    try:
        yield seen
    finally:
        gc.callbacks.remove(count)


def test_the_pause_ends_with_the_block_even_on_an_error() -> None:
    assert gc.isenabled()
    with pytest.raises(RuntimeError), collector_paused():
        assert not gc.isenabled()
        raise RuntimeError("boom")
    assert gc.isenabled()


def test_a_callers_own_pause_is_left_alone() -> None:
    gc.disable()
    try:
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_building_many_records_sets_off_passes_unless_paused(passes: list[int]) -> None:
    """What the pause saves: without it, building the records runs the collector."""
    built = [(i, (str(i), str(i))) for i in range(CHUNKS)]
    assert len(passes) > 10
    passes.clear()
    with collector_paused():
        built = [(i, (str(i), str(i))) for i in range(CHUNKS)]
        during = len(passes)
    assert during == 0 and len(built) == CHUNKS


def test_a_manifest_loads_with_the_collector_paused(passes: list[int]) -> None:
    data = mf.dump(_manifest(CHUNKS))
    passes.clear()
    loaded = mf.load(data, "log")
    assert len(passes) <= 1
    assert len(loaded.entries[0].chunks) == CHUNKS
    assert gc.isenabled()


def test_previous_chunk_lists_are_read_with_the_collector_paused(
        tmp_path: Path, passes: list[int]) -> None:
    manifest = _manifest(CHUNKS)
    catalog = Catalog(tmp_path / "c.sqlite", "file:///nowhere")
    try:
        catalog.add_backup(manifest)
        passes.clear()
        files = catalog.files_of(manifest.name)
        after = len(passes)
    finally:
        catalog.close()
    assert after <= 1
    assert files["blocks/blocks.log"].chunks == manifest.entries[0].chunks
    assert gc.isenabled()
