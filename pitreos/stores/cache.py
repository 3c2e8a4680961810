"""A local cache in front of a store, for objects that never change once written.

Reads try the cache first and fill it; writes go to the store alone, and a delete
reaches both. Only objects that pass ``verify`` enter the
cache, and a cached copy is checked again when read: a cache on local disk is a second
copy that can rot, and a rotten one must never be served (it is dropped, and the store
asked instead). For blobs ``verify`` decodes the blob against the hashes in its own
header; the repository then checks it against the manifest as for any read.
"""

from collections.abc import Callable

from ..errors import BlobNotFound
from ..log import get_logger
from .base import Store, StoreWrapper

log = get_logger(__name__)


class CachingStore(StoreWrapper):
    def __init__(self, inner: Store, cache: Store, *, cacheable: Callable[[str], bool],
                 verify: Callable[[str, bytes], bool]) -> None:
        super().__init__(inner)
        self.cache = cache
        self.cacheable = cacheable
        self.verify = verify

    def check(self) -> None:
        self.inner.check()
        self.cache.check()

    def get(self, key: str) -> bytes:
        if not self.cacheable(key):
            return self.inner.get(key)
        try:
            data = self.cache.get(key)
        except BlobNotFound:
            pass
        else:
            if self.verify(key, data):
                return data
            log.warning("cache.dropped", key=key, cache=self.cache.url, reason="failed its check")
            self.cache.delete(key)
        data = self.inner.get(key)
        if self.verify(key, data):
            self.cache.put(key, data, overwrite=True)
        return data

    def delete(self, key: str) -> None:
        self.inner.delete(key)
        if self.cacheable(key):
            self.cache.delete(key)
