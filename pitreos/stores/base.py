"""The store protocol: five operations on keyed objects, which every backend implements.

Keys are ``/``-separated relative paths. A put is visible at once but may be durable
only after :meth:`Store.flush`: callers flush before they record or publish anything
that relies on earlier puts (a catalog row, a manifest). Retry, concurrency limits and caching are
wrappers around this protocol (see :mod:`pitreos.stores.retry` and
:mod:`pitreos.stores.cache`), written once for every backend.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int
    modified: datetime


class Store(Protocol):
    """Keyed object storage. ``url`` is safe to print: it never holds a secret."""

    url: str
    read_only: bool
    listable: bool  # False: list() is unsupported (plain HTTP); the repository uses its index

    def check(self) -> None:
        """Raise :class:`~pitreos.errors.StoreNotFound` unless the store exists."""

    def get(self, key: str) -> bytes:
        """The object's bytes; :class:`~pitreos.errors.BlobNotFound` when absent."""

    def put(self, key: str, data: bytes, *, overwrite: bool = False) -> bool:
        """Store ``data``. Without ``overwrite`` the write is conditional (create only if
        absent) and returns False when the object already existed; True when written."""

    def exists(self, key: str) -> bool:
        """Whether the object exists. An error reaching the store raises; it is never
        reported as "absent"."""

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix``, in no particular order."""

    def delete(self, key: str) -> None:
        """Remove the object; removing an absent object is not an error."""

    def flush(self) -> None:
        """Make every object put so far durable. An object store holds an object durably
        once its put returns, so this does nothing there; a local directory syncs its
        file system once instead of once per object."""


class DurableOnPut:
    """Mixed into the backends whose put returns once the object is durable (object
    stores): :meth:`Store.flush` has nothing to do there."""

    def flush(self) -> None:
        return None
