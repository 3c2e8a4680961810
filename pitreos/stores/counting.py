"""Counts the requests and bytes a store is asked for, per operation: for the benchmark
(requests an object store would bill) and the operator's summaries.

One request per get, put, exists and delete; a listing counts one request per page of
1,000 objects (GCS's and S3's page size).
"""

import threading
from collections.abc import Iterator

from .base import ObjectInfo, Store, StoreWrapper

LIST_PAGE = 1000


class CountingStore(StoreWrapper):
    def __init__(self, inner: Store) -> None:
        super().__init__(inner)
        self._counts: dict[str, int] = {}
        self._bytes: dict[str, int] = {}
        self._lock = threading.Lock()

    def _count(self, op: str, requests: int = 1, nbytes: int = 0) -> None:
        with self._lock:
            self._counts[op] = self._counts.get(op, 0) + requests
            self._bytes[op] = self._bytes.get(op, 0) + nbytes

    def requests(self) -> dict[str, int]:
        """Requests made so far, by operation."""
        with self._lock:
            return dict(self._counts)

    def bytes_moved(self) -> dict[str, int]:
        """Bytes read (get) and written (put) so far."""
        with self._lock:
            return dict(self._bytes)

    def check(self) -> None:
        self._count("check")
        self.inner.check()

    def get(self, key: str) -> bytes:
        data = self.inner.get(key)
        self._count("get", nbytes=len(data))
        return data

    def put(self, key: str, data: bytes, *, overwrite: bool = False) -> bool:
        self._count("put", nbytes=len(data))
        return self.inner.put(key, data, overwrite=overwrite)

    def exists(self, key: str) -> bool:
        self._count("exists")
        return self.inner.exists(key)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        listed = 0
        try:
            for info in self.inner.list(prefix):
                listed += 1
                yield info
        finally:
            self._count("list", max(1, -(-listed // LIST_PAGE)))

    def delete(self, key: str) -> None:
        self._count("delete")
        self.inner.delete(key)
