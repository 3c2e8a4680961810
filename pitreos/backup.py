"""Backup: split files into fixed-size chunks, store the blobs the store lacks, then write
the manifest.

The work is a two-stage pipeline on a :class:`~pitreos.parallel.TaskWindow`: workers
read and hash chunks; the main thread decides, from the catalog, which chunks are new
(a batch at a time: one query per batch, not per chunk); workers compress and store
those. The catalog is touched only from the main thread, and only after the store
write it records (and a flush that makes it durable). The manifest is written last, so
an interrupted or failed backup leaves blobs (which a later backup reuses) but never a
manifest.
"""

import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import structlog

from . import locks, nodeos
from . import manifest as mf
from .blobcodec import parse_header
from .catalog import Catalog, FileRecord, KnownBlob, NewBlob
from .errors import (
    BlobNotFound,
    CollisionError,
    DirtyState,
    IntegrityError,
    PitreosError,
    SourceChanged,
)
from .handles import Handles
from .hashing import ChunkDigest, blake3_hex, digest, sha1_hex
from .parallel import TaskWindow
from .progress import NoProgress, Progress
from .repository import Repository
from .sparse import data_extents, overlaps, pread_exact, read_nonzero
from .walk import PathFilter, SourceEntry, check_source_dir, glob_match, scan

log = structlog.get_logger(__name__)

DEFAULT_CHUNK_SIZE = 1 << 20  # chosen by tools/bench.py: see docs/performance.md
MIN_CHUNK_SIZE = 64 << 10
MAX_CHUNK_SIZE = 256 << 20
_CATALOG_BATCH = 256
# Read chunks whose fate needs the catalog wait for a batch this big (bounded memory:
# one chunk buffer each). One query a chunk cost the main thread 117 us each (cProfile,
# mostly regaining the GIL after SQLite released it) while workers waited for work.
_DECIDE_BATCH = 16
_MARKER_REFRESH_SECONDS = 600.0


@dataclass
class BackupOptions:
    tag: str = "default"
    meta: dict[str, str] = field(default_factory=dict)
    chunk_size: int = DEFAULT_CHUNK_SIZE
    workers: int = 4
    incremental: bool = False
    path_filter: PathFilter = field(default_factory=PathFilter)
    appendonly: tuple[str, ...] = nodeos.APPEND_ONLY_DEFAULTS
    node: bool | None = None  # None: detect a nodeos data directory
    allow_dirty: bool = False
    keep_finalizer_safety: bool = False
    lock_stale_after: float = locks.DEFAULT_STALE_AFTER  # seconds
    gc_poll_seconds: float = 2.0


@dataclass
class BackupStats:
    files: int = 0
    files_unchanged: int = 0
    files_appended: int = 0  # append-only files of which only the tail was read
    blobs_stored_again: int = 0  # reused blobs an overlapping gc deleted
    chunks: int = 0
    chunks_empty: int = 0
    chunks_known: int = 0
    blobs_stored: int = 0
    bytes_read: int = 0
    bytes_stored: int = 0
    seconds: float = 0.0


@dataclass
class BackupResult:
    manifest: mf.Manifest
    stats: BackupStats


@dataclass
class _FileJob:
    """A file being read: its identity and the chunks resolved so far (None: to read)."""

    source: SourceEntry
    chunks: list[mf.Chunk | None]
    extents: list[tuple[int, int]]  # where the file holds data: holes are not read
    previous: FileRecord | None = None  # the same file in the previous backup

    def reads(self) -> int:
        return sum(1 for c in self.chunks if c is None)


@dataclass(frozen=True, slots=True)
class _ReadResult:
    job: _FileJob
    index: int
    data: bytes | bytearray | None  # None: all zeros
    digest: ChunkDigest | None
    unchanged: bool = False  # the same bytes as this chunk in the previous backup


@dataclass(frozen=True, slots=True)
class _StoreResult:
    blob: NewBlob
    written: bool
    existing_blake3: str | None  # for a blob that was already there and not in the catalog


