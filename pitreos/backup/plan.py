"""The backup planner: what to read. Scans the source, checks a node's data directory,
and for each file decides which chunks the previous backup (with ``--incremental``)
already holds: unchanged files are reused whole, append-only files keep their prefix,
holes are never read. The pipeline then reads what is left.
"""

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import manifest as mf
from .. import nodeos
from ..catalog import Catalog, CopiedChunks, FileRecord
from ..errors import DirtyState, NodeFileDamaged, PitreosError, UnfinishedRestore
from ..log import get_logger
from ..manifest import RESTORE_MARKER
from ..sparse import MERGE_GAP, chunks_with_data, data_extents
from ..walk import (
    PathFilter,
    SourceEntry,
    check_source_dir,
    glob_match,
    scan,
)
from .jobs import FileJob, open_source
from .options import BackupOptions, BackupStats

log = get_logger(__name__)

# A file system keeps a file's mtime for a tick: a write in the tick in which the backup
# read the file leaves size and mtime as the backup recorded them. Ticks are a few ms on
# ext4, xfs, btrfs and tmpfs (the kernel's coarse clock), 1 s on ext3 and many NFS
# servers, 2 s on FAT. A file whose mtime is within this of the scan's start (or later)
# is recorded without its inode, so the next incremental backup reads it again (git
# treats an index entry written in the tick of its file's mtime as "racily clean").
RACY_WINDOW_NS = 2_000_000_000


@dataclass
class BackupPlan:
    entries: list[mf.Entry]  # the manifest's entries; a job's file gets its chunks later
    jobs: list[FileJob]  # the files with chunks to read
    meta: dict[str, str]
    missing_blobs: set[str]  # blobs the catalog knows the store lacks
    copied: dict[str, CopiedChunks]  # chunks taken from the previous backup, by path

    def bytes_to_read(self) -> tuple[int, int]:
        """The bytes of every chunk still to read, and of those among them with no
        previous digest to compare with (hashed whole): one pass over the chunks."""
        total = new = 0
        for job in self.jobs:
            for index in job.reads():
                length = job.length(index)
                total += length
                if job.previous_digest(index) is None:
                    new += length
        return total, new


def plan_backup(source: Path, catalog: Catalog, options: BackupOptions,
                stats: BackupStats) -> BackupPlan:
    try:
        return _plan(source, catalog, options, stats)
    except OSError as exc:  # a file that vanished or became unreadable while planning
        raise PitreosError(f"cannot read {exc.filename or source}: {exc.strerror}; no "
                           "backup was written") from exc


def check_source(source: Path, options: BackupOptions) -> None:
    """What can be refused before anything is written to the store."""
    mf.validate_tag(options.tag)
    check_source_dir(source)
    marker = source / RESTORE_MARKER
    if os.path.lexists(marker):
        raise UnfinishedRestore(
            f"{source} holds {RESTORE_MARKER}: a restore into it did not finish, so its "
            "files are not a state worth keeping. Finish the restore (run it again), or "
            f"remove {marker} if you know better")


def _plan(source: Path, catalog: Catalog, options: BackupOptions,
          stats: BackupStats) -> BackupPlan:
    check_source(source, options)
    path_filter, meta, node = _node_checks(source, options)
    scan_started_ns = time.time_ns()  # before any stat: every read comes after it
    scanned = scan(source, path_filter)
    for pattern in path_filter.unused([e.path for e in scanned.entries], scanned.excluded):
        log.warning("backup.glob_matches_nothing", glob=pattern)
    if node:
        blocks = [b for e in scanned.entries if (b := nodeos.snapshot_block(e.path))]
        if blocks and "snapshot_block" not in options.meta:
            meta["snapshot_block"] = str(max(blocks))
    previous = _previous_files(catalog, options.tag) if options.incremental else {}
    planner = _Planner(options, stats, catalog.missing_blobs(),
                       racy_from_ns=scan_started_ns - RACY_WINDOW_NS, node=node)
    entries: list[mf.Entry] = []
    jobs: list[FileJob] = []
    for src in scanned.entries:
        entry = _entry_for(src, options.appendonly)
        entries.append(entry)
        if src.type == "file":
            job = planner.plan_file(src, entry, previous.get(src.path))
            if job is not None:
                jobs.append(job)
    return BackupPlan(entries, jobs, meta, planner.missing_blobs, planner.copied)


