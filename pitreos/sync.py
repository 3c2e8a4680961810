"""Bringing the catalog level with the store."""

from dataclasses import dataclass

import structlog

from .catalog import Catalog
from .manifest import Manifest
from .parallel import TaskWindow
from .repository import Repository

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class SyncReport:
    added: int
    removed: int
    missing_blobs: int | None  # None when blobs were not listed


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
    with TaskWindow[Manifest](workers) as window:
        queue = list(reversed(new))
        while queue or len(window):
            while queue and not window.full:
                window.submit(repo.read_manifest, queue.pop())
            manifest = window.next_done()
            catalog.add_backup(manifest)
            log.info("catalog.backup_added", backup=manifest.name)
    missing = None
    if list_blobs:
        present = {b.sha1: b.stored_size for b in repo.list_blobs()}
        missing = catalog.mark_presence(present)
        if missing:
            log.warning("catalog.blobs_missing", count=missing, store=repo.url,
                        hint="run 'pitreos verify --all'")
        catalog.recount_references()
    return SyncReport(added=len(new), removed=len(gone), missing_blobs=missing)
