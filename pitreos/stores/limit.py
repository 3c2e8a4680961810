"""A bound on the requests in flight to one store, whatever the number of threads.

Workers above a backend's connection pool would each open a connection of their own and
throw it away (urllib3 warns "connection pool is full"), and a server can answer a burst
with throttling. The limit is the backend's declared ``connections``.
"""

import threading
from collections.abc import Iterator

from .base import ObjectInfo, Store, StoreWrapper


class LimitedStore(StoreWrapper):
    def __init__(self, inner: Store, max_in_flight: int) -> None:
        super().__init__(inner)
        self.max_in_flight = max(1, max_in_flight)
        self._slots = threading.BoundedSemaphore(self.max_in_flight)

    def get(self, key: str) -> bytes:
        with self._slots:
            return self.inner.get(key)

    def put(self, key: str, data: bytes, *, overwrite: bool = False) -> bool:
        with self._slots:
            return self.inner.put(key, data, overwrite=overwrite)

    def exists(self, key: str) -> bool:
        with self._slots:
            return self.inner.exists(key)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        # one slot for the whole listing: its pages are requested one after another
        with self._slots:
            yield from self.inner.list(prefix)

    def delete(self, key: str) -> None:
        with self._slots:
            self.inner.delete(key)
