"""A store opened together with its catalog: the usual starting point of every command."""

import os
from dataclasses import dataclass
from pathlib import Path

from .blobcodec import BlobCodec
from .catalog import Catalog, default_catalog_path
from .errors import BackupNotFound
from .manifest import Manifest
from .repository import Repository
from .select import BackupFilter, choose
from .stores import open_store
from .stores.local import LocalStore
from .sync import SyncReport, sync_catalog


@dataclass
class Workspace:
    repo: Repository
    catalog: Catalog
    workers: int

    @classmethod
    def open(cls, store_url: str, *, catalog_path: Path | None = None, create: bool = False,
             workers: int | None = None, compression_level: int = 3,
             cache_dir: Path | None = None) -> "Workspace":
        workers = workers or default_workers(store_url)
        store = open_store(store_url, create=create, pool_size=workers)
        store.check()
        cache = LocalStore(cache_dir, create=True) if cache_dir else None
        if cache is not None:
            cache.check()
        repo = Repository(store, BlobCodec(level=compression_level), cache)
        catalog = Catalog(catalog_path or default_catalog_path(store.url), store.url)
        return cls(repo, catalog, workers)

    def sync(self, *, list_blobs: bool = False) -> SyncReport:
        return sync_catalog(self.catalog, self.repo, list_blobs=list_blobs,
                            workers=self.workers)

    def choose(self, name: str, backup_filter: BackupFilter | None = None) -> Manifest:
        """The manifest of backup ``name`` (or ``latest`` matching the filter).

        A name the catalog lacks is read from the store directly, so a manifest that
        the catalog skipped as unreadable reports why.
        """
        backup_filter = backup_filter or BackupFilter()
        try:
            record = choose(self.catalog.backups(), name, backup_filter)
        except BackupNotFound:
            if name == "latest" or name in self.catalog.backup_names():
                raise
            return self.repo.read_manifest(name)
        return self.repo.read_manifest(record.name)

    def close(self) -> None:
        self.catalog.close()


def default_workers(store_url: str) -> int:
    """A local store is CPU-bound: a thread a core (on 2 cores, 2 threads backed up
    ~10% faster than 3 and ~15% faster than 4, which only added contention for the GIL
    and the file system's locks: docs/performance.md). Object stores are latency-bound:
    more requests in flight hide the round trips."""
    cores = os.cpu_count() or 2
    remote = any(store_url.startswith(s) for s in ("gs:", "s3:", "azblob:", "http:", "https:"))
    return max(16, 4 * cores) if remote else max(2, cores)
