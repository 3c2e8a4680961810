"""Chunk reads that skip holes, zero detection, and the local store's durability order."""

import os
import tempfile
from collections.abc import Collection
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pitreos.backup import BackupOptions, run_backup
from pitreos.catalog import Catalog
from pitreos.hashing import NewBlob
from pitreos.repository import Repository, blob_key
from pitreos.sparse import (
    BLOCK_SIZE,
    data_extents,
    is_zero,
    read_nonzero,
    read_range,
)
from pitreos.stores import open_store
from pitreos.stores.base import Store, StoreWrapper
from pitreos.workspace import Workspace

from .helpers import CHUNK, Runner, assert_same_tree, make_sparse
from .test_core import backup

# a file layout: (kind, length in blocks) regions, laid end to end
layouts = st.lists(st.tuples(st.sampled_from(["data", "zeros", "hole"]), st.integers(1, 40)),
                   min_size=1, max_size=10)


def _write_layout(path: Path, layout: list[tuple[str, int]]) -> bytes:
    """Write the layout (data regions hold 0x01..0xff bytes, zeros regions are allocated
    zero bytes, holes are holes); returns the file's content."""
    content = bytearray()
    runs = []
    for kind, blocks in layout:
        region = bytes((i % 255) + 1 for i in range(blocks * BLOCK_SIZE)) if kind == "data" \
            else bytes(blocks * BLOCK_SIZE)
        if kind != "hole":
            runs.append((len(content), region))
        content += region
    make_sparse(path, len(content), runs)
    return bytes(content)


