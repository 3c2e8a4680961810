"""The repository: how backups and blobs are laid out in a store.

Layout (documented in ``schema/manifest.md``)::

    blobs/<sha1[:2]>/<sha1>       one chunk, encoded by :mod:`pitreos.blobcodec`
    manifests/<name>.yaml         one backup, written after all its blobs
    index/manifests.txt           names of the manifests, for stores that cannot list
"""

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

import structlog

from . import manifest as mf
from .blobcodec import BlobCodec
from .errors import BackupNotFound, BlobNotFound, IntegrityError, ManifestError
from .hashing import ChunkDigest
from .stores.base import Store

BLOB_PREFIX = "blobs/"
MANIFEST_PREFIX = "manifests/"
MANIFEST_SUFFIX = ".yaml"
INDEX_KEY = "index/manifests.txt"
_INTEGRITY_ATTEMPTS = 3
log = structlog.get_logger(__name__)


def blob_key(sha1: str) -> str:
    return f"{BLOB_PREFIX}{sha1[:2]}/{sha1}"


def manifest_key(name: str) -> str:
    return f"{MANIFEST_PREFIX}{name}{MANIFEST_SUFFIX}"


@dataclass(frozen=True, slots=True)
class StoredBlob:
    sha1: str
    stored_size: int
    modified: datetime


def parse_manifest(name: str, data: bytes) -> mf.Manifest:
    """Load the manifest stored under ``name``; it must name itself so."""
    manifest = mf.load(data, name)
    if manifest.name != name:
        raise ManifestError(f"manifest {name} names itself {manifest.name!r}")
    return manifest


class Repository:
    """Blob and manifest operations on top of a :class:`~pitreos.stores.base.Store`.

    ``cache`` is an optional second store (a local directory) that reads try first;
    only blobs whose hashes were checked enter it.
    """

    def __init__(self, store: Store, codec: BlobCodec | None = None,
                 cache: Store | None = None) -> None:
        self.store = store
        self.codec = codec or BlobCodec()
        self.cache = cache

    @property
    def url(self) -> str:
        return self.store.url

    # Blobs
    def put_blob(self, sha1: str, blob: bytes) -> bool:
        """Store an encoded blob unless present; True when this call wrote it. It may be
        durable only after :meth:`flush`."""
        return self.store.put(blob_key(sha1), blob)

    def replace_blob(self, sha1: str, blob: bytes) -> None:
        """Overwrite a damaged blob with a good one."""
        self.store.put(blob_key(sha1), blob, overwrite=True)

    def flush(self) -> None:
        """Make every blob put so far durable: before a catalog row or manifest says so."""
        self.store.flush()

    def get_blob(self, sha1: str) -> bytes:
        return self.store.get(blob_key(sha1))

    def read_chunk(self, chunk: ChunkDigest) -> tuple[bytes, int]:
        """Return a chunk, both hashes checked, and the bytes fetched from the store.

        A blob that fails its check is fetched again (a body cut short in transit can
        slip past the transport) before the failure is reported.
        """
        key = blob_key(chunk.sha1)
        if self.cache is not None:
            try:
                return self.codec.decode(self.cache.get(key), chunk), 0
            except (BlobNotFound, IntegrityError):
                self.cache.delete(key)
        for attempt in range(1, _INTEGRITY_ATTEMPTS + 1):
            blob = self.store.get(key)
            try:
                data = self.codec.decode(blob, chunk)
            except IntegrityError as exc:
                if attempt == _INTEGRITY_ATTEMPTS:
                    raise IntegrityError(f"{exc} (in store {self.url})") from exc
                log.warning("blob.refetch", blob=chunk.sha1, error=str(exc))
                continue
            if self.cache is not None:
                self.cache.put(key, blob, overwrite=True)
            return data, len(blob)
        raise AssertionError("unreachable")

    def list_blobs(self) -> Iterator[StoredBlob]:
        for info in self.store.list(BLOB_PREFIX):
            sha1 = info.key.rpartition("/")[2]
            if len(sha1) == 40:
                yield StoredBlob(sha1, info.size, info.modified)

    def delete_blob(self, sha1: str) -> None:
        self.store.delete(blob_key(sha1))

    # Manifests
    def manifest_names(self) -> list[str]:
        """Names of every complete backup in the store, oldest first."""
        if not self.store.listable:
            return sorted(self.store.get(INDEX_KEY).decode().split())
        names = [
            info.key[len(MANIFEST_PREFIX) : -len(MANIFEST_SUFFIX)]
            for info in self.store.list(MANIFEST_PREFIX)
            if info.key.endswith(MANIFEST_SUFFIX) and "/" not in info.key[len(MANIFEST_PREFIX):]
        ]
        return sorted(names)

    def read_manifest(self, name: str) -> mf.Manifest:
        try:
            data = self.store.get(manifest_key(name))
        except BlobNotFound as exc:
            raise BackupNotFound(f"no backup named {name!r} in store {self.url}") from exc
        return parse_manifest(name, data)

    def write_manifest(self, manifest: mf.Manifest) -> bool:
        """Write a manifest unless one of that name exists; True when written. Its blobs
        are made durable first, and it is durable when this returns."""
        self.store.flush()
        if not self.store.put(manifest_key(manifest.name), mf.dump(manifest)):
            return False
        self.update_index()
        self.store.flush()
        return True

    def delete_manifest(self, name: str) -> None:
        self.store.delete(manifest_key(name))
        self.update_index()

    def update_index(self) -> None:
        """Rewrite the list of manifests that stores without listing (HTTP) read.

        Rebuilt from a listing each time, so concurrent writers converge: each one's
        index holds at least every manifest written before it listed.
        """
        names = "".join(f"{name}\n" for name in self.manifest_names())
        self.store.put(INDEX_KEY, names.encode(), overwrite=True)