def _node_checks(source: Path, options: BackupOptions
                 ) -> tuple[PathFilter, dict[str, str], bool]:
    """For a nodeos data directory: record the head block, the chain and the state's
    build environment, refuse a dirty state, leave out the finalizer's safety file (and
    with the options, the caches nodeos rebuilds and all snapshots but the newest).
    Returns the path filter to scan with, the backup's metadata, and whether it is a
    node."""
    path_filter = options.path_filter
    node = nodeos.is_node_dir(source) if options.node is None else options.node
    if not node:
        return path_filter, dict(options.meta), False
    info = nodeos.inspect(source)
    if info.state is not None and info.state.dirty and not options.allow_dirty:
        raise DirtyState(
            f"{source / nodeos.STATE_FILE} has its dirty flag set (nodeos is running "
            "or was not stopped cleanly): a restore of it would not open. Stop nodeos "
            "cleanly, or pass --allow-dirty"
        )
    safety = source / nodeos.FINALIZER_SAFETY
    if not options.keep_finalizer_safety and safety.exists():
        log.warning("backup.finalizer_safety_left_out", path=str(safety),
                    reason="restoring an old copy on a finalizer is dangerous",
                    hint="--keep-finalizer-safety keeps it")
        path_filter = PathFilter(path_filter.include,
                                 (*path_filter.exclude, nodeos.FINALIZER_SAFETY))
    if options.exclude_caches:
        path_filter = PathFilter(path_filter.include, (*path_filter.exclude, *nodeos.CACHES))
        info.meta["caches_left_out"] = ",".join(nodeos.CACHES)
    if options.latest_snapshot_only:
        older = _older_snapshots(source)
        path_filter = PathFilter(path_filter.include, (*path_filter.exclude, *older))
    return path_filter, {**info.meta, **options.meta}, True  # --meta wins over detection


def _older_snapshots(source: Path) -> list[str]:
    """The snapshots of ``source`` other than the one of the highest block (as exact
    paths: their names hold no glob characters)."""
    try:
        names = [f"snapshots/{p.name}" for p in (source / "snapshots").iterdir()]
    except FileNotFoundError:
        return []
    by_block = {path: block for path in names
                if (block := nodeos.snapshot_block(path)) is not None}
    newest = max(by_block, key=lambda path: (by_block[path], path), default=None)
    return sorted(path for path in by_block if path != newest)


def _previous_files(catalog: Catalog, tag: str) -> dict[str, FileRecord]:
    records = catalog.backups(tag=tag)
    if not records:
        log.info("backup.no_previous", tag=tag)
        return {}
    return catalog.files_of(records[0].name)


def _entry_for(src: SourceEntry, appendonly: tuple[str, ...]) -> mf.Entry:
    st = src.st
    entry = mf.Entry(path=src.path, type=src.type, mode=st.st_mode & 0o7777,
                     mtime_ns=st.st_mtime_ns)
    if src.type == "symlink":
        entry.target = os.readlink(src.abspath)
    elif src.type == "file":
        entry.size = st.st_size
        entry.inode = st.st_ino
        entry.ctime_ns = st.st_ctime_ns
        entry.appendonly = any(glob_match(src.path, p) for p in appendonly)
    return entry


