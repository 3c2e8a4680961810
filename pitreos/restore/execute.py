"""Restore, step two: execute a plan made by :mod:`.plan`.

Fetches the chunks that differ, checks each blob's header and chunk against the
backup's blake3 before writing (:meth:`~pitreos.blobcodec.BlobCodec.decode`), writes
only the non-zero blocks (holes stay holes), punches holes where the backup is empty
and the local file is not, and sets modes and mtimes last.

While a restore runs, ``DIR/.pitreos-restore`` names the backup being restored; it is
removed only when everything is written and synced, so a failed or interrupted restore
never looks finished. Running the same restore again completes it.
"""

import json
import os
import shutil
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from .. import crashpoints, nodeos
from .. import manifest as mf
from ..chunktasks import (
    FetchChunk,
    Task,
    WriteResult,
    WriteTask,
    batches,
    perform,
    task_bytes,
    transfer_bytes,
)
from ..defaults import TASK_BYTES
from ..errors import PitreosError, RestoreError
from ..handles import Handles
from ..log import get_logger
from ..manifest import RESTORE_MARKER
from ..parallel import WorkerPool, shared_or_own
from ..progress import NoProgress, Progress
from ..repository import Repository
from .nodestate import DirtyHold
from .plan import FilePlan, RestoreOptions, RestorePlan

log = get_logger(__name__)
_SETID = stat.S_ISUID | stat.S_ISGID


@dataclass
class RestoreStats:
    chunks_checked: int = 0
    chunks_kept: int = 0
    chunks_fetched: int = 0
    chunks_holed: int = 0
    bytes_fetched: int = 0  # chunk data fetched (what a dry run calls bytes to fetch)
    stored_bytes_fetched: int = 0  # as the store sent them (compressed)
    chunks_seeded: int = 0  # of the chunks fetched, those a seed directory held
    bytes_written: int = 0  # non-zero bytes written (zero runs are left as holes)
    files: int = 0
    deleted: list[str] = field(default_factory=list)  # local paths removed (--delete)
    setid_dropped: list[str] = field(default_factory=list)  # setuid/setgid not restored
    seconds: float = 0.0


def execute_restore(plan: RestorePlan, repo: Repository, options: RestoreOptions,
                    progress: Progress | None = None, pool: WorkerPool | None = None
                    ) -> RestoreStats:
    """Carry out a plan made by :func:`plan_restore` (``pool``: the workers it hashed
    with, None: a pool of its own)."""
    plan.check_deletions(options)
    repo.fit_in_flight(plan.manifest.chunk_size)
    progress = progress or NoProgress()
    started = time.monotonic()
    dest = plan.dest
    stats = RestoreStats()
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RestoreError(f"cannot create destination {dest}: {exc.strerror}") from exc
    marker = dest / RESTORE_MARKER
    _write_marker(marker, plan.manifest.name)
    _fsync_dir(dest)
    hold = _dirty_hold(plan)
    try:
        _restore_entries(plan, repo, options, stats, progress, hold, pool)
        crashpoints.point("restore.before_release")
        if hold is not None:
            hold.release(dest)  # everything else is written and synced
        crashpoints.point("restore.before_marker_removed")
    except (PitreosError, OSError) as exc:
        raise RestoreError(
            f"restore of {plan.manifest.name} into {dest} failed: {exc}; the files there are "
            "incomplete: run the same restore again to finish it", exc) from exc
    marker.unlink()
    _fsync_dir(dest)
    stats.seconds = time.monotonic() - started
    log.info("restore.done", backup=plan.manifest.name, destination=str(dest),
             fetched=stats.chunks_fetched, kept=stats.chunks_kept, holed=stats.chunks_holed,
             seconds=round(stats.seconds, 3))
    return stats


