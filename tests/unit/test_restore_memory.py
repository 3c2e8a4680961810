"""A restore from a far store runs a thread a request in flight (up to 128): the chunks
those threads hold at once, from decoding to writing, must be as few as the cores."""

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pitreos import chunktasks
from pitreos.chunktasks import FetchChunk, WriteTask, write_chunks
from pitreos.cores import usable_cores
from pitreos.hashing import digest
from pitreos.repository import Repository, blob_key
from pitreos.restore.seeds import Seeds
from pitreos.stores.limit import ConcurrencyLimit

from .memstore import MemoryStore
from .occupancy import Occupancy

CHUNK = 64 << 10


def test_chunks_held_at_once_are_as_few_as_the_cores(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    threads = usable_cores() + 6
    repo = Repository(MemoryStore(), limit=ConcurrencyLimit.fixed(threads))
    tasks = []
    for i in range(threads):
        data = bytes([i + 1]) * CHUNK
        chunk = digest(data)
        repo.put_blob(chunk.sha1, repo.encode_blob(data, chunk))
        path = tmp_path / f"file{i}"
        path.write_bytes(b"")
        tasks.append(WriteTask(str(path), f"file{i}", "b", (), (
            FetchChunk(0, 0, CHUNK, chunk, had_data=False, dirty_byte=True),), Seeds()))
    holding = Occupancy()

    def held(data: bytes) -> tuple[bytes, int]:
        """Called with the decoded chunk, before it is written: counts who holds one."""
        with holding:
            time.sleep(0.05)
        return data, 0

    monkeypatch.setattr(chunktasks, "with_dirty_byte", held)
    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(lambda task: write_chunks(repo, task), tasks))
    assert holding.most == usable_cores()
    assert [r.stored_bytes > 0 for r in results] == [True] * threads
    for i in range(threads):
        assert (tmp_path / f"file{i}").read_bytes() == bytes([i + 1]) * CHUNK


def test_a_blob_that_fails_its_check_is_fetched_again() -> None:
    store = MemoryStore()
    repo = Repository(store)
    data = b"x" * CHUNK
    chunk = digest(data)
    good = repo.encode_blob(data, chunk)
    store.objects[blob_key(chunk.sha1)] = good[:-1]  # cut short: fails its check
    fetches = []
    original_get = store.get

    def get(key: str) -> bytes:
        fetches.append(key)
        if len(fetches) == 2:
            store.objects[key] = good  # the second fetch finds it whole
        return original_get(key)

    store.get = get  # type: ignore[method-assign]
    with repo.chunk_read(chunk) as (found, fetched):
        assert found == data and fetched == len(good)
    assert len(fetches) == 2
