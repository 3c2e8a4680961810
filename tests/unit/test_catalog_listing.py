"""A store's listing held by the catalog: streamed into a scratch file, queried for the
unreferenced and the missing, in batches a caller may act on between."""

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pitreos.catalog import Catalog
from pitreos.defaults import MIN_CHUNK_SIZE
from pitreos.hashing import ChunkDigest, NewBlob
from pitreos.manifest import Chunk, Entry, Manifest, backup_name

URL = "file:///store"


@dataclass(frozen=True)
class Listed:
    sha1: str
    stored_size: int
    modified: datetime


def listed(n: int) -> list[Listed]:
    when = datetime(2026, 1, 1, tzinfo=UTC)
    return [Listed(f"{i:040x}", 10 + i, when) for i in range(n)]


def test_unreferenced_blobs_come_in_batches_that_survive_forgetting(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "c.sqlite", URL)
    blobs = listed(10)
    catalog.add_blobs([NewBlob(b.sha1, "ab" * 32, 1, b.stored_size) for b in blobs])
    assert catalog.apply_listing(iter(blobs)) == 0  # streamed: an iterator will do
    seen = []
    for batch in catalog.unreferenced_listed(batch=3):
        assert len(batch) <= 3
        seen += [sha1 for sha1, _, _ in batch]
        catalog.set_aside(sha1 for sha1, _, _ in batch[:2])  # as gc does between batches
    assert sorted(seen) == [b.sha1 for b in blobs]
    catalog.forget_set_aside()
    kept = [sha1 for i, sha1 in enumerate(seen) if i % 3 == 2]  # the third of each batch
    assert sorted(catalog.known_blobs([b.sha1 for b in blobs])) == sorted(kept)
    assert sorted(sha1 for part in catalog.set_aside_batches(3) for sha1 in part) == \
        sorted(set(seen) - set(kept))
    assert list(catalog.set_aside_batches(3)) == []  # read back once
    assert all(size == 10 + int(sha1, 16) for sha1, size, _ in
               next(iter(catalog.unreferenced_listed())))
    # the scratch file was unlinked as soon as it was attached: nothing beside the catalog
    assert sorted(os.listdir(tmp_path)) == ["c.sqlite", "c.sqlite-shm", "c.sqlite-wal"]
    catalog.close()


def test_a_listing_replaces_the_one_before(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "c.sqlite", URL)
    catalog.apply_listing(listed(5))
    catalog.apply_listing(listed(2))
    assert sum(len(b) for b in catalog.unreferenced_listed()) == 2
    catalog.close()


def _backup(hour: int, sha1s: list[str]) -> Manifest:
    created = datetime(2026, 1, 1, hour, tzinfo=UTC)
    chunks = [Chunk(i * MIN_CHUNK_SIZE, ChunkDigest(sha1, sha1[:32] * 2))
              for i, sha1 in enumerate(sha1s)]
    return Manifest(name=backup_name(created, "t"), tag="t", created=created,
                    chunk_size=MIN_CHUNK_SIZE,
                    entries=[Entry(path="f", type="file", mode=0o644, mtime_ns=0,
                                   size=len(sha1s) * MIN_CHUNK_SIZE, chunks=chunks)])


def test_missing_blobs_are_those_referenced_that_the_listing_lacks(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "c.sqlite", URL)
    blobs = listed(8)
    sha1s = [b.sha1 for b in blobs]
    first, second = _backup(1, sha1s[0:4]), _backup(2, sha1s[3:6])
    catalog.add_backup(first)
    catalog.add_backup(second)
    catalog.add_blobs([NewBlob(sha1s[7], "ab" * 32, 1, 10)])  # referenced by none
    # the listing lacks blobs 1, 4, 5 (referenced) and 7 (not)
    assert catalog.apply_listing(b for i, b in enumerate(blobs) if i not in (1, 4, 5, 7)) == 3
    assert catalog.missing_listed() == [sha1s[1], sha1s[4], sha1s[5]]
    assert catalog.missing_listed([first.name]) == [sha1s[1]]
    assert catalog.missing_listed([second.name]) == [sha1s[4], sha1s[5]]
    assert sorted(catalog.known_blobs(sha1s)) == sha1s[:6]  # 7 forgotten: missing, unused
    catalog.close()
