"""The store protocol: keyed objects, which every backend implements and every wrapper
(:mod:`~pitreos.stores.retry`, :mod:`~pitreos.stores.limit`,
:mod:`~pitreos.stores.cache`, :mod:`~pitreos.stores.counting`) passes on.

Keys are ``/``-separated relative paths. A put is visible at once but may be durable
only after :meth:`Store.flush`: callers flush before they record or publish anything
that relies on earlier puts (a catalog row, a manifest).
"""

import abc
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple, Protocol

from ..errors import StoreError


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int
    modified: datetime


class DeletedKept(NamedTuple):
    """What keeps a bucket's deleted objects (and bills them), and for how long. A
    NamedTuple, not a dataclass: every command imports this module, and a dataclass
    costs ~1 ms of each start (docs/performance.md, eighteenth pass)."""

    by: str  # "soft delete" (GCS, Azure), "versioning" (S3)
    seconds: int | None  # None: until removed by hand (no rule expires them)


@dataclass(frozen=True, slots=True)
class StoreProperties:
    """What a backend is, declared by the backend (callers never guess from its URL).

    ``remote``: every request is a network round trip, so many requests in flight pay
    off; ``connections``: how many requests it can have in flight at once (its pool);
    ``listable``: False for plain HTTP, where the repository reads its index instead;
    ``conditional_put``: a put without overwrite is create-only-if-absent on the server.
    """

    remote: bool
    read_only: bool = False
    listable: bool = True
    conditional_put: bool = True
    connections: int | None = None  # None: no limit of its own


class Store(Protocol):
    """Keyed object storage. ``url`` is safe to print: it never holds a secret."""

    @property
    def url(self) -> str: ...

    @property
    def properties(self) -> StoreProperties: ...

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

    def deleted_kept(self) -> DeletedKept | None:
        """What the bucket keeps (and bills) of objects after they are deleted (GCS and
        Azure soft delete, S3 versioning), or None: nothing. Raises
        :class:`~pitreos.errors.StoreError` when it cannot tell (credentials that may
        not read the bucket's settings)."""

    def flush(self, keys: Collection[str] | None = None) -> None:
        """Make the objects put under ``keys`` durable; None: every object put so far,
        by any process. An object store holds an object durably once its put returns, so
        this does nothing there; a local directory syncs its file system once, or a few
        objects one by one while much else waits to be written there."""


class ObjectStoreBase(abc.ABC):
    """What the object-store backends share: a key prefix inside the bucket, errors
    that say where they happened, and a put that is durable when it returns.

    A backend runs its SDK calls inside :meth:`failures`, and says in :meth:`translate`
    what its SDK's exceptions mean (transient, denied, ...)."""

    def __init__(self, url: str, prefix: str) -> None:
        self._url = url
        stripped = prefix.strip("/")
        self.prefix = f"{stripped}/" if stripped else ""

    @property
    def url(self) -> str:
        return self._url

    def where(self, action: str, key: str) -> str:
        """``"read KEY in store URL"``, or ``"open store URL"`` without a key."""
        return f"{action} {key} in store {self._url}" if key else f"{action} store {self._url}"

    def error(self, action: str, key: str, reason: str,
              kind: type[StoreError] = StoreError) -> StoreError:
        return kind(f"cannot {self.where(action, key)}: {reason}")

    @abc.abstractmethod
    def translate(self, action: str, key: str, exc: Exception) -> StoreError:
        """The pitreos error for an exception of the backend's SDK."""

    @contextmanager
    def failures(self, action: str, key: str) -> Iterator[None]:
        """Turn whatever the SDK raises inside into a pitreos error saying where."""
        try:
            yield
        except StoreError:
            raise
        except Exception as exc:
            raise self.translate(action, key, exc) from exc

    def flush(self, keys: Collection[str] | None = None) -> None:
        return None  # an object store holds an object durably once its put returns

    def deleted_kept(self) -> DeletedKept | None:
        return None


class StoreWrapper:
    """Base of the wrappers: passes everything to ``inner``; a wrapper overrides what
    it changes."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner

    @property
    def url(self) -> str:
        return self.inner.url

    @property
    def properties(self) -> StoreProperties:
        return self.inner.properties

    def check(self) -> None:
        self.inner.check()

    def get(self, key: str) -> bytes:
        return self.inner.get(key)

    def put(self, key: str, data: bytes, *, overwrite: bool = False) -> bool:
        return self.inner.put(key, data, overwrite=overwrite)

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        return self.inner.list(prefix)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def flush(self, keys: Collection[str] | None = None) -> None:
        self.inner.flush(keys)

    def deleted_kept(self) -> DeletedKept | None:
        return self.inner.deleted_kept()
