"""A store opened together with its catalog: the usual starting point of every command,
and the one place where the layers are put together (backend, its wrappers, the
repository on top, the catalog beside it)."""

import contextlib
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from . import locallock
from .blobcodec import BlobCodec
from .catalog import Catalog, default_catalog_path
from .cores import usable_cores
from .defaults import ADAPTIVE_MAX, DEFAULT_CHUNK_SIZE, DEFAULT_REQUEST_TIMEOUT, DEFAULT_RETRY_FOR
from .errors import BackupNotFound, StoreExists, StoreNotFound
from .log import get_logger
from .manifest import Manifest
from .progress import Progress
from .repository import Repository, StoreDescription, blob_is_sound, is_blob_key
from .select import BackupFilter, choose
from .stores import is_remote_url, open_store
from .stores.base import Store
from .stores.counting import CountingStore
from .stores.local import LocalStore
from .sync import SyncReport, sync_catalog

log = get_logger(__name__)


@dataclass
class Workspace:
    repo: Repository
    catalog: Catalog
    workers: int
    requests: CountingStore | None = None  # with count_requests: what was asked of the store
    last_sync: SyncReport | None = None
    description: StoreDescription | None = None  # None: a store made before `pitreos init`

    @classmethod
    def open(cls, store_url: str, *, catalog_path: Path | None = None, create: bool = False,
             workers: int | None = None, compression_level: int = 3,
             cache_dir: Path | None = None, rebuild_catalog: bool = False,
             count_requests: bool = False, retry_for: float = DEFAULT_RETRY_FOR,
             request_timeout: float = DEFAULT_REQUEST_TIMEOUT) -> "Workspace":
        """Open the store at ``store_url`` and its catalog. ``create`` makes the store
        when there is none (as ``pitreos init``: for the embedded default store, and for
        programs that use pitreos as a library); otherwise a URL where no store was
        initialized is :class:`~pitreos.errors.StoreNotFound`. ``rebuild_catalog`` starts
        from an empty catalog (it is a cache of the store); ``count_requests`` counts
        the requests made to the store (what an object store would bill); an object
        store's operations are retried for ``retry_for`` seconds, each request bounded
        by ``request_timeout``."""
        codec = BlobCodec(level=compression_level)
        limit = None
        if is_remote_url(store_url):
            # imported here, as the store factory imports the wrappers: a local store's
            # commands never use them (pitreos.stores)
            from .stores.limit import ConcurrencyLimit

            # requests in flight: what the user asked for, or what fills the link
            limit = ConcurrencyLimit.fixed(workers) if workers else \
                ConcurrencyLimit.adaptive(ADAPTIVE_MAX)
            workers = limit.maximum
        store: Store = open_store(store_url, create=create,
                                  pool_size=workers or ADAPTIVE_MAX, retry_for=retry_for,
                                  request_timeout=request_timeout, limit=limit)
        workers = workers or default_workers()
        requests = None
        if count_requests:
            store = requests = CountingStore(store)
        if cache_dir is not None:
            from .stores.cache import CachingStore  # here: only --cache uses it

            store = CachingStore(store, LocalStore(cache_dir, create=True),
                                 cacheable=is_blob_key,
                                 verify=partial(blob_is_sound, codec))
        repo = Repository(store, codec, limit)
        description = _described_or_created(repo) if create else repo.check()
        # copy, verify and sync move the store's blobs: bounded by its default chunk size
        repo.fit_in_flight(description.chunk_size if description else DEFAULT_CHUNK_SIZE)
        path = catalog_path or default_catalog_path(repo.url)
        if rebuild_catalog:
            Catalog.remove(path)
        store_id = description.id if description is not None else None
        catalog = Catalog(path, repo.url)
        if catalog.store_id() not in (None, store_id):
            # the store was emptied or recreated at the same URL: nothing the catalog
            # knows can be trusted, and it is only a cache
            log.warning("catalog.store_replaced", catalog=str(path), store=repo.url,
                        action="the catalog is rebuilt from the store")
            catalog.close()
            Catalog.remove(path)
            catalog = Catalog(path, repo.url)
        if store_id is not None and catalog.store_id() is None:
            catalog.set_store_id(store_id)
        return cls(repo, catalog, workers, requests, description=description)

    def sync(self, *, list_blobs: bool = False, progress: Progress | None = None
             ) -> SyncReport:
        self.last_sync = sync_catalog(self.catalog, self.repo, list_blobs=list_blobs,
                                      workers=self.workers, progress=progress)
        return self.last_sync

    def choose(self, name: str, backup_filter: BackupFilter | None = None) -> Manifest:
        """The manifest of backup ``name`` (or ``latest`` matching the filter).

        A name the catalog lacks is read from the store directly, so a manifest that
        the catalog skipped as unreadable reports why.
        """
        backup_filter = backup_filter or BackupFilter()
        try:
            record = choose(self.catalog.backups(), name, backup_filter)
        except BackupNotFound as not_found:
            if name == "latest" or name in self.catalog.backup_names():
                raise
            try:
                return self.repo.read_manifest(name)
            except BackupNotFound:
                raise not_found from None  # it says more: a near name, or the ambiguity
        return self.repo.read_manifest(record.name)

    def exclusive(self, operation: str, directory: Path | None,
                  wait: float = 0.0) -> AbstractContextManager[None]:
        """No other run of ``operation`` on ``directory`` with this store on this host
        while inside (:mod:`pitreos.locallock`)."""
        return locallock.exclusive(self.catalog.path, operation, directory, self.repo.url,
                                   wait)

    def close(self) -> None:
        self.catalog.close()


def init_store(store_url: str, chunk_size: int, *, retry_for: float = DEFAULT_RETRY_FOR,
               request_timeout: float = DEFAULT_REQUEST_TIMEOUT) -> StoreDescription:
    """Create a store (``pitreos init``): a local directory is made; a bucket or
    container must exist. :class:`~pitreos.errors.StoreExists` if it is one already."""
    store = open_store(store_url, create=True, retry_for=retry_for,
                       request_timeout=request_timeout)
    store.check()
    repo = Repository(store)
    with contextlib.suppress(StoreNotFound):
        if repo.check() is None:  # backups made before `pitreos init`: describe them
            return repo.initialize(chunk_size)
        raise StoreExists(f"{repo.url} is already a pitreos store")
    return repo.initialize(chunk_size)


def _described_or_created(repo: Repository) -> StoreDescription | None:
    try:
        return repo.check()
    except StoreNotFound:
        with contextlib.suppress(StoreExists):  # another process created it first
            repo.initialize(DEFAULT_CHUNK_SIZE)
        return repo.check()


def default_workers() -> int:
    """Workers on a local store, which is CPU-bound: one a core (on 2 cores, 2 threads
    backed up ~10% faster than 3 and ~15% faster than 4, which only added contention for
    the GIL and the file system's locks: docs/performance.md). An object store's
    workers are its limit of requests in flight (:mod:`pitreos.stores.limit`). Cores
    as this process may use them: a container's CPU limit counts."""
    return max(2, usable_cores())
