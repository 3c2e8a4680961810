"""Retries with exponential backoff and full jitter, for every backend at once.

Only :class:`~pitreos.errors.TransientStoreError` is retried (throttling, 5xx, reset,
timed-out or stalled connections, bodies that fail their check). Retries go on for a
bounded total time (``retry_for``, default 5 minutes: a server restart or a DNS blip
must not fail a two-hour backup), then the error is raised, so a store that keeps
failing fails the operation within ``retry_for`` plus one request's deadline. A
conditional write that is retried after its first attempt succeeded unseen answers
"already exists", which callers check (the repository compares the stored bytes).
"""

import random
import time
from collections.abc import Callable, Collection, Iterator
from typing import TypeVar

from ..defaults import DEFAULT_RETRY_FOR
from ..errors import StoreError, TransientStoreError
from ..log import get_logger
from .base import ObjectInfo, Store, StoreWrapper

T = TypeVar("T")
log = get_logger(__name__)


class RetryingStore(StoreWrapper):
    def __init__(self, inner: Store, *, retry_for: float = DEFAULT_RETRY_FOR,
                 base_delay: float = 0.5, max_delay: float = 30.0,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic,
                 jitter: Callable[[float, float], float] = random.uniform) -> None:
        super().__init__(inner)
        self.retry_for = retry_for
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.sleep = sleep
        self.clock = clock
        self.jitter = jitter

    def _call(self, fn: Callable[[], T]) -> T:
        started = self.clock()
        attempt = 0
        while True:
            attempt += 1
            try:
                return fn()
            except TransientStoreError as exc:
                spent = self.clock() - started
                if spent >= self.retry_for:
                    raise StoreError(f"{exc} (gave up after {attempt} attempts in "
                                     f"{spent:.0f} s; --retry-for sets how long)") from exc
                delay = min(self.retry_for - spent, self.jitter(
                    0, min(self.max_delay, self.base_delay * 2 ** attempt)))
                log.info("store.retry", url=self.url, attempt=attempt, error=str(exc),
                         delay=round(delay, 3))
                self.sleep(delay)

    def check(self) -> None:
        self._call(self.inner.check)

    def get(self, key: str) -> bytes:
        return self._call(lambda: self.inner.get(key))

    def put(self, key: str, data: bytes, *, overwrite: bool = False) -> bool:
        return self._call(lambda: self.inner.put(key, data, overwrite=overwrite))

    def exists(self, key: str) -> bool:
        return self._call(lambda: self.inner.exists(key))

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        # a listing is retried whole: restarting a half-read one would repeat objects
        return iter(self._call(lambda: list(self.inner.list(prefix))))

    def delete(self, key: str) -> None:
        self._call(lambda: self.inner.delete(key))

    def flush(self, keys: Collection[str] | None = None) -> None:
        self._call(lambda: self.inner.flush(keys))
