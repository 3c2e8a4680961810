"""Bringing the catalog level with the store."""

from dataclasses import dataclass

import structlog

from .catalog import Catalog
from .errors import ManifestError
from .manifest import Manifest
from .parallel import TaskWindow
from .repository import Repository, StoredBlob

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class SyncReport:
    added: int
    removed: int
    unreadable: list[str]  # manifests in the store that could not be read
    missing_blobs: int | None  # None when blobs were not listed
    listing: dict[str, StoredBlob] | None = None  # the blob listing, when made


def sync_catalog(
    catalog: Catalog, repo: Repository, *, list_blobs: bool = False, workers: int = 8
) -> SyncReport:
    """Add manifests the catalog lacks, drop those gone from the store.

    With ``list_blobs`` the store's blobs are listed too (one listing, no downloads), so
    the catalog stops claiming blobs the store no longer holds.
    """
    in_store = set(repo.manifest_names())
    in_catalog = catalog.backup_names()
    new = sorted(in_store - in_catalog)
    gone = sorted(in_catalog - in_store)
    for name in gone:
        catalog.remove_backup(name)
        log.info("catalog.backup_dropped", backup=name)
    unreadable: list[str] = []

    def read(name: str) -> Manifest | str:
        try:
            return repo.read_manifest(name)
        except ManifestError as exc:  # one bad object must not block every command
            log.warning("catalog.manifest_unreadable", backup=name, error=str(exc))
            return name

    with TaskWindow[Manifest | str](workers) as window:
        queue = list(reversed(new))
        while queue or len(window):
            while queue and not window.full:
                window.submit(read, queue.pop())
            manifest = window.next_done()
            if isinstance(manifest, str):
                unreadable.append(manifest)
                continue
            catalog.add_backup(manifest)
            log.info("catalog.backup_added", backup=manifest.name)
    missing = None
    listing = None
    if list_blobs:
        listing = {b.sha1: b for b in repo.list_blobs()}
        missing = catalog.mark_presence({s: b.stored_size for s, b in listing.items()})
        if missing:
            log.warning("catalog.blobs_missing", count=missing, store=repo.url,
                        hint="run 'pitreos verify --all'")
        catalog.recount_references()
    return SyncReport(added=len(new) - len(unreadable), removed=len(gone),
                      unreadable=sorted(unreadable), missing_blobs=missing, listing=listing)
