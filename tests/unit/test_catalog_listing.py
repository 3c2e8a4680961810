"""A store's listing held by the catalog: streamed into a scratch file, queried for the
unreferenced and the missing, in batches a caller may act on between."""

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pitreos.catalog import Catalog
from pitreos.hashing import NewBlob

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
        catalog.forget_blobs([sha1 for sha1, _, _ in batch])  # as gc does between batches
    assert sorted(seen) == [b.sha1 for b in blobs]
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
