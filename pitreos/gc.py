"""Garbage collection: apply a retention policy per tag, delete the manifests it does
not keep, then delete the blobs no remaining manifest references.

Safe against backups running on other machines without a lock server; the protocol
(markers under ``locks/``, a grace period for young blobs) and its argument are in
``docs/gc.md``. Safe to interrupt and to run again: the catalog forgets a blob before
the store deletes it, and every run starts from a full sync with the store.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog

from . import locks
from .catalog import BackupRecord, Catalog
from .errors import UsageError
from .parallel import TaskWindow
from .repository import Repository
from .sync import sync_catalog

log = structlog.get_logger(__name__)
DEFAULT_GRACE = timedelta(hours=24)


@dataclass(frozen=True)
class RetentionPolicy:
    """A backup kept by any rule stays. ``None``: the rule is not used."""

    last: int | None = None
    hourly: int | None = None
    daily: int | None = None
    weekly: int | None = None
    monthly: int | None = None

    def rules(self) -> list[tuple[str, int, Callable[[datetime], str] | None]]:
        """(name, how many, period key) for each rule in use; keep-last has no period."""
        periods: dict[str, Callable[[datetime], str]] = {
            "hourly": lambda t: t.strftime("%Y-%m-%dT%H"),
            "daily": lambda t: t.strftime("%Y-%m-%d"),
            "weekly": lambda t: "{}-W{:02d}".format(*t.isocalendar()[:2]),
            "monthly": lambda t: t.strftime("%Y-%m"),
        }
        rules: list[tuple[str, int, Callable[[datetime], str] | None]] = []
        if self.last is not None:
            rules.append(("last", self.last, None))
        for name, key in periods.items():
            count = getattr(self, name)
            if count is not None:
                rules.append((name, count, key))
        return rules


def plan_retention(records: list[BackupRecord], policy: RetentionPolicy) -> dict[str, list[str]]:
    """For backups of one tag: the names kept, each with the rules that keep it.

    keep-last N keeps the N newest; keep-daily N keeps the newest backup of each of the
    N most recent days that have one (likewise hourly, weekly, monthly).
    """
    newest_first = sorted(records, key=lambda r: (r.created, r.name), reverse=True)
    kept: dict[str, list[str]] = {}
    for name, count, period in policy.rules():
        seen: set[str] = set()
        for record in newest_first:
            bucket = record.name if period is None else period(record.created)
            if bucket in seen:
                continue
            if len(seen) >= count:
                break
            seen.add(bucket)
            kept.setdefault(record.name, []).append(
                f"{name} {len(seen)}" if period is None else f"{name} {bucket}")
    return kept


@dataclass
class GCOptions:
    policy: RetentionPolicy
    tag: str | None = None
    grace: timedelta = DEFAULT_GRACE
    dry_run: bool = False
    allow_empty: bool = False
    workers: int = 8
    lock_stale_after: float = locks.DEFAULT_STALE_AFTER


@dataclass
class GCReport:
    kept: dict[str, list[str]] = field(default_factory=dict)
    deleted_backups: list[str] = field(default_factory=list)
    blobs_deleted: int = 0
    bytes_freed: int = 0
    blobs_too_young: int = 0
    blob_deletion_skipped: str | None = None


def run_gc(repo: Repository, catalog: Catalog, options: GCOptions) -> GCReport:
    marker = locks.new_marker("gc")
    marker.deleting_blobs = True  # an intent, written before anything is read
    if not options.dry_run:
        locks.write(repo.store, marker)
    try:
        report = _collect(repo, catalog, options, marker)
    finally:
        if not options.dry_run:
            marker.finished = time.time()
            locks.write(repo.store, marker)
    if not options.dry_run:
        _forget_old_markers(repo, marker)
    return report


def _collect(repo: Repository, catalog: Catalog, options: GCOptions,
             marker: locks.Marker) -> GCReport:
    sync = sync_catalog(catalog, repo, list_blobs=True, workers=options.workers)
    assert sync.listing is not None
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
        for name in doomed:
            catalog.remove_backup(name)  # the catalog first: it never claims a gone manifest
            repo.delete_manifest(name)
            log.info("gc.backup_deleted", backup=name)
    running = [m for m in locks.read_all(repo.store) if m.kind == "backup"
               and m.live(time.time(), options.lock_stale_after)]
    if running and not options.dry_run:
        marker.deleting_blobs = False
        locks.write(repo.store, marker)
        report.blob_deletion_skipped = (
            f"a backup is running on {running[0].host} (since "
            f"{datetime.fromtimestamp(running[0].started).isoformat(timespec='seconds')}): "
            "no blob deleted this time; run gc again later")
        return report
    referenced = catalog.referenced_sha1s(remaining if options.dry_run else None)
    cutoff = datetime.now().astimezone() - options.grace
    unreferenced = [b for sha1, b in sync.listing.items() if sha1 not in referenced]
    old_enough = [b for b in unreferenced if b.modified < cutoff]
    report.blobs_too_young = len(unreferenced) - len(old_enough)
    report.blobs_deleted = len(old_enough)
    report.bytes_freed = sum(b.stored_size for b in old_enough)
    if options.dry_run:
        return report
    _delete_blobs(repo, catalog, [b.sha1 for b in old_enough], options.workers)
    return report


def _delete_blobs(repo: Repository, catalog: Catalog, sha1s: list[str], workers: int) -> None:
    batch = 1000
    for start in range(0, len(sha1s), batch):
        part = sha1s[start:start + batch]
        catalog.forget_blobs(part)  # first: the catalog never claims a deleted blob
        with TaskWindow[None](workers) as window:
            queue = list(part)
            while queue or len(window):
                while queue and not window.full:
                    window.submit(repo.delete_blob, queue.pop())
                window.next_done()
        log.info("gc.blobs_deleted", count=len(part))


def _forget_old_markers(repo: Repository, own: locks.Marker) -> None:
    now = time.time()
    for m in locks.read_all(repo.store):
        if m.kind == "gc" and m.id != own.id and m.finished is not None and \
                now - m.finished > locks.FINISHED_GC_KEPT:
            locks.remove(repo.store, m)
