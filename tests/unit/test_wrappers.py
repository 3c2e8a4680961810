"""The store wrappers: a limit on requests in flight, request counting, and a cache that
keeps only sound blobs and never serves a rotten copy."""

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import pytest

from pitreos.blobcodec import BlobCodec
from pitreos.errors import TransientStoreError
from pitreos.hashing import digest
from pitreos.repository import Repository, blob_is_sound, blob_key, is_blob_key
from pitreos.stores import deadline
from pitreos.stores.cache import CachingStore
from pitreos.stores.counting import CountingStore
from pitreos.stores.deadline import DeadlineStore
from pitreos.stores.limit import ConcurrencyLimit, LimitedStore

from .memstore import MemoryStore


class SlowStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.in_flight = 0
        self.peak = 0

    def get(self, key: str) -> bytes:
        with self.lock:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
        time.sleep(0.01)
        with self.lock:
            self.in_flight -= 1
        return b"x"


def test_limit_bounds_requests_in_flight() -> None:
    inner = SlowStore()
    limited = LimitedStore(inner, ConcurrencyLimit.fixed(3))
    threads = [threading.Thread(target=limited.get, args=(f"k{i}",)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert inner.peak == 3


def test_counting_counts_requests_bytes_and_listing_pages() -> None:
    counting = CountingStore(MemoryStore())
    for i in range(1500):
        counting.put(f"blobs/{i}", b"abc")
    counting.get("blobs/1")
    assert counting.exists("blobs/2")
    assert len(list(counting.list("blobs/"))) == 1500
    assert counting.requests() == {"put": 1500, "get": 1, "exists": 1, "list": 2}
    assert counting.bytes_moved()["put"] == 4500


def _cache_setup() -> tuple[MemoryStore, MemoryStore, CachingStore, Repository, bytes]:
    codec = BlobCodec()
    store, cache = MemoryStore(), MemoryStore()
    caching = CachingStore(store, cache, cacheable=is_blob_key,
                           verify=partial(blob_is_sound, codec))
    data = b"chunk data " * 1000
    return store, cache, caching, Repository(caching, codec), data


def test_cache_fills_with_sound_blobs_and_serves_them() -> None:
    store, cache, _, repo, data = _cache_setup()
    d = digest(data)
    repo.put_blob(d.sha1, repo.encode_blob(data, d))
    assert repo.read_chunk(d)[0] == data
    assert blob_key(d.sha1) in cache.objects
    del store.objects[blob_key(d.sha1)]  # now only the cache has it
    assert repo.read_chunk(d)[0] == data


def test_cache_never_keeps_a_damaged_blob() -> None:
    store, cache, caching, repo, data = _cache_setup()
    d = digest(data)
    blob = bytearray(repo.encode_blob(data, d))
    blob[-1] ^= 0xFF
    store.put(blob_key(d.sha1), bytes(blob))
    assert caching.get(blob_key(d.sha1)) == bytes(blob)  # passed on, for the caller to judge
    assert cache.objects == {}


def test_a_rotten_cached_copy_is_dropped_and_fetched_again() -> None:
    store, cache, _, repo, data = _cache_setup()
    d = digest(data)
    good = repo.encode_blob(data, d)
    store.put(blob_key(d.sha1), good)
    rotten = bytearray(good)
    rotten[-1] ^= 0xFF
    cache.put(blob_key(d.sha1), bytes(rotten))
    assert repo.read_chunk(d)[0] == data
    assert cache.objects[blob_key(d.sha1)] == good  # replaced by the sound copy


def test_cache_never_keeps_a_blob_under_another_chunks_name() -> None:
    """A cache knows a blob by its name alone: its data's sha1 is the only tie between
    them, so a sound blob stored under another name is passed on, never kept."""
    store, cache, caching, repo, data = _cache_setup()
    d = digest(data)
    wrong = blob_key(digest(b"another chunk").sha1)
    store.put(wrong, repo.encode_blob(data, d))
    assert caching.get(wrong) == store.objects[wrong]
    assert cache.objects == {}


def test_cache_keeps_no_manifest_or_marker() -> None:
    store, cache, caching, _, _ = _cache_setup()
    store.put("manifests/a.yaml", b"name: a")
    assert caching.get("manifests/a.yaml") == b"name: a"
    assert cache.objects == {}


class StallingStore(MemoryStore):
    def __init__(self, stall: float) -> None:
        super().__init__()
        self.stall = stall

    def get(self, key: str) -> bytes:
        time.sleep(self.stall)
        return super().get(key)


def test_a_stalled_request_is_cut_at_its_deadline() -> None:
    inner = StallingStore(stall=5.0)
    inner.put("k", b"v")
    started = time.monotonic()
    with pytest.raises(TransientStoreError, match=r"no answer within 0\.2 s"):
        DeadlineStore(inner, 0.2).get("k")
    assert time.monotonic() - started < 1.0
    inner.stall = 0.0
    assert DeadlineStore(inner, 0.2).get("k") == b"v"
    assert [i.key for i in DeadlineStore(inner, 0.2).list("")] == ["k"]


class GatedStore(MemoryStore):
    """A get of ``gated`` waits until ``gate`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    def get(self, key: str) -> bytes:
        if key == "gated":
            self.gate.wait(10)
        return super().get(key)


def _request_threads() -> set[threading.Thread]:
    """The request threads alive now: a test compares them with those alive before it,
    since other tests' idle threads may end meanwhile (with the idle time patched,
    all at once)."""
    return {t for t in threading.enumerate() if t.name == "pitreos-request" and t.is_alive()}


def test_request_threads_are_reused_and_a_stalled_one_never_blocks_the_next() -> None:
    inner = GatedStore()
    inner.put("k", b"v")
    inner.put("gated", b"late")
    store = DeadlineStore(inner, 0.2)
    before = _request_threads()
    with pytest.raises(TransientStoreError):
        store.get("gated")  # abandoned: its thread waits on
    assert [store.get("k") for _ in range(50)] == [b"v"] * 50
    assert len(_request_threads() - before) == 2  # the stalled one, and one for the 50
    inner.gate.set()  # the stalled request ends; its thread serves again
    time.sleep(0.1)
    assert [store.get("k") for _ in range(50)] == [b"v"] * 50
    assert len(_request_threads() - before) == 2


def test_idle_request_threads_end_while_calls_keep_being_served(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # threads idle 10 ms end while 8 callers pause 0-20 ms between calls, so threads
    # end and start all along; every call is answered, and in the end none is left
    monkeypatch.setattr(deadline, "_IDLE_SECONDS", 0.01)
    inner = MemoryStore()
    inner.put("k", b"v")
    store = DeadlineStore(inner, 2.0)
    before = _request_threads()
    pauses = random.Random(7)

    def caller(seed: int) -> list[bytes]:
        rng = random.Random(seed)
        out = []
        for _ in range(100):
            out.append(store.get("k"))
            time.sleep(rng.random() * 0.02)
        return out

    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(caller, [pauses.randrange(1 << 30) for _ in range(8)]))
    assert results == [[b"v"] * 100] * 8
    assert time.monotonic() - started < 10  # 800 calls of ~1 ms paced by ~10 ms pauses
    deadline_at = time.monotonic() + 5
    while _request_threads() - before and time.monotonic() < deadline_at:
        time.sleep(0.02)
    assert not _request_threads() - before  # every idle thread it started ended