@settings(max_examples=120, deadline=None)
@given(layouts, st.data())
def test_read_range_returns_the_bytes_a_plain_read_does(layout: list[tuple[str, int]],
                                                         data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "f"
        content = _write_layout(path, layout)
        fd = os.open(path, os.O_RDONLY)
        try:
            # the extents from an origin on (as a restore's check task finds them)
            origin = data.draw(st.sampled_from([0, data.draw(st.integers(0, len(content)))]))
            extents = data_extents(fd, len(content), origin)
            assert all(origin <= a < b <= len(content) for a, b in extents)
            if origin == len(content):
                return
            start = data.draw(st.integers(origin, len(content) - 1))
            length = data.draw(st.integers(1, len(content) - start))
            got = read_range(fd, start, length, extents)
            nonzero = read_nonzero(fd, start, length, extents)
        finally:
            os.close(fd)
        expected = content[start:start + length]
        assert bytes(got) == expected
        assert is_zero(got) == (not any(expected))
        assert (nonzero is None) == (not any(expected))
        if nonzero is not None:
            assert bytes(nonzero) == expected


def test_holes_are_not_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A chunk with 8 KiB of data in the middle of 1 MiB of hole reads 8 KiB."""
    path = tmp_path / "f"
    size = 4 << 20
    data = b"\x07" * 8192
    make_sparse(path, size, [(1 << 20, data), (3 << 20, data)])
    reads: list[tuple[int, int]] = []
    real_preadv = os.preadv

    def recording_preadv(fd: int, buffers: list[memoryview], offset: int) -> int:
        reads.append((offset, sum(len(b) for b in buffers)))
        return real_preadv(fd, buffers, offset)

    monkeypatch.setattr(os, "preadv", recording_preadv)
    fd = os.open(path, os.O_RDONLY)
    try:
        extents = data_extents(fd, size)
        got = read_range(fd, (1 << 20) - (512 << 10), 1 << 20, extents)
    finally:
        os.close(fd)
    assert reads == [(1 << 20, 8192)]
    assert bytes(got) == bytes(512 << 10) + data + bytes((512 << 10) - 8192)


def test_nearby_extents_merge(tmp_path: Path) -> None:
    """Data in 8 KiB runs 8 KiB apart (gaps under MERGE_GAP) gives one extent, not
    hundreds."""
    path = tmp_path / "f"
    runs = [(offset, b"\x01" * 8192) for offset in range(0, 4 << 20, 16384)]
    make_sparse(path, 8 << 20, runs)
    fd = os.open(path, os.O_RDONLY)
    try:
        extents = data_extents(fd, 8 << 20)
    finally:
        os.close(fd)
    assert extents == [(0, (4 << 20) - 8192)]


class FlushOrder(StoreWrapper):
    """Wraps a store: records the puts, the keys the flushes made durable, and which of
    them were durable when the first manifest was put."""

    def __init__(self, inner: Store) -> None:
        super().__init__(inner)
        self.put_keys: list[str] = []
        self.flushed: set[str] = set()
        self.flushed_before_manifest: set[str] | None = None

    def put(self, key: str, data: bytes, *, overwrite: bool = False) -> bool:
        if key.startswith("manifests/") and self.flushed_before_manifest is None:
            self.flushed_before_manifest = set(self.flushed)
        self.put_keys.append(key)
        self.flushed.discard(key)
        return self.inner.put(key, data, overwrite=overwrite)

    def flush(self, keys: Collection[str] | None = None) -> None:
        covered = set(self.put_keys) if keys is None else set(keys)
        self.inner.flush(keys)
        self.flushed |= covered


def test_catalog_records_only_flushed_blobs(tmp_path: Path, tree: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Blobs are not fsynced one by one: the catalog must never record a blob before a
    flush that covers it (a crash could lose it), nor a manifest precede its blobs'."""
    store = FlushOrder(open_store((tmp_path / "store").as_uri(), create=True))
    store.check()
    repo = Repository(store)
    ws = Workspace(repo, Catalog(tmp_path / "c.sqlite", repo.url), workers=4)
    recorded: list[str] = []
    real_add_blobs = ws.catalog.add_blobs

    def add_blobs(blobs: list[NewBlob]) -> None:
        for blob in blobs:
            assert blob_key(blob.sha1) in store.flushed, blob.sha1
            recorded.append(blob.sha1)
        real_add_blobs(blobs)

    monkeypatch.setattr(ws.catalog, "add_blobs", add_blobs)
    result = run_backup(tree, ws.repo, ws.catalog, BackupOptions(chunk_size=CHUNK, workers=4))
    manifest_key = next(k for k in store.put_keys if k.startswith("manifests/"))
    assert manifest_key in store.flushed  # the manifest itself was flushed
    before_manifest = store.put_keys[:store.put_keys.index(manifest_key)]
    assert all(k.startswith(("blobs/", "locks/")) for k in before_manifest)
    referenced = {blob_key(c.digest.sha1) for e in result.manifest.entries
                  for c in e.chunks if c.digest is not None}
    assert referenced and store.flushed_before_manifest is not None
    assert referenced <= store.flushed_before_manifest
    assert len(recorded) == result.stats.blobs_stored > 0
    ws.close()


def test_damaged_stored_blob_is_replaced(run: Runner, tree: Path, tmp_path: Path) -> None:
    """A blob cut short (a crash before the store was synced) that the catalog does not
    know: the next backup checks it whole and writes it again."""
    backup(run, tree)
    blobs = sorted(p for p in (tmp_path / "store/blobs").rglob("*") if p.is_file())
    victim = max(blobs, key=lambda p: p.stat().st_size)
    good = victim.read_bytes()
    victim.write_bytes(good[: len(good) // 2])
    for manifest in (tmp_path / "store/manifests").glob("*.yaml"):
        manifest.unlink()
    (tmp_path / "catalog.sqlite").unlink()
    for suffix in ("-wal", "-shm"):
        Path(f"{tmp_path / 'catalog.sqlite'}{suffix}").unlink(missing_ok=True)
    name = backup(run, tree)
    assert victim.read_bytes() == good
    dest = tmp_path / "dest"
    run("restore", name, str(dest)).ok()
    assert_same_tree(tree, dest)
