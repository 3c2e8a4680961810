"""A store in a dict, for unit tests of the wrappers (the real backends have their
contract suite in tests/e2e/test_store_contract.py)."""

import threading
from collections.abc import Collection, Iterator
from datetime import UTC, datetime

from pitreos.errors import BlobNotFound
from pitreos.stores.base import DeletedKept, ObjectInfo, StoreProperties


class MemoryStore:
    properties = StoreProperties(remote=False)

    def __init__(self) -> None:
        self.url = "memory://test"
        self.objects: dict[str, bytes] = {}
        self.lock = threading.Lock()

    def check(self) -> None:
        return None

    def get(self, key: str) -> bytes:
        with self.lock:
            if key not in self.objects:
                raise BlobNotFound(key, self.url)
            return self.objects[key]

    def put(self, key: str, data: bytes, *, overwrite: bool = False) -> bool:
        with self.lock:
            if key in self.objects and not overwrite:
                return False
            self.objects[key] = bytes(data)
            return True

    def exists(self, key: str) -> bool:
        with self.lock:
            return key in self.objects

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        with self.lock:
            items = [(k, len(v)) for k, v in self.objects.items() if k.startswith(prefix)]
        for key, size in items:
            yield ObjectInfo(key, size, datetime.now(UTC))

    def delete(self, key: str) -> None:
        with self.lock:
            self.objects.pop(key, None)

    def deleted_kept(self) -> DeletedKept | None:
        return None

    def flush(self, keys: Collection[str] | None = None) -> None:
        return None
