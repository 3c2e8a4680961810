"""The repository: how backups, blobs and markers are laid out in a store, and the only
module that knows it. Everything above it asks the repository, never the store.

Layout (documented in ``schema/manifest.md``)::

    blobs/<sha1[:2]>/<sha1>       one chunk, encoded by :mod:`pitreos.blobcodec`
    manifests/<name>.yaml         one backup, written after all its blobs
    index/manifests.txt           names of the manifests, for stores that cannot list
    locks/<kind>-<id>.json        markers of running backups and gcs (:mod:`pitreos.locks`)

:mod:`pitreos.locks` is imported by the methods that handle markers: its two records
cost ~3.5 ms of every command's start on 2 cores (dataclasses build their methods at
import), and `pitreos list` handles none.
"""

from __future__ import annotations

import contextlib
import enum
import json
import time
from collections.abc import Collection, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from . import manifest as mf
from .blobcodec import BlobCodec, Encoder, parse_header
from .defaults import DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE
from .errors import (
    BackupNotFound,
    BlobNotFound,
    IntegrityError,
    ManifestError,
    StoreError,
    StoreExists,
    StoreNotFound,
)
from .hashing import ChunkDigest
from .log import get_logger
from .stores.base import DeletedKept, ObjectInfo, Store, StoreProperties
from .stores.local import LocalStore

if TYPE_CHECKING:
    from . import locks
    from .stores.limit import ConcurrencyLimit

BLOB_PREFIX = "blobs/"
MANIFEST_PREFIX = "manifests/"
MANIFEST_SUFFIX = ".yaml"
INDEX_KEY = "index/manifests.txt"
LOCK_PREFIX = "locks/"
CLOCK_PREFIX = "clock/"  # short-lived objects that read the store's clock
RETIRED_PREFIX = "retired/"  # an empty object per name of a backup gc deleted
STORE_ID_KEY = "pitreos-store.json"
STORE_FORMAT = 1
_INTEGRITY_ATTEMPTS = 3
log = get_logger(__name__)


def blob_key(sha1: str) -> str:
    return f"{BLOB_PREFIX}{sha1[:2]}/{sha1}"


def manifest_key(name: str) -> str:
    return f"{MANIFEST_PREFIX}{name}{MANIFEST_SUFFIX}"


def retired_key(name: str) -> str:
    return f"{RETIRED_PREFIX}{name}"


def marker_key(marker: locks.Marker) -> str:
    return f"{LOCK_PREFIX}{marker.kind}-{marker.id}.json"


def is_blob_key(key: str) -> bool:
    """Blobs never change once written: the only objects a cache may keep."""
    return key.startswith(BLOB_PREFIX)


def blob_is_sound(codec: BlobCodec, key: str, blob: bytes) -> bool:
    """Whether a blob decodes to data matching its name (sha1) and the blake3 of its own
    header: what a cache may keep, before any manifest is consulted."""
    sha1 = key.rpartition("/")[2]
    try:
        header = parse_header(blob, sha1)
        codec.decode(blob, ChunkDigest(sha1, header.blake3), check_name=True)
    except IntegrityError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class StoredBlob:
    sha1: str
    stored_size: int
    modified: datetime


class BlobState(enum.Enum):
    """What the store holds under a sha1, compared with the chunk expected there."""

    SOUND = "sound"  # the expected chunk (its blake3 checked)
    DAMAGED = "damaged"  # absent, cut short, or not decodable: to be stored again
    OTHER = "other"  # a sound blob of other data: a sha1 collision


@dataclass(frozen=True, slots=True)
class StoreDescription:
    """The object ``pitreos init`` writes (``pitreos-store.json``): what the store is."""

    format: int
    id: str
    created: str  # RFC 3339
    chunk_size: int  # the default of this store's backups

    def to_json(self) -> dict[str, object]:
        return {"format": self.format, "id": self.id, "created": self.created,
                "chunk_size": self.chunk_size}

    @classmethod
    def from_json(cls, doc: object, where: str) -> StoreDescription:
        if not isinstance(doc, dict):
            raise StoreError(f"{where} is not a JSON object")
        version, store_id = doc.get("format"), doc.get("id")
        chunk_size = doc.get("chunk_size", DEFAULT_CHUNK_SIZE)
        if version != STORE_FORMAT:
            raise StoreError(f"{where} has format {version!r}; this pitreos reads format "
                             f"{STORE_FORMAT}: upgrade pitreos")
        if not isinstance(store_id, str) or not store_id:
            raise StoreError(f"{where} holds no id")
        if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or not (
                MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE):
            raise StoreError(f"{where} has an invalid chunk_size {chunk_size!r}")
        return cls(version, store_id, str(doc.get("created", "")), chunk_size)


