"""A backup from start to end: plan, guard, pipeline, publish.

The manifest is written last, so an interrupted or failed backup leaves blobs (which a
later backup reuses) but never a manifest.
"""

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from .. import crashpoints
from .. import manifest as mf
from ..catalog import Catalog
from ..cores import usable_cores
from ..errors import CatalogError, PitreosError
from ..gcprotocol import BackupGuard
from ..log import get_logger
from ..parallel import backup_in_processes
from ..progress import NoProgress, Progress
from ..repository import Repository
from ..sync import sync_catalog
from .options import BackupOptions, BackupResult, BackupStats
from .pipeline import Pipeline
from .plan import BackupPlan, check_source, plan_backup

log = get_logger(__name__)
_NAME_ATTEMPTS = 60


def run_backup(source: Path, repo: Repository, catalog: Catalog, options: BackupOptions,
               progress: Progress | None = None) -> BackupResult:
    """Back up ``source``; returns the manifest written and what it cost."""
    progress = progress or NoProgress()
    started = time.monotonic()
    stats = BackupStats()
    check_source(source, options)
    repo.fit_in_flight(options.chunk_size)
    with BackupGuard(repo, options.lock_stale_after, options.gc_poll_seconds) as guard:
        # the catalog is synced after the marker is written: a gc that deletes what
        # the catalog then shows is one the guard sees (docs/gc.md)
        sync_catalog(catalog, repo, workers=options.workers)
        plan = plan_backup(source, catalog, options, stats)
        to_read, new = plan.bytes_to_read()
        processes = repo.crosses_processes and options.workers > 1 and backup_in_processes(
            cores=usable_cores(), to_read=to_read, new=new, threshold=options.process_min_bytes)
        pipeline = Pipeline(repo, catalog, guard, plan.missing_blobs,
                            workers=options.workers, stats=stats, progress=progress,
                            processes=processes)
        progress.start("backup", to_read)
        try:
            pipeline.run(plan.jobs)
        finally:
            progress.finish()
        by_path = {job.path: job for job in plan.jobs}
        for entry in plan.entries:
            job = by_path.get(entry.path)
            if job is not None:
                entry.chunks = [c for c in job.chunks if c is not None]

        def settle_with_gc(since: float) -> float:
            """A gc that deleted blobs while this backup ran may have taken some that it
            reuses: they are stored again."""
            overlapped, checked_at = guard.wait_for_gc(since)
            if overlapped:
                pipeline.store_again(source, plan.entries, options.chunk_size)
            return checked_at

        checked_at = settle_with_gc(guard.started)
        crashpoints.point("backup.before_manifest")
        manifest = _publish(repo, catalog, options, plan)
        settle_with_gc(checked_at)  # a gc that started while the manifest was written
        crashpoints.point("backup.before_marker_removed")
    stats.seconds = time.monotonic() - started
    log.info("backup.done", backup=manifest.name, files=stats.files, read=stats.bytes_read,
             stored=stats.bytes_stored, new_blobs=stats.blobs_stored,
             files_read_again_next_time=stats.files_racy,
             seconds=round(stats.seconds, 3))
    return BackupResult(manifest, stats)


def _publish(repo: Repository, catalog: Catalog, options: BackupOptions,
             plan: BackupPlan) -> mf.Manifest:
    """Write the manifest under a name no backup ever had, and mirror it in the catalog.

    ``created`` keeps sub-second precision to order backups made in the same second;
    the name has whole seconds, moved on by one while a backup of that name exists or
    existed (a name never means two backups, even after gc: the catalog remembers the
    names that left the store, and the store those that gc deleted).
    """
    created = datetime.now(UTC)
    name_time = created.replace(microsecond=0)
    for _ in range(_NAME_ATTEMPTS):
        manifest = mf.Manifest(
            name=mf.backup_name(name_time, options.tag), tag=options.tag, created=created,
            chunk_size=options.chunk_size, entries=plan.entries, meta=dict(plan.meta),
        )
        if (not catalog.name_taken(manifest.name) and not repo.name_retired(manifest.name)
                and repo.write_manifest(manifest)):
            # published: the backup is complete whatever follows; the catalog is a
            # cache that the next sync brings level
            crashpoints.point("backup.manifest_written")
            try:
                catalog.add_backup(manifest, copied=plan.copied)
            except CatalogError as exc:
                log.warning("backup.catalog_not_updated", backup=manifest.name,
                            error=str(exc), hint="the backup is complete; run "
                            "'pitreos catalog sync'")
            return manifest
        name_time += timedelta(seconds=1)
    raise PitreosError(f"could not find a free backup name in store {repo.url}")
