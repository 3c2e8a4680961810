"""The adaptive limit of requests in flight (issue 15, target 3): the decision on a
model link, then the limit itself under real threads against a store whose requests
take real time and which serves only so many at once."""

import contextlib
import resource
import threading
import time
from collections.abc import Callable

import pytest

from pitreos.defaults import ADAPTIVE_MAX
from pitreos.errors import StoreError
from pitreos.stores.limit import (
    ADAPTIVE_START,
    Climb,
    ConcurrencyLimit,
    Interval,
    LimitedStore,
    next_limit,
)

from .memstore import MemoryStore

MiB = 1 << 20


def _link(knee: int) -> Callable[[int], Interval]:
    """A link that carries ``knee`` requests of 1 MiB in 0.1 s; more only wait."""

    def interval(limit: int) -> Interval:
        served = min(limit, knee)
        return Interval(seconds=0.1, bytes=served * MiB, requests=served, failures=0,
                        saturated=True)

    return interval


def _settle(knee: int, steps: int = 60) -> list[int]:
    state = Climb(ADAPTIVE_START, ADAPTIVE_START)
    seen = []
    for _ in range(steps):
        state = next_limit(state, _link(knee)(state.limit), 1, ADAPTIVE_MAX)
        seen.append(state.limit)
    return seen


@pytest.mark.parametrize("knee", [3, 12, 40, 100])
def test_the_limit_finds_what_fills_the_link(knee: int) -> None:
    seen = _settle(knee)
    # never below what fills the link for long, never far above it
    assert all(knee <= limit <= max(2 * knee, ADAPTIVE_START * 2) for limit in seen[-20:])


def test_the_limit_climbs_to_its_maximum_on_a_link_that_wants_more() -> None:
    seen = _settle(knee=500)
    assert max(seen) == ADAPTIVE_MAX == 128
    assert seen[-1] == ADAPTIVE_MAX


def test_failures_halve_the_limit() -> None:
    state = Climb(64, 64, 100.0, starting=False)
    throttled = Interval(0.5, 10 * MiB, 40, failures=8, saturated=True)
    assert next_limit(state, throttled, 1, ADAPTIVE_MAX).limit == 32
    assert next_limit(Climb(1, 1), throttled, 1, ADAPTIVE_MAX).limit == 1


def test_an_interval_the_callers_did_not_fill_changes_nothing() -> None:
    state = Climb(16, 16, 5.0 * MiB, starting=True)
    idle = Interval(0.5, 100 * MiB, 50, failures=0, saturated=False)
    assert next_limit(state, idle, 1, ADAPTIVE_MAX) == state


class _FarStore(MemoryStore):
    """Each request takes 20 ms, and the server works on at most ``capacity`` at once
    (more wait in its queue): the link is filled by ``capacity`` requests in flight."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.server = threading.BoundedSemaphore(capacity)
        self.lock = threading.Lock()
        self.in_flight = 0
        self.peak = 0

    def put(self, key: str, data: bytes, *, overwrite: bool = False) -> bool:
        with self.lock:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
        try:
            with self.server:
                time.sleep(0.02)
            return super().put(key, data, overwrite=overwrite)
        finally:
            with self.lock:
                self.in_flight -= 1


def _hammer(store: LimitedStore, requests: int, threads: int) -> None:
    keys = iter(range(requests))
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                key = next(keys, None)
            if key is None:
                return
            with store.limit.slot():  # as a task holds one around its chunk
                store.put(f"k{key}", b"x" * 4096)

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()


def test_the_limit_grows_under_real_threads_until_the_server_is_full() -> None:
    far = _FarStore(capacity=32)
    store = LimitedStore(far, ConcurrencyLimit.adaptive())
    _hammer(store, requests=3000, threads=128)
    assert store.limit.highest >= 32  # from 8 it found the server's 32
    assert far.peak <= store.limit.highest  # never more in flight than allowed


def test_a_fixed_limit_never_moves_and_a_task_slot_is_not_taken_twice() -> None:
    far = _FarStore(capacity=64)
    store = LimitedStore(far, ConcurrencyLimit.fixed(5))
    _hammer(store, requests=300, threads=32)
    assert store.limit.current == store.limit.highest == 5
    assert far.peak == 5  # a put inside a held slot takes no second one (no deadlock)


class _Throttled(MemoryStore):
    def put(self, key: str, data: bytes, *, overwrite: bool = False) -> bool:
        time.sleep(0.01)
        raise StoreError("503 slow down")


def test_failing_requests_bring_the_limit_down() -> None:
    limit = ConcurrencyLimit(64, maximum=ADAPTIVE_MAX)
    store = LimitedStore(_Throttled(), limit)

    deadline = time.monotonic() + 10

    def work() -> None:  # until the limit comes down (an interval is 0.25 s at least)
        while limit.current == 64 and time.monotonic() < deadline:
            with contextlib.suppress(StoreError):
                store.put("k", b"x")

    pool = [threading.Thread(target=work) for _ in range(64)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert limit.current < 64


def test_large_chunks_lower_an_adaptive_limits_maximum() -> None:
    """Each request may hold a chunk: an adaptive limit keeps what its requests hold
    at once within IN_FLIGHT_BYTES (128 MiB); a fixed one is the user's choice."""
    limit = ConcurrencyLimit.adaptive()
    limit.fit_chunks(1 * MiB)
    assert (limit.maximum, limit.current) == (ADAPTIVE_MAX, ADAPTIVE_START)
    limit.fit_chunks(8 * MiB)
    assert (limit.maximum, limit.current) == (16, ADAPTIVE_START)
    climbing = ConcurrencyLimit(64, maximum=ADAPTIVE_MAX)
    climbing.fit_chunks(32 * MiB)
    assert (climbing.maximum, climbing.current, climbing.highest) == (4, 4, 4)
    climbing.fit_chunks(256 * MiB)
    assert (climbing.maximum, climbing.current) == (1, 1)  # never below one request
    climbing.fit_chunks(2 * MiB)  # the next operation's chunks are smaller: room again
    assert (climbing.maximum, climbing.current, climbing.adapts) == (64, 1, True)
    climbing.fit_chunks(512 << 10)
    assert climbing.maximum == ADAPTIVE_MAX  # never above what it was made with
    fixed = ConcurrencyLimit.fixed(64)
    fixed.fit_chunks(32 * MiB)
    assert (fixed.maximum, fixed.current) == (64, 64)


def test_a_freed_slot_wakes_one_waiter_not_all_of_them() -> None:
    """A restore from a far store runs a thread per request the limit may reach (128),
    and while the limit is below that the rest wait for a slot. Each freed slot must
    wake one of them, not all of them each to find the slot taken and sleep again (the
    wake-ups, counted here as the process's voluntary context switches: 38 a release
    with notify_all, 3 with notify)."""
    limit = ConcurrencyLimit.fixed(1)
    threads, rounds = 48, 20
    start = threading.Barrier(threads + 1)

    def take_turns() -> None:
        start.wait()
        for _ in range(rounds):
            with limit.slot():
                time.sleep(0.0002)  # a request's time on the wire

    workers = [threading.Thread(target=take_turns) for _ in range(threads)]
    for worker in workers:
        worker.start()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw
    start.wait()
    for worker in workers:
        worker.join()
    switches = resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw - before
    releases = threads * rounds
    # one wake-up a release (and the sleep's own switch), a few more for the GIL; all
    # waiters woken by each release would be ~threads/2 a release
    assert switches < 8 * releases, (switches, releases)