def parse_manifest(name: str, data: bytes) -> mf.Manifest:
    """Load the manifest stored under ``name``; it must name itself so."""
    manifest = mf.load(data, name)
    if manifest.name != name:
        raise ManifestError(f"manifest {name} names itself {manifest.name!r}")
    return manifest


class Repository:
    """Blob, manifest and marker operations on top of a
    :class:`~pitreos.stores.base.Store` (with its wrappers)."""

    def __init__(self, store: Store, codec: BlobCodec | None = None,
                 limit: ConcurrencyLimit | None = None) -> None:
        self._store = store
        self._codec = codec or BlobCodec()
        self._limit = limit

    def transfer(self) -> AbstractContextManager[None]:
        """Around the work of one blob (read, compress, store; or fetch, check, write):
        a slot of the store's requests in flight, so that a thread waiting for the link
        holds no chunk in memory. Nothing on a store without a limit."""
        return self._limit.slot() if self._limit is not None else contextlib.nullcontext()

    @property
    def limit(self) -> ConcurrencyLimit | None:
        return self._limit

    def fit_in_flight(self, chunk_size: int) -> None:
        """Bound the requests in flight by the memory their chunks hold
        (:meth:`~pitreos.stores.limit.ConcurrencyLimit.fit_chunks`)."""
        if self._limit is not None:
            self._limit.fit_chunks(chunk_size)

    @property
    def url(self) -> str:
        return self._store.url

    @property
    def properties(self) -> StoreProperties:
        return self._store.properties

    @property
    def crosses_processes(self) -> bool:
        """Whether a copy of this repository pickled into a worker process works on the
        same store: a local directory does; an object store's client holds connections
        and threads, and wrappers (counting, caching) keep state of this process."""
        return isinstance(self._store, LocalStore)

    def check(self) -> StoreDescription | None:
        """Raise :class:`~pitreos.errors.StoreNotFound` unless a pitreos store is there:
        one with its description (written by ``pitreos init``), or one made before
        descriptions that holds backups. A mistyped URL or a forgotten prefix is then an
        error, never a new, empty store. Returns the description (None: an older store)."""
        self._store.check()
        description = self.describe()
        if description is not None:
            return description
        if self.properties.listable:
            found = next(iter(self._store.list(MANIFEST_PREFIX)), None) is not None
        else:
            found = self._store.exists(INDEX_KEY)
        if not found:
            raise StoreNotFound(f"no pitreos store at {self.url}: run `pitreos init --store "
                                f"{self.url}` to create one")
        return None

    def deleted_kept(self) -> DeletedKept | None:
        """What the store keeps (and bills) of what is deleted (soft delete, versioning);
        :class:`~pitreos.errors.StoreError` when it cannot tell."""
        return self._store.deleted_kept()

    # Identity
    def describe(self) -> StoreDescription | None:
        """The store's description (None: none written, as in stores made before
        ``pitreos init``)."""
        try:
            doc = json.loads(self._store.get(STORE_ID_KEY))
        except BlobNotFound:
            return None
        except ValueError as exc:
            raise StoreError(f"{STORE_ID_KEY} in store {self.url} is damaged ({exc})") from exc
        return StoreDescription.from_json(doc, f"{STORE_ID_KEY} in store {self.url}")

    def store_id(self) -> str | None:
        """The id written when the store was created (None: a store made before ids,
        or one emptied or recreated since): a catalog mirrors one store id."""
        description = self.describe()
        return description.id if description is not None else None

    def initialize(self, chunk_size: int) -> StoreDescription:
        """Write the store's description: what makes a location a pitreos store. A
        conditional write: of two machines that init the same store at once, one wins and
        the other is told that the store exists."""
        from .locks import random_id

        doc = StoreDescription(STORE_FORMAT, random_id(),
                               datetime.now(UTC).isoformat(timespec="seconds"), chunk_size)
        if not self._store.put(STORE_ID_KEY, json.dumps(doc.to_json()).encode()):
            raise StoreExists(f"{self.url} is already a pitreos store")
        self._store.flush()
        return doc

    # Blobs
    def encode_blob(self, data: bytes | bytearray, chunk: ChunkDigest) -> bytes:
        return self._codec.encode(data, chunk)

    def blob_encoder(self) -> AbstractContextManager[Encoder]:
        """A turn at encoding blobs, at most one a core at once (see :class:`BlobCodec`):
        read the chunk inside it."""
        return self._codec.encoder()

    def check_blob(self, blob: bytes, chunk: ChunkDigest) -> int:
        """Raise :class:`~pitreos.errors.IntegrityError` unless ``blob`` holds ``chunk``,
        both hashes checked (what ``verify --deep`` and ``copy`` vouch for); returns the
        chunk's length."""
        return len(self._codec.decode(blob, chunk, check_name=True))

    def put_blob(self, sha1: str, blob: bytes) -> bool:
        """Store an encoded blob unless present; True when this call wrote it. It may be
        durable only after :meth:`flush`."""
        return self._store.put(blob_key(sha1), blob)

    def replace_blob(self, sha1: str, blob: bytes) -> None:
        """Overwrite a damaged blob with a good one."""
        self._store.put(blob_key(sha1), blob, overwrite=True)

    def flush(self, sha1s: Collection[str] | None = None) -> None:
        """Make the blobs named durable (None: every object put so far, by any process):
        before a catalog row or manifest says they are there."""
        self._store.flush(None if sha1s is None else [blob_key(sha1) for sha1 in sha1s])

    def get_blob(self, sha1: str) -> bytes:
        return self._store.get(blob_key(sha1))

    def blob_exists(self, sha1: str) -> bool:
        return self._store.exists(blob_key(sha1))

    def examine_blob(self, chunk: ChunkDigest, *, check_name: bool = False
                     ) -> tuple[BlobState, str | None]:
        """Check the blob stored under ``chunk.sha1`` whole. Returns its state and, for
        :attr:`BlobState.OTHER`, the blake3 it holds; the reason for
        :attr:`BlobState.DAMAGED`. A backup's own hashes pair the name with the
        blake3; ``check_name`` is for hashes read from elsewhere (``copy``'s manifest):
        a blob whose data is not its name's is then damaged too."""
        try:
            stored = self.get_blob(chunk.sha1)
            header = parse_header(stored, chunk.sha1)
            if header.blake3 != chunk.blake3:
                return BlobState.OTHER, header.blake3
            self._codec.decode(stored, chunk, check_name=check_name)
        except (IntegrityError, BlobNotFound) as exc:
            return BlobState.DAMAGED, str(exc)
        return BlobState.SOUND, None

    def read_chunk(self, chunk: ChunkDigest) -> tuple[bytes, int]:
        """Return a chunk, its blake3 checked, and the bytes fetched from the store."""
        with self.chunk_read(chunk) as found:
            return found

    @contextlib.contextmanager
    def chunk_read(self, chunk: ChunkDigest) -> Iterator[tuple[bytes, int]]:
        """A chunk, its blake3 checked, and the bytes fetched from the store, for use
        inside the block, which runs in a turn (:meth:`chunk_turn`); the blob is fetched
        before the turn.

        A blob that fails its check is fetched again (a body cut short in transit can
        slip past the transport) before the failure is reported.
        """
        for attempt in range(1, _INTEGRITY_ATTEMPTS + 1):
            blob = self.get_blob(chunk.sha1)
            with self.chunk_turn():
                try:
                    data = self._codec.decode(blob, chunk)
                except IntegrityError as exc:
                    if attempt == _INTEGRITY_ATTEMPTS:
                        raise IntegrityError(f"{exc} (in store {self.url})") from exc
                    log.warning("blob.refetch", blob=chunk.sha1, error=str(exc))
                    continue
                fetched = len(blob)
                del blob  # the block holds the chunk, not its blob too
                yield data, fetched
                return

    def chunk_turn(self) -> AbstractContextManager[None]:
        """A turn at holding a chunk read or fetched for writing: at most one a core at
        once, so that the chunks held at once are as few as the cores, not as many as
        the requests in flight."""
        return self._codec.chunk_turn()

    def list_blobs(self) -> Iterator[StoredBlob]:
        for info in self._store.list(BLOB_PREFIX):
            sha1 = info.key.rpartition("/")[2]
            if len(sha1) == 40:
                yield StoredBlob(sha1, info.size, info.modified)

    def delete_blob(self, sha1: str) -> None:
        self._store.delete(blob_key(sha1))

    # Manifests
    def manifest_names(self) -> list[str]:
        """Names of every complete backup in the store, oldest first."""
        return sorted(self.manifest_sizes())

    def manifest_sizes(self) -> dict[str, int | None]:
        """Every complete backup's name, with its manifest's size in bytes from the
        listing (None for all where the store cannot list: its index names them)."""
        if not self.properties.listable:
            return dict.fromkeys(self._store.get(INDEX_KEY).decode().split())
        return {
            info.key[len(MANIFEST_PREFIX) : -len(MANIFEST_SUFFIX)]: info.size
            for info in self._store.list(MANIFEST_PREFIX)
            if info.key.endswith(MANIFEST_SUFFIX) and "/" not in info.key[len(MANIFEST_PREFIX):]
        }

    def manifest_bytes(self, name: str) -> bytes | None:
        """The stored manifest, unparsed; None when it is gone (deleted since listing)."""
        try:
            return self._store.get(manifest_key(name))
        except BlobNotFound:
            return None

    def read_manifest(self, name: str) -> mf.Manifest:
        data = self.manifest_bytes(name)
        if data is None:
            raise BackupNotFound(f"no backup named {name!r} in store {self.url}")
        return parse_manifest(name, data)

    def write_manifest(self, manifest: mf.Manifest) -> bool:
        """Publish a manifest unless another of that name exists; True when published.

        The caller has made its blobs durable (:meth:`flush`), and the manifest is
        durable when this returns: this is the commit point of a backup. A conditional
        write retried after its first try succeeded unseen answers "exists": the stored
        bytes are then read back, and equal bytes are this very write. What follows (the
        index that stores without listing read) is repaired by any later write, so its
        failure is a warning.
        """
        data = mf.dump(manifest)
        key = manifest_key(manifest.name)
        if not self._store.put(key, data):
            try:
                existing = self._store.get(key)
            except BlobNotFound:
                existing = None
            if existing != data:
                return False  # the name belongs to another backup
        try:
            self._store.flush([key])
        except StoreError:
            # not known to be durable: take it back, so no listed manifest can vanish
            with contextlib.suppress(StoreError):
                self._store.delete(key)
            raise
        try:
            self.update_index()
        except StoreError as exc:
            log.warning("manifest.index_not_updated", backup=manifest.name, error=str(exc),
                        hint="the backup is complete; the next write to the store "
                        "rewrites the index")
        return True

    def retire_names(self, names: Collection[str]) -> None:
        """Record, durably, that these backup names are never to be given again: before
        their manifests are deleted (:meth:`delete_manifest`), so that a backup in any
        process, whatever its catalog knows, sees the name as taken (:meth:`name_retired`)."""
        keys = [retired_key(name) for name in names]
        for key in keys:
            self._store.put(key, b"", overwrite=True)
        self._store.flush(keys)

    def name_retired(self, name: str) -> bool:
        """Whether a backup of this name was deleted by gc (:meth:`retire_names`)."""
        return self._store.exists(retired_key(name))

    def delete_manifest(self, name: str, *, update_index: bool = True) -> None:
        """Delete a backup's manifest, whose name the caller retired first;
        ``update_index=False`` leaves the index to one :meth:`update_index` after a batch
        of deletions (each rewrite lists them all)."""
        self._store.delete(manifest_key(name))
        if update_index:
            self.update_index()

    def update_index(self) -> None:
        """Rewrite the list of manifests that stores without listing (HTTP) read.

        Rebuilt from a listing each time, so concurrent writers converge: each one's
        index holds at least every manifest written before it listed.
        """
        names = "".join(f"{name}\n" for name in self.manifest_names())
        self._store.put(INDEX_KEY, names.encode(), overwrite=True)

    # Markers of running operations
    def write_marker(self, marker: locks.Marker) -> float:
        """Write (or refresh) a marker; returns the store's time of the write, read back
        from the store: the protocol orders events by the store's clock alone."""
        from . import locks

        key = marker_key(marker)
        self._store.put(key, locks.encode(marker), overwrite=True)
        for info in self._store.list(key):
            if info.key == key:
                return info.modified.timestamp()
        raise StoreError(f"marker {key} vanished from store {self.url} as it was written")

    def store_time(self) -> float:
        """The store's clock now: the time it gives a small object written and removed
        (on a read-only store, this machine's clock)."""
        if self.properties.read_only:
            return time.time()
        from .locks import random_id

        key = f"{CLOCK_PREFIX}{random_id()}"
        self._store.put(key, b"", overwrite=True)
        try:
            probes = list(self._store.list(CLOCK_PREFIX))  # one listing, as for the key
        finally:
            self._store.delete(key)
        for info in probes:
            if info.key == key:
                now = info.modified.timestamp()
                self._remove_stale_probes(probes, now)
                return now
        raise StoreError(f"object {key} vanished from store {self.url} as it was written")

    def _remove_stale_probes(self, probes: list[ObjectInfo], now: float) -> None:
        """Probes that a process killed between writing and deleting one left behind. A
        probe lives for one write and one listing; one older than a marker's staleness
        (by the store's clock) has no reader left."""
        from .locks import DEFAULT_STALE_AFTER

        for info in probes:
            if now - info.modified.timestamp() > DEFAULT_STALE_AFTER:
                self._store.delete(info.key)
                log.info("store.clock_probe_removed", key=info.key)

    def remove_marker(self, marker: locks.Marker) -> None:
        self._store.delete(marker_key(marker))

    def markers(self) -> list[locks.SeenMarker]:
        """Every readable marker with the store's time of its last write; one that is
        damaged or not ours is ignored, never trusted."""
        from . import locks

        found = []
        for info in self._store.list(LOCK_PREFIX):
            try:
                marker = locks.decode(self._store.get(info.key))
            except BlobNotFound:  # removed while listing
                continue
            if marker is not None:
                found.append(locks.SeenMarker(marker, info.modified.timestamp()))
        return found