def _write_marker(marker: Path, backup: str) -> None:
    """Say that a restore is under way, never through a link: a symlink planted at the
    marker's name is replaced, not followed (nor its target read)."""
    try:
        st = os.lstat(marker)
    except FileNotFoundError:
        st = None
    if st is not None and stat.S_ISREG(st.st_mode):
        fd = os.open(marker, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            previous = os.read(fd, 4096).decode(errors="replace").strip()
        finally:
            os.close(fd)
        log.warning("restore.resuming", destination=str(marker.parent), previous=previous)
    elif st is not None:
        log.warning("restore.marker_replaced", path=str(marker),
                    reason="not a regular file (a symlink?): replaced, not followed")
        _remove(marker)
    fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, json.dumps({"restoring": backup, "started": time.time()}).encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def _dirty_hold(plan: RestorePlan) -> DirtyHold | None:
    """The node state file among the files restored, if its first chunk holds data."""
    for fp in plan.files:
        if fp.entry.path == nodeos.STATE_FILE and fp.entry.chunks and \
                fp.entry.chunks[0].digest is not None:
            return DirtyHold(fp.entry.path, fp.entry.mtime_ns)
    return None


def _mode(entry: mf.Entry, options: RestoreOptions, stats: RestoreStats) -> int:
    """The mode to restore: setuid and setgid only when asked for (as tar does)."""
    if entry.mode & _SETID and not options.keep_setid:
        stats.setid_dropped.append(entry.path)
        return entry.mode & ~_SETID
    return entry.mode


def _restore_entries(plan: RestorePlan, repo: Repository, options: RestoreOptions,
                     stats: RestoreStats, progress: Progress, hold: DirtyHold | None,
                     pool: WorkerPool | None) -> None:
    dest = plan.dest
    for entry in plan.entries:
        if entry.type == "dir":
            _ensure_dir(dest, entry.path)
    for fp in plan.files:
        stats.files += 1
        stats.chunks_checked += fp.checked
        stats.chunks_kept += fp.kept
    progress.start("restore", plan.bytes_to_fetch())
    try:
        _fetch_and_write(plan, repo, options, stats, progress, hold, pool)
    finally:
        progress.finish()
    for entry in plan.entries:
        if entry.type == "symlink":
            _restore_symlink(dest, entry)
    if options.delete_extra:
        for rel in reversed(plan.extra):
            _remove(dest / rel)
            stats.deleted.append(rel)
            log.info("restore.deleted", path=rel)
    for entry in reversed(plan.entries):  # children before parents: mtimes stick
        if entry.type == "dir":
            path = dest / entry.path
            os.chmod(path, _mode(entry, options, stats))
            os.utime(path, ns=(entry.mtime_ns, entry.mtime_ns), follow_symlinks=False)


def _fetch_and_write(plan: RestorePlan, repo: Repository, options: RestoreOptions,
                     stats: RestoreStats, progress: Progress, hold: DirtyHold | None,
                     pool: WorkerPool | None) -> None:
    """Per file, in order: open (created or resized) on its first task, punch and fetch
    (workers open the file themselves), then fsync and give it its mode and mtime after
    its last task."""
    by_path = {str(plan.dest / fp.entry.path): fp for fp in plan.files}

    def open_file(path: str) -> int:
        fp = by_path[path]
        fd = _open_for_restore(plan.dest, fp)
        if hold is not None and fp.entry.path == hold.path:
            hold.mark(fd, first_chunk_kept=0 not in fp.fetch)
        return fd

    def finish(path: str, fd: int) -> None:
        entry = by_path[path].entry
        os.fsync(fd)
        os.fchmod(fd, _mode(entry, options, stats))
        os.utime(fd, ns=(entry.mtime_ns, entry.mtime_ns))

    handles = Handles(open_file, finish)
    fetch_bytes = transfer_bytes(repo, task_bytes(plan.bytes_to_fetch(), options.workers))
    tasks = {path: _write_tasks(plan, fp, path, options, hold, fetch_bytes)
             for path, fp in by_path.items()}

    def opened_first() -> Iterator[Task]:
        for path, file_tasks in tasks.items():
            for task in file_tasks:
                handles.fd(path)  # created and sized before a worker opens it
                yield task

    # the whole restore's reads and writes decide, as for the plan's check: a check
    # that ran in processes leaves their pool to this step when the caller shares it
    processes = repo.crosses_processes and options.workers > 1 and \
        plan.bytes_checked + plan.bytes_to_fetch() >= options.process_min_bytes
    try:
        for path, file_tasks in tasks.items():
            handles.expect(path, len(file_tasks))
        with shared_or_own(pool, options.workers) as workers:
            results = workers.imap_unordered(partial(perform, repo), opened_first(),
                                             processes=processes)
            for result in results:
                assert isinstance(result, WriteResult)
                if result.dirty_original is not None and hold is not None:
                    hold.original = result.dirty_original
                stats.chunks_seeded += result.seeded
                stats.bytes_fetched += result.data_bytes
                stats.stored_bytes_fetched += result.stored_bytes
                stats.bytes_written += result.written
                progress.advance(result.data_bytes)
                for _ in range(result.fetched):
                    crashpoints.point("restore.chunk_written")
                handles.done(result.path)
    finally:
        handles.close_all()
    stats.chunks_holed = sum(len(fp.punch) for fp in plan.files)
    stats.chunks_fetched = sum(len(fp.fetch) for fp in plan.files)


def _write_tasks(plan: RestorePlan, fp: FilePlan, path: str, options: RestoreOptions,
                 hold: DirtyHold | None, fetch_bytes: int) -> list[WriteTask]:
    step = plan.manifest.chunk_size
    entry = fp.entry

    def length(index: int) -> int:
        return mf.chunk_length(entry.size, step, index)

    def fetch(index: int) -> FetchChunk:
        chunk = entry.chunks[index]
        assert chunk.digest is not None
        dirty = hold is not None and index == 0 and entry.path == hold.path
        return FetchChunk(index, chunk.start, length(index), chunk.digest,
                          had_data=index in fp.over_data, dirty_byte=dirty)

    def task(punch: list[int], fetched: list[int]) -> WriteTask:
        return WriteTask(path, entry.path, plan.manifest.name,
                         tuple((i * step, length(i)) for i in punch),
                         tuple(fetch(i) for i in fetched), options.seeds)

    # a punch is one quick system call, on whatever store: the largest tasks
    return [task(indexes, []) for indexes in batches(fp.punch, step, TASK_BYTES)] + \
        [task([], indexes) for indexes in batches(fp.fetch, step, fetch_bytes)]


def _open_for_restore(dest: Path, fp: FilePlan) -> int:
    path = dest / fp.entry.path
    _ensure_dir(dest, fp.entry.path.rpartition("/")[0])
    if fp.in_the_way:
        _remove(path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    # sized as it is now, not as planned: another program may have cut it shorter
    # since, and a backup that ends in a hole has nothing to write there
    if os.fstat(fd).st_size != fp.entry.size:
        os.ftruncate(fd, fp.entry.size)
    return fd


def _ensure_dir(dest: Path, rel: str) -> None:
    """Make ``dest/rel`` a real directory, never following a symlink on the way: a
    symlink or file in the way of a directory the backup has is replaced."""
    current = dest
    for part in rel.split("/") if rel else []:
        current = current / part
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            current.mkdir()
            continue
        if not stat.S_ISDIR(st.st_mode):
            _remove(current)
            current.mkdir()


def _restore_symlink(dest: Path, entry: mf.Entry) -> None:
    path = dest / entry.path
    _ensure_dir(dest, entry.path.rpartition("/")[0])
    assert entry.target is not None
    if not (os.path.islink(path) and os.readlink(path) == entry.target):
        if os.path.lexists(path):
            _remove(path)
        os.symlink(entry.target, path)
    os.utime(path, ns=(entry.mtime_ns, entry.mtime_ns), follow_symlinks=False)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
