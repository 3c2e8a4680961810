"""A bound on the requests in flight to one store, whatever the number of threads, and
the controller that moves it.

Workers above a backend's connection pool would each open a connection of their own and
throw it away (urllib3 warns "connection pool is full"), and a server can answer a burst
with throttling. A fixed limit is the backend's declared ``connections`` or the user's
``--parallel``. Otherwise the limit adapts: how many requests in flight fill a link
depends on its round trip and bandwidth (20 ms and 1 Gbit/s want ~3 requests of 1 MiB
in flight; 50 ms and 10 Gbit/s, ~60), which no default knows.

The controller climbs hills on goodput: from a small start it doubles the limit while
each interval moves at least 15% more bytes than the best so far, then steps up by a
quarter while that pays 5%, and returns to the best limit when it does not; failed
requests (throttling, timeouts) halve the limit. Intervals in which the callers never
filled the limit say nothing about it and change nothing (the work, not the link, was
the bottleneck). :func:`next_limit` is the decision, pure; :class:`ConcurrencyLimit`
measures and applies it.
"""

import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from ..defaults import ADAPTIVE_MAX
from ..errors import BlobNotFound
from .base import ObjectInfo, Store, StoreWrapper

ADAPTIVE_START = 8
# the most that an adaptive limit's requests may hold at once, each a chunk at worst (an
# incompressible chunk's blob is as large): 128 requests of the default 1 MiB chunk, the
# figures target 3's memory line was measured with. At 8 MiB chunks, 128 requests
# would hold 1 GiB; 16 still keep 128 MiB on the way, which fills a link of 50 Gbit/s
# with a 20 ms round trip
IN_FLIGHT_BYTES = 128 << 20
_REQUEST_WEIGHT = 16 << 10  # a request without a body still costs a round trip
_MIN_INTERVAL = 0.25  # seconds


@dataclass(frozen=True, slots=True)
class Interval:
    """What the requests finished in one interval did."""

    seconds: float
    bytes: int
    requests: int
    failures: int
    saturated: bool  # the callers had as many requests in flight as allowed

    @property
    def goodput(self) -> float:
        return (self.bytes + self.requests * _REQUEST_WEIGHT) / self.seconds


@dataclass(frozen=True, slots=True)
class Climb:
    limit: int
    best_limit: int
    best_goodput: float = 0.0
    starting: bool = True  # doubling until goodput stops growing