@dataclass
class _Planner:
    options: BackupOptions
    stats: BackupStats
    missing_blobs: set[str]
    racy_from_ns: int  # files with an mtime from here on are read again next time
    node: bool = False
    copied: dict[str, CopiedChunks] = field(default_factory=dict)

    def plan_file(self, src: SourceEntry, entry: mf.Entry,
                  previous: FileRecord | None) -> FileJob | None:
        """Reuse an unchanged file's chunks, or open it and list the chunks to read."""
        job = self._reuse_or_read(src, entry, previous)
        if job is not None and entry.mtime_ns >= self.racy_from_ns:
            entry.inode = None  # racy (RACY_WINDOW_NS): never taken as unchanged
            self.stats.files_racy += 1
            log.debug("backup.file_read_again_next_time", path=entry.path,
                      reason="modified within 2 s of the scan")
        return job

    def _reuse_or_read(self, src: SourceEntry, entry: mf.Entry,
                       previous: FileRecord | None) -> FileJob | None:
        self.stats.files += 1
        size, step = entry.size, self.options.chunk_size
        count = -(-size // step)
        self.stats.chunks += count
        # a retained piece of a strided log never changes: the same name is the same
        # file (even with a new inode, after a copy), and a change is damage
        immutable = self.node and previous is not None and nodeos.is_retained(entry.path)
        if immutable and previous is not None and (
                previous.size, previous.mtime_ns) != (size, entry.mtime_ns):
            raise NodeFileDamaged(
                f"{src.abspath} changed since the previous backup ({previous.size} -> "
                f"{size} bytes, or a new mtime), but retained block log pieces are never "
                "written again: the disk or a tool damaged it. Restore it from the "
                "previous backup (pitreos restore --include), or move it away; no backup "
                "was written")
        if (previous is not None and previous.size == size and previous.chunk_size == step
                and previous.mtime_ns == entry.mtime_ns and previous.inode is not None
                and (immutable or (previous.inode == entry.inode
                                   and previous.ctime_ns in (None, entry.ctime_ns)))
                and not self._lacks_blobs(previous)):
            entry.chunks = previous.chunks
            self._copied(previous, range(count))
            self.stats.files_unchanged += 1
            return None
        usable = previous if previous is not None and previous.chunk_size == step else None
        fd = open_source(src)  # closed again: the pipeline reopens files as it reaches them
        try:
            job = FileJob(src, step, [None] * count, data_extents(fd, size), usable)
            kept = self._appended_prefix(job, entry, previous) if previous else range(0)
        finally:
            os.close(fd)
        if previous is not None:
            self._copied(previous, kept)
        with_data = chunks_with_data(job.extents, size, step)
        for index in range(count):
            if index in kept and previous is not None:
                job.chunks[index] = previous.chunks[index]
            elif index not in with_data:
                job.chunks[index] = mf.Chunk(index * step, None)
                self.stats.chunks_empty += 1
        return job

    def _copied(self, previous: FileRecord, indexes: range) -> None:
        if indexes:
            self.copied[previous.path] = CopiedChunks(previous.backup, previous.path,
                                                      indexes)

    def _lacks_blobs(self, previous: FileRecord) -> bool:
        """Whether the store lacks a blob of this file's previous chunks (a sync saw it
        missing): the file is then read again, so that its blob is stored again."""
        return bool(self.missing_blobs) and any(
            c.digest is not None and c.digest.sha1 in self.missing_blobs
            for c in previous.chunks)

    def _appended_prefix(self, job: FileJob, entry: mf.Entry, previous: FileRecord
                         ) -> range:
        """The leading chunks of an append-only file that the previous backup already
        holds unchanged: the full chunks of its previous size, when the file did not
        shrink and its first and last full chunks still hash the same (a cheap check of
        the prefix). An empty range means a full pass.

        A pruned front (nodeos punched holes after the preamble, and flagged the
        preamble) keeps the chunks past the holes: they are not read again when the
        last full chunk still hashes the same; the preamble's chunk and those the holes
        reach are read (or are holes) as in a new file."""
        none = range(0)
        if not (entry.appendonly and self.options.incremental):
            return none
        step = self.options.chunk_size
        if entry.size < previous.size or previous.chunk_size != step:
            log.warning("backup.appendonly_full_pass", path=entry.path,
                        reason=f"shrank from {previous.size} to {entry.size} bytes"
                        if entry.size < previous.size else "chunk size changed")
            return none
        full = previous.size // step
        if full == 0:
            return none
        if self._lacks_blobs(previous):
            log.warning("backup.appendonly_full_pass", path=entry.path,
                        reason="the store lacks a blob of the previous backup")
            return none
        first = _past_a_pruned_front(job.extents, step)
        for index in sorted({first, full - 1} - ({0} if first else set())):
            if index >= full:
                break
            expected = previous.chunks[index].digest
            if not job.holds(index, expected):
                log.warning("backup.appendonly_full_pass", path=entry.path,
                            reason=f"chunk {index} changed since the previous backup")
                return none
            self.stats.bytes_read += job.length(index) if expected is not None else 0
        if first:
            log.info("backup.pruned_front", path=entry.path, chunks_reread_or_holes=first)
        self.stats.files_appended += 1
        return range(first, full)


def _past_a_pruned_front(extents: list[tuple[int, int]], step: int) -> int:
    """The first chunk past a pruned front: when the file's data starts at 0 (the
    preamble), stops, and resumes further on, the chunk after the one where it resumes
    (extents closer than MERGE_GAP come merged, so the resume point is known to within
    that: the chunk holding it is read again). 0 when the front is not pruned."""
    if len(extents) < 2 or extents[0][0] != 0:
        return 0
    resume = extents[1][0]
    return (resume + MERGE_GAP) // step + 1