def run_backup(
    source: Path,
    repo: Repository,
    catalog: Catalog,
    options: BackupOptions,
    progress: Progress | None = None,
) -> BackupResult:
    """Back up ``source``; returns the manifest written and what it cost."""
    return _Backup(source, repo, catalog, options, progress or NoProgress()).run()


class _Backup:
    def __init__(self, source: Path, repo: Repository, catalog: Catalog,
                 options: BackupOptions, progress: Progress) -> None:
        self.source = source
        self.repo = repo
        self.catalog = catalog
        self.options = options
        self.progress = progress
        self.stats = BackupStats()
        self.pending_uploads: dict[str, str] = {}  # sha1 -> blake3, being stored now
        self.stored_now: dict[str, str] = {}  # sha1 -> blake3, stored by this backup
        self.new_blobs: list[NewBlob] = []
        self.meta = dict(options.meta)
        self.missing_blobs: set[str] = set()  # in the catalog, but not in the store
        self.marker = locks.new_marker("backup")
        self.trust_unreferenced_after = 0.0

    def run(self) -> BackupResult:
        started = time.monotonic()
        mf.validate_tag(self.options.tag)
        check_source_dir(self.source)
        path_filter = self._node_checks()
        scanned = scan(self.source, path_filter)
        entries = scanned.entries
        for pattern in path_filter.unused([e.path for e in entries], scanned.excluded):
            log.warning("backup.glob_matches_nothing", glob=pattern)
        previous = self._previous_files() if self.options.incremental else {}
        locks.write(self.repo.store, self.marker)
        try:
            return self._run(entries, previous, started)
        finally:
            locks.remove(self.repo.store, self.marker)

    def _run(self, entries: list[SourceEntry], previous: dict[str, FileRecord],
             started: float) -> BackupResult:
        self.trust_unreferenced_after = self._newest_gc_deletion()
        self.missing_blobs = self.catalog.missing_blobs()
        manifest_entries: list[mf.Entry] = []
        jobs: list[_FileJob] = []
        try:
            for src in entries:
                entry = self._entry_for(src)
                manifest_entries.append(entry)
                if src.type == "file":
                    job = self._plan_file(src, entry, previous.get(src.path))
                    if job is not None:
                        jobs.append(job)
            self.progress.start("backup", sum(self._bytes_to_read(j) for j in jobs))
            self._pipeline(jobs)
        finally:
            self._flush_blobs(force=True)
            self.progress.finish()
        by_path = {j.source.path: j for j in jobs}
        for entry in manifest_entries:
            job = by_path.get(entry.path)
            if job is not None:
                entry.chunks = [c for c in job.chunks if c is not None]
        checked_at = self._guard_against_gc(manifest_entries, since=self.marker.started)
        manifest = self._write_manifest(manifest_entries)
        self._guard_against_gc(manifest_entries, since=checked_at)
        self.stats.seconds = time.monotonic() - started
        log.info("backup.done", backup=manifest.name, files=self.stats.files,
                 read=self.stats.bytes_read, stored=self.stats.bytes_stored,
                 new_blobs=self.stats.blobs_stored, seconds=round(self.stats.seconds, 3))
        return BackupResult(manifest, self.stats)

    def _node_checks(self) -> PathFilter:
        """For a nodeos data directory: record the head block and the state's build
        environment, refuse a dirty state, leave out the finalizer's safety file.
        Returns the path filter to scan with."""
        path_filter = self.options.path_filter
        node = self.options.node
        if node is None:
            node = nodeos.is_node_dir(self.source)
        if not node:
            return path_filter
        info = nodeos.inspect(self.source)
        if info.state is not None and info.state.dirty and not self.options.allow_dirty:
            raise DirtyState(
                f"{self.source / nodeos.STATE_FILE} has its dirty flag set (nodeos is running "
                "or was not stopped cleanly): a restore of it would not open. Stop nodeos "
                "cleanly, or pass --allow-dirty"
            )
        self.meta = {**info.meta, **self.options.meta}  # --meta wins over detection
        safety = self.source / nodeos.FINALIZER_SAFETY
        if not self.options.keep_finalizer_safety and safety.exists():
            log.warning("backup.finalizer_safety_left_out", path=str(safety),
                        reason="restoring an old copy on a finalizer is dangerous",
                        hint="--keep-finalizer-safety keeps it")
            path_filter = PathFilter(path_filter.include,
                                     (*path_filter.exclude, nodeos.FINALIZER_SAFETY))
        return path_filter

    def _previous_files(self) -> dict[str, FileRecord]:
        records = self.catalog.backups(tag=self.options.tag)
        if not records:
            log.info("backup.no_previous", tag=self.options.tag)
            return {}
        return self.catalog.files_of(records[0].name)

    def _entry_for(self, src: SourceEntry) -> mf.Entry:
        st = src.st
        entry = mf.Entry(path=src.path, type=src.type, mode=st.st_mode & 0o7777,
                         mtime_ns=st.st_mtime_ns)
        if src.type == "symlink":
            entry.target = os.readlink(src.abspath)
        elif src.type == "file":
            entry.size = st.st_size
            entry.inode = st.st_ino
            entry.appendonly = any(glob_match(src.path, p) for p in self.options.appendonly)
        return entry

    def _plan_file(self, src: SourceEntry, entry: mf.Entry,
                   previous: FileRecord | None) -> _FileJob | None:
        """Reuse an unchanged file's chunks, or open it and list the chunks to read."""
        self.stats.files += 1
        size, step = entry.size, self.options.chunk_size
        count = -(-size // step)
        if (previous is not None and previous.size == size and previous.chunk_size == step
                and previous.mtime_ns == entry.mtime_ns and previous.inode == entry.inode
                and not self._lacks_blobs(previous)):
            entry.chunks = previous.chunks
            self.stats.files_unchanged += 1
            self.stats.chunks += count
            return None
        usable = previous if previous is not None and previous.chunk_size == step else None
        fd = _open_source(src)  # closed again: the pipeline reopens files as it reaches them
        try:
            job = _FileJob(src, [None] * count, data_extents(fd, size), usable)
            kept = self._appended_prefix(job, entry, previous, fd) if previous else 0
            job.chunks[:kept] = previous.chunks[:kept] if previous is not None else []
        finally:
            os.close(fd)
        for index in range(kept, count):
            start = index * step
            if not overlaps(job.extents, start, min(start + step, size)):
                job.chunks[index] = mf.Chunk(start, None)
                self.stats.chunks_empty += 1
        self.stats.chunks += count
        return job

    def _lacks_blobs(self, previous: FileRecord) -> bool:
        """Whether the store lacks a blob of this file's previous chunks (a sync saw it
        missing): the file is then read again, so that its blob is stored again."""
        return bool(self.missing_blobs) and any(
            c.digest is not None and c.digest.sha1 in self.missing_blobs
            for c in previous.chunks)

    def _appended_prefix(self, job: _FileJob, entry: mf.Entry, previous: FileRecord,
                         fd: int) -> int:
        """How many leading chunks of an append-only file the previous backup already
        holds unchanged: the full chunks of its previous size, when the file did not
        shrink and its first and last full chunks still hash the same (a cheap check of
        the prefix). 0 means a full pass."""
        if not (entry.appendonly and self.options.incremental):
            return 0
        step = self.options.chunk_size
        if entry.size < previous.size or previous.chunk_size != step:
            log.warning("backup.appendonly_full_pass", path=entry.path,
                        reason=f"shrank from {previous.size} to {entry.size} bytes"
                        if entry.size < previous.size else "chunk size changed")
            return 0
        full = previous.size // step
        if full == 0:
            return 0
        if self._lacks_blobs(previous):
            log.warning("backup.appendonly_full_pass", path=entry.path,
                        reason="the store lacks a blob of the previous backup")
            return 0
        for index in sorted({0, full - 1}):
            probe = self._read_chunk(job, index, fd)
            if probe.digest != previous.chunks[index].digest:
                log.warning("backup.appendonly_full_pass", path=entry.path,
                            reason=f"chunk {index} changed since the previous backup")
                return 0
            self.stats.bytes_read += len(probe.data or b"")
        self.stats.files_appended += 1
        return full

    def _bytes_to_read(self, job: _FileJob) -> int:
        step, size = self.options.chunk_size, job.source.st.st_size
        return sum(mf.chunk_length(size, step, i) for i, c in enumerate(job.chunks) if c is None)

    # The pipeline
    def _pipeline(self, jobs: list[_FileJob]) -> None:
        by_path = {job.source.path: job for job in jobs}
        # files open as their first chunk is read and close after their last
        handles = Handles(lambda path: _open_source(by_path[path].source),
                          lambda path, fd: _check_unchanged(by_path[path], fd))
        reads = [(job, i) for job in jobs for i, c in enumerate(job.chunks) if c is None]
        reads.reverse()
        workers = self.options.workers
        try:
            for job in jobs:
                handles.expect(job.source.path, job.reads())
            undecided: list[_ReadResult] = []
            with TaskWindow[_ReadResult | _StoreResult](workers, workers + 2) as window:
                while reads or len(window) or undecided:
                    while reads and not window.full:
                        job, index = reads.pop()
                        window.submit(self._read_chunk, job, index,
                                      handles.fd(job.source.path))
                    if undecided and (len(undecided) >= _DECIDE_BATCH or not len(window)):
                        self._decide(undecided, window)
                        undecided = []
                        continue
                    result = window.next_done()
                    if isinstance(result, _ReadResult):
                        if self._on_read(result):
                            undecided.append(result)
                        handles.done(result.job.source.path)
                    else:
                        self._on_stored(result)
        finally:
            handles.close_all()

    def _read_chunk(self, job: _FileJob, index: int, fd: int) -> _ReadResult:
        step = self.options.chunk_size
        start = index * step
        length = mf.chunk_length(job.source.st.st_size, step, index)
        try:
            data = read_nonzero(fd, start, length, job.extents)
        except EOFError as exc:
            raise SourceChanged(f"{job.source.abspath} shrank while it was backed up "
                                f"({exc})") from exc
        except OSError as exc:
            raise PitreosError(f"cannot read {job.source.abspath} at offset {start}: "
                               f"{exc.strerror}") from exc
        if data is None:
            return _ReadResult(job, index, None, None)
        before = self._previous_digest(job, index, length)
        if before is not None:
            # blake3 first, ~3x cheaper than sha1: equal to the previous backup's blake3
            # for this chunk means the same bytes, whose sha1 is already known
            b3 = blake3_hex(data)
            if b3 == before.blake3:
                return _ReadResult(job, index, data, before, unchanged=True)
            return _ReadResult(job, index, data, ChunkDigest(sha1_hex(data), b3))
        return _ReadResult(job, index, data, digest(data))

    def _previous_digest(self, job: _FileJob, index: int, length: int) -> ChunkDigest | None:
        prev = job.previous
        if prev is None or index >= len(prev.chunks):
            return None
        if mf.chunk_length(prev.size, self.options.chunk_size, index) != length:
            return None  # the previous chunk covered fewer bytes
        return prev.chunks[index].digest

    def _on_read(self, r: _ReadResult) -> bool:
        """Record a chunk read; True when whether to store it is for :meth:`_decide`."""
        start = r.index * self.options.chunk_size
        undecided = False
        self.progress.advance(len(r.data) if r.data is not None else
                              mf.chunk_length(r.job.source.st.st_size, self.options.chunk_size,
                                              r.index))
        if r.data is None or r.digest is None:
            r.job.chunks[r.index] = mf.Chunk(start, None)
            self.stats.chunks_empty += 1
        else:
            self.stats.bytes_read += len(r.data)
            r.job.chunks[r.index] = mf.Chunk(start, r.digest)
            # an unchanged chunk's blob is referenced by the previous backup, so it is
            # in the store unless a listing found it missing: no catalog lookup
            if r.unchanged and r.digest.sha1 not in self.missing_blobs:
                self.stats.chunks_known += 1
            else:
                undecided = True
        if time.time() - self.marker.updated > _MARKER_REFRESH_SECONDS:
            locks.write(self.repo.store, self.marker)  # a long backup never looks stale
        return undecided

    def _decide(self, batch: list[_ReadResult],
                window: TaskWindow[_ReadResult | _StoreResult]) -> None:
        """Store the chunks of ``batch`` whose blobs the store lacks."""
        known = self.catalog.known_blobs([r.digest.sha1 for r in batch if r.digest])
        for r in batch:
            assert r.digest is not None and r.data is not None
            start = r.index * self.options.chunk_size
            if self._needs_storing(r.digest, r.job, start, known.get(r.digest.sha1)):
                self.pending_uploads[r.digest.sha1] = r.digest.blake3
                window.submit(self._store_blob, r.digest, r.data)
            else:
                self.stats.chunks_known += 1

    def _needs_storing(self, d: ChunkDigest, job: _FileJob, start: int,
                       known: KnownBlob | None) -> bool:
        """Whether the blob must be stored (``known``: its catalog row); raises on a sha1
        collision."""
        other = self.pending_uploads.get(d.sha1) or self.stored_now.get(d.sha1)
        if other is None:
            if known is None:
                return True
            other = known.blake3
            if other == d.blake3 and (known.missing or (
                    known.refcount == 0 and known.added_unix < self.trust_unreferenced_after)):
                return True  # gone, or may have been taken by a gc: store it again
        if other != d.blake3:
            raise CollisionError(
                f"sha1 collision at {job.source.abspath} offset {start}: sha1 {d.sha1} "
                f"has blake3 {d.blake3} here and {other} in the catalog; nothing was "
                "overwritten"
            )
        return False

    def _store_blob(self, d: ChunkDigest, data: bytes | bytearray) -> _StoreResult:
        blob = self.repo.codec.encode(data, d)
        written = self.repo.put_blob(d.sha1, blob)
        existing = None
        if not written:
            written, existing = self._check_stored_blob(d, blob)
        return _StoreResult(NewBlob(d.sha1, d.blake3, len(data), len(blob)), written, existing)

    def _check_stored_blob(self, d: ChunkDigest, blob: bytes) -> tuple[bool, str | None]:
        """The store already holds a blob named ``d.sha1`` that the catalog does not know
        (left by an interrupted backup, or written by another machine): check it whole.
        Returns (whether it was replaced, its blake3 if it holds other data: a collision).
        A damaged one (cut short by a crash before it was synced) is replaced."""
        try:
            stored = self.repo.get_blob(d.sha1)
            header = parse_header(stored, d.sha1)
            if header.blake3 != d.blake3:
                return False, header.blake3
            self.repo.codec.decode(stored, d)
            return False, None
        except (IntegrityError, BlobNotFound) as exc:
            log.warning("backup.stored_blob_replaced", blob=d.sha1, reason=str(exc))
            self.repo.replace_blob(d.sha1, blob)
            return True, None

    def _on_stored(self, r: _StoreResult) -> None:
        b = r.blob
        del self.pending_uploads[b.sha1]
        if r.existing_blake3 is not None and r.existing_blake3 != b.blake3:
            raise CollisionError(
                f"sha1 collision: blob {b.sha1} in store {self.repo.url} has blake3 "
                f"{r.existing_blake3}, new data has blake3 {b.blake3}; nothing was overwritten"
            )
        self.stored_now[b.sha1] = b.blake3
        self.new_blobs.append(b)
        if r.written:
            self.stats.blobs_stored += 1
            self.stats.bytes_stored += b.stored_size
        self._flush_blobs()

    def _flush_blobs(self, force: bool = False) -> None:
        if self.new_blobs and (force or len(self.new_blobs) >= _CATALOG_BATCH):
            self.repo.flush()  # the catalog never records a blob a crash could lose
            self.catalog.add_blobs(self.new_blobs)
            self.new_blobs = []

    def _newest_gc_deletion(self) -> float:
        """Catalog blobs that no backup references are trusted to be in the store only
        if recorded after the newest gc that may have deleted blobs (gc markers are kept
        for a week, so nothing older is trusted)."""
        newest = max((m.started for m in locks.read_all(self.repo.store)
                      if m.kind == "gc" and m.deleting_blobs), default=0.0)
        return max(newest, time.time() - locks.FINISHED_GC_KEPT)

    def _guard_against_gc(self, entries: list[mf.Entry], since: float) -> float:
        """If a gc that deletes blobs overlapped this backup (running, or finished since
        ``since``), wait for it to end, then make sure every blob the backup references
        is in the store, storing again any it took. Returns when the check was made."""
        while True:
            now = time.time()
            overlapping = [m for m in locks.read_all(self.repo.store)
                           if m.kind == "gc" and m.deleting_blobs
                           and (m.live(now, self.options.lock_stale_after)
                                or (m.finished is not None and m.finished >= since))]
            running = [m for m in overlapping if m.live(now, self.options.lock_stale_after)]
            if not running:
                break
            log.info("backup.waiting_for_gc", host=running[0].host, gc=running[0].id)
            time.sleep(self.options.gc_poll_seconds)
        checked_at = time.time()
        if overlapping:
            self._store_again_what_gc_took(entries)
        return checked_at

    def _store_again_what_gc_took(self, entries: list[mf.Entry]) -> None:
        present = {b.sha1 for b in self.repo.list_blobs()}
        missing: dict[str, tuple[mf.Entry, mf.Chunk]] = {}
        for entry in entries:
            for chunk in entry.chunks:
                if chunk.digest is not None and chunk.digest.sha1 not in present:
                    missing.setdefault(chunk.digest.sha1, (entry, chunk))
        for entry, chunk in missing.values():
            assert chunk.digest is not None
            path = self.source / entry.path
            length = mf.chunk_length(entry.size, self.options.chunk_size,
                                     chunk.start // self.options.chunk_size)
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            try:
                data = pread_exact(fd, length, chunk.start)
            finally:
                os.close(fd)
            if digest(data) != chunk.digest:
                raise SourceChanged(f"{path} changed while it was backed up (at offset "
                                    f"{chunk.start}); no backup was written")
            self.pending_uploads[chunk.digest.sha1] = chunk.digest.blake3
            self._on_stored(self._store_blob(chunk.digest, data))
            self.stats.blobs_stored_again += 1
            log.warning("backup.blob_stored_again_after_gc", blob=chunk.digest.sha1)
        self._flush_blobs(force=True)

    def _write_manifest(self, entries: list[mf.Entry]) -> mf.Manifest:
        # `created` keeps sub-second precision to order backups made in the same second;
        # the name has whole seconds, moved on by one while a backup of that name exists
        created = datetime.now(UTC)
        name_time = created.replace(microsecond=0)
        taken = self.catalog.backup_names()  # a name never means two backups, even after gc
        for _ in range(60):
            manifest = mf.Manifest(
                name=mf.backup_name(name_time, self.options.tag), tag=self.options.tag,
                created=created, chunk_size=self.options.chunk_size, entries=entries,
                meta=dict(self.meta),
            )
            if manifest.name not in taken and self.repo.write_manifest(manifest):
                self.catalog.add_backup(manifest)
                return manifest
            name_time += timedelta(seconds=1)
        raise PitreosError(f"could not find a free backup name in store {self.repo.url}")


def _open_source(src: SourceEntry) -> int:
    try:
        return os.open(src.abspath, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise PitreosError(f"cannot read {src.abspath}: {exc.strerror}") from exc


def _check_unchanged(job: _FileJob, fd: int) -> None:
    """All chunks read: the file must be as it was when the backup scanned it."""
    before = job.source.st
    after = os.fstat(fd)
    if (after.st_size, after.st_mtime_ns, after.st_ino) != (
            before.st_size, before.st_mtime_ns, before.st_ino):
        raise SourceChanged(
            f"{job.source.abspath} changed while it was backed up (size "
            f"{before.st_size} -> {after.st_size}); no backup was written: stop the "
            "writer or back up a snapshot"
        )