def next_limit(state: Climb, seen: Interval, minimum: int, maximum: int) -> Climb:
    """The controller's decision after one interval."""
    if seen.failures and seen.failures * 10 >= seen.requests:
        limit = max(minimum, state.limit // 2)
        return Climb(limit, limit, 0.0, starting=False)
    if not seen.saturated:
        return state
    goodput = seen.goodput
    if state.starting:
        if goodput > state.best_goodput * 1.15:
            return Climb(min(maximum, state.limit * 2), state.limit, goodput, True)
        return Climb(state.best_limit, state.best_limit, state.best_goodput, False)
    if goodput > state.best_goodput * 1.05:
        up = min(maximum, math.ceil(state.limit * 1.25))
        return Climb(up, state.limit, goodput, False)
    # no better: back to the best, whose figure fades so that probing resumes (the
    # link may have got faster) and is replaced when the link got slower
    return Climb(state.best_limit, state.best_limit,
                 min(state.best_goodput * 0.97, max(goodput, state.best_goodput * 0.8)),
                 False)


class ConcurrencyLimit:
    """Slots for requests in flight; thread-safe. Fixed when ``minimum == maximum``.

    A slot is held per thread: a task that holds one (around reading, compressing and
    storing a chunk, so that threads waiting for the link hold no chunk in memory) makes
    its store requests inside it without taking another. What each request moved is
    :meth:`record`-ed; the limit moves after each interval (:func:`next_limit`)."""

    def __init__(self, initial: int, *, minimum: int = 1, maximum: int | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.minimum = max(1, minimum)
        self.maximum = max(self.minimum, maximum if maximum is not None else initial)
        self._ceiling = self.maximum  # what :meth:`fit_chunks` never goes above
        initial = min(self.maximum, max(self.minimum, initial))
        self._climb = Climb(initial, initial)
        self._clock = clock
        self._cond = threading.Condition()
        self._held = threading.local()
        self._in_flight = 0
        self._started = clock()
        self._bytes = self._requests = self._failures = 0
        self._saturated = False
        self.highest = initial  # the highest limit reached

    @classmethod
    def fixed(cls, limit: int) -> "ConcurrencyLimit":
        return cls(limit, minimum=limit, maximum=limit)

    @classmethod
    def adaptive(cls, maximum: int = ADAPTIVE_MAX) -> "ConcurrencyLimit":
        return cls(min(ADAPTIVE_START, maximum), maximum=maximum)

    @property
    def current(self) -> int:
        return self._climb.limit

    def fit_chunks(self, chunk_size: int) -> None:
        """Set an adaptive limit's maximum so that requests of up to ``chunk_size``
        each hold at most :data:`IN_FLIGHT_BYTES` at once, never above the maximum it
        was made with (each operation fits it to its own chunks). A fixed limit (the
        user's ``--parallel``) is the user's to choose and is left alone."""
        if not self.adapts:
            return
        with self._cond:
            self.maximum = max(self.minimum, min(self._ceiling,
                                                 IN_FLIGHT_BYTES // max(1, chunk_size)))
            if self._climb.limit > self.maximum:
                self._climb = Climb(self.maximum, min(self._climb.best_limit, self.maximum),
                                    self._climb.best_goodput, self._climb.starting)
            self.highest = min(self.highest, self.maximum)

    @property
    def adapts(self) -> bool:
        return self.minimum != self._ceiling

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold a slot (or, in a thread that holds one already, nothing more)."""
        if getattr(self._held, "slot", False):
            yield
            return
        with self._cond:
            while self._in_flight >= self._climb.limit:
                self._cond.wait()
            self._in_flight += 1
            if self._in_flight >= self._climb.limit:
                self._saturated = True
        self._held.slot = True
        try:
            yield
        finally:
            self._held.slot = False
            with self._cond:
                self._in_flight -= 1
                # one slot freed, one waiter woken. Waking all of them, each to find
                # the slot taken and sleep again, made 38 context switches a release
                # with 48 threads waiting (3 now), and 37% of a far restore's on-CPU
                # Python samples were threads waking in this wait (py-spy, GCS through
                # the 20 ms proxy). The limit's own changes still wake all (record).
                self._cond.notify()

    def record(self, moved: int, failed: bool = False) -> None:
        """One request finished, having moved ``moved`` bytes (or failed)."""
        with self._cond:
            self._bytes += moved
            self._requests += 1
            self._failures += failed
            now = self._clock()
            elapsed = now - self._started
            if not self.adapts or elapsed < _MIN_INTERVAL or \
                    self._requests < min(self._climb.limit, 32):
                return
            seen = Interval(elapsed, self._bytes, self._requests, self._failures,
                            self._saturated)
            self._climb = next_limit(self._climb, seen, self.minimum, self.maximum)
            self.highest = max(self.highest, self._climb.limit)
            self._started = now
            self._bytes = self._requests = self._failures = 0
            self._saturated = self._in_flight >= self._climb.limit
            self._cond.notify_all()


class LimitedStore(StoreWrapper):
    def __init__(self, inner: Store, limit: ConcurrencyLimit) -> None:
        super().__init__(inner)
        self.limit = limit

    @contextmanager
    def _request(self) -> Iterator[Callable[[int], None]]:
        """A slot for one request, recorded as failed if it raises (an absent object
        is an answer, not a failure)."""
        moved = 0

        def count(n: int) -> None:
            nonlocal moved
            moved = n

        with self.limit.slot():
            try:
                yield count
            except BlobNotFound:
                self.limit.record(0)
                raise
            except Exception:
                self.limit.record(0, failed=True)
                raise
            self.limit.record(moved)

    def get(self, key: str) -> bytes:
        with self._request() as moved:
            data = self.inner.get(key)
            moved(len(data))
            return data

    def put(self, key: str, data: bytes, *, overwrite: bool = False) -> bool:
        with self._request() as moved:
            written = self.inner.put(key, data, overwrite=overwrite)
            moved(len(data))
            return written

    def exists(self, key: str) -> bool:
        with self._request():
            return self.inner.exists(key)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        # one slot for the whole listing: its pages are requested one after another
        with self.limit.slot():
            yield from self.inner.list(prefix)

    def delete(self, key: str) -> None:
        with self._request():
            self.inner.delete(key)
