"""Garbage collection: apply a retention policy per tag, delete the manifests it does
not keep, then delete the blobs no remaining manifest references.

What to delete is decided by the pure functions of :mod:`pitreos.gcdecision`; this
module carries it out. Safe against backups running on other machines without a lock
server: gc's half of the protocol is :class:`~pitreos.gcprotocol.GCGuard`, and its
argument is in ``docs/gc.md``. Safe to interrupt and to run again: the catalog forgets a
blob before the store deletes it, and every run starts from a full sync with the store.
"""

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from . import crashpoints, locks
from .catalog import Catalog
from .errors import UsageError
from .gcdecision import RetentionPolicy, deletable, plan_retention
from .gcprotocol import GCGuard
from .log import get_logger
from .parallel import imap_unordered
from .progress import NoProgress, Progress
from .repository import Repository, StoredBlob
from .sync import sync_catalog

log = get_logger(__name__)
DEFAULT_GRACE = timedelta(hours=24)
_DELETE_BATCH = 1000


@dataclass
class GCOptions:
    policy: RetentionPolicy
    tag: str | None = None
    grace: timedelta = DEFAULT_GRACE
    dry_run: bool = False
    allow_empty: bool = False
    workers: int = 8
    lock_stale_after: float = locks.DEFAULT_STALE_AFTER
    progress: Progress = field(default_factory=NoProgress)


@dataclass
class GCReport:
    kept: dict[str, list[str]] = field(default_factory=dict)
    deleted_backups: list[str] = field(default_factory=list)
    blobs_deleted: int = 0
    bytes_freed: int = 0
    blobs_too_young: int = 0
    blob_deletion_skipped: str | None = None


def run_gc(repo: Repository, catalog: Catalog, options: GCOptions) -> GCReport:
    with GCGuard(repo, options.lock_stale_after, options.dry_run) as guard:
        return _collect(repo, catalog, options, guard)


def _collect(repo: Repository, catalog: Catalog, options: GCOptions,
             guard: GCGuard) -> GCReport:
    sync = sync_catalog(catalog, repo, list_blobs=True, workers=options.workers,
                        progress=options.progress)
    report = GCReport()
    records = catalog.backups()
    tags = sorted({r.tag for r in records} if options.tag is None else {options.tag})
    doomed: list[str] = []
    for tag in tags:
        of_tag = [r for r in records if r.tag == tag]
        kept = plan_retention(of_tag, options.policy)
        if of_tag and not kept and not options.allow_empty:
            raise UsageError(
                f"the retention policy keeps no backup of tag {tag!r} (it has {len(of_tag)}):"
                " give --keep-* flags, or --allow-empty to delete them all"
            )
        report.kept.update(kept)
        doomed += [r.name for r in of_tag if r.name not in kept]
    report.deleted_backups = doomed
    remaining = [r.name for r in records if r.name not in doomed]
    if not options.dry_run:
        repo.retire_names(doomed)  # first: no backup elsewhere takes a name that goes
        for name in doomed:
            catalog.remove_backup(name)  # the catalog first: it never claims a gone manifest
            crashpoints.point("gc.backup_forgotten")
            repo.delete_manifest(name, update_index=False)
            crashpoints.point("gc.manifest_deleted")
            log.info("gc.backup_deleted", backup=name)
        if doomed:
            # once, not once a manifest: rewriting the index lists every manifest
            repo.update_index()
    if sync.blobs_unaccounted:
        # a manifest this pitreos cannot read (damaged, or from a newer version) may
        # reference any blob: deleting "unreferenced" ones would be a guess
        guard.stand_down()
        report.blob_deletion_skipped = (
            f"manifests that cannot be read ({', '.join(sync.unreadable)}) may reference "
            "any blob: no blob deleted; fix or remove them, then run gc again")
        return report
    running = None if options.dry_run else guard.running_backup()
    if running is not None:
        guard.stand_down()
        report.blob_deletion_skipped = (
            f"a backup is running on {running.host} (since "
            f"{datetime.fromtimestamp(running.started).isoformat(timespec='seconds')}): "
            "no blob deleted this time; run gc again later")
        return report
    # the grace period is measured by the store's clock, as the blobs' times are
    cutoff = datetime.fromtimestamp(guard.store_now(), UTC) - options.grace
    # the blobs that no kept backup references, from the listing the catalog holds, a
    # batch at a time: neither the store nor its garbage is ever in memory whole; a
    # quarantined manifest's blobs stay: it may be the right one of the two
    options.progress.start("gc: delete blobs", 0, "blobs")
    try:
        for batch in catalog.unreferenced_listed(remaining if options.dry_run else None):
            decision = deletable([StoredBlob(*row) for row in batch], sync.quarantined_sha1s,
                                 cutoff)
            report.blobs_too_young += decision.too_young
            report.blobs_deleted += len(decision.delete)
            report.bytes_freed += sum(b.stored_size for b in decision.delete)
            if not options.dry_run:
                catalog.set_aside(b.sha1 for b in decision.delete)
        if not options.dry_run and report.blobs_deleted:
            _delete_blobs(repo, catalog, options, guard)
    finally:
        options.progress.finish()
    return report


def _delete_blobs(repo: Repository, catalog: Catalog, options: GCOptions,
                  guard: GCGuard) -> None:
    """Delete the blobs set aside in the catalog: forgotten all at once first (the
    catalog never claims a deleted blob), then deleted from the store in batches."""
    guard.refresh()
    catalog.forget_set_aside()
    crashpoints.point("gc.blobs_forgotten")
    for part in catalog.set_aside_batches(_DELETE_BATCH):
        guard.refresh()
        for _ in imap_unordered(repo.delete_blob, part, workers=options.workers):
            crashpoints.point("gc.blob_deleted")
            options.progress.advance(1)
        log.info("gc.blobs_deleted", count=len(part))
