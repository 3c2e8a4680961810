"""Retries with exponential backoff and jitter, for every backend at once.

Only :class:`~pitreos.errors.TransientStoreError` is retried (throttling, 5xx, reset or
timed-out connections); after the last attempt the error is raised, so a store that keeps
failing fails the command in bounded time. A conditional write that is retried after its
first attempt succeeded unseen answers "already exists", which callers treat as stored.
"""

import random
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from ..errors import StoreError, TransientStoreError
from ..log import get_logger
from .base import ObjectInfo, Store, StoreWrapper

T = TypeVar("T")
log = get_logger(__name__)


class RetryingStore(StoreWrapper):
    def __init__(self, inner: Store, *, attempts: int = 6, base_delay: float = 0.2,
                 max_delay: float = 5.0, sleep: Callable[[float], None] = time.sleep,
                 jitter: Callable[[float, float], float] = random.uniform) -> None:
        super().__init__(inner)
        self.attempts = attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.sleep = sleep
        self.jitter = jitter

    def _call(self, fn: Callable[[], T]) -> T:
        for attempt in range(1, self.attempts + 1):
            try:
                return fn()
            except TransientStoreError as exc:
                if attempt == self.attempts:
                    raise StoreError(f"{exc} (gave up after {attempt} attempts)") from exc
                delay = self.jitter(0, min(self.max_delay, self.base_delay * 2 ** attempt))
                log.info("store.retry", url=self.url, attempt=attempt, error=str(exc),
                         delay=round(delay, 3))
                self.sleep(delay)
        raise AssertionError("unreachable")

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

    def flush(self) -> None:
        self._call(self.inner.flush)
