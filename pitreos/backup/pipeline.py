"""The backup pipeline: read, hash, decide, store.

Workers read and hash chunks, several a task (:mod:`pitreos.chunktasks`); the
coordinator decides, from the catalog, which chunks are new (a batch at a time: one
query per batch, not per chunk); workers read those again, compress and store them. On
a local store, where asking whether it has a blob costs a stat, the hashing task stores
what the store lacks itself (reading and hashing each new chunk once: the full backup of
the bench's small data set used ~25% less CPU); the coordinator still decides, and
records only the blobs its decisions call for. The catalog is touched only by the
coordinator, and only after the store write it records (and a flush that makes it
durable). On a local store the workers are processes (:mod:`pitreos.parallel`).
"""

import enum
import os
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from .. import crashpoints
from .. import manifest as mf
from ..catalog import Catalog, KnownBlob
from ..chunktasks import (
    BlobStored,
    HashResult,
    HashTask,
    SourceFile,
    StoreResult,
    StoreTask,
    Task,
    batches,
    perform,
    store_blob,
    task_bytes,
    transfer_bytes,
)
from ..cores import usable_cores
from ..errors import CollisionError, SourceChanged
from ..gcprotocol import BackupGuard
from ..hashing import ChunkDigest, NewBlob, matches
from ..log import get_logger
from ..parallel import Feed, Metered, imap_unordered
from ..progress import Progress
from ..repository import Repository
from ..sparse import pread_exact
from .jobs import FileJob, check_unchanged
from .options import BackupStats

log = get_logger(__name__)
_CATALOG_BATCH = 256
# Hashed chunks whose fate needs the catalog wait for a batch this big. One query a
# chunk cost the main thread 117 us each (cProfile, mostly regaining the GIL after
# SQLite released it) while workers waited for work.
_DECIDE_BATCH = 64


@dataclass(frozen=True, slots=True)
class _Undecided:
    job: FileJob
    source: SourceFile
    index: int
    digest: ChunkDigest
    stored: BlobStored | None  # its blob, stored by the task that hashed it


class _Action(enum.Enum):
    REUSE = "reuse"  # in the store: nothing to do
    STORE = "store"  # store it (a conditional put: one already there is checked whole)
    CONFIRM = "confirm"  # ask the store whether it has it; store it if not


class Pipeline:
    def __init__(self, repo: Repository, catalog: Catalog, guard: BackupGuard,
                 missing_blobs: set[str], *, workers: int, stats: BackupStats,
                 progress: Progress, processes: bool = False) -> None:
        self.repo = repo
        self.catalog = catalog
        self.guard = guard
        self.missing_blobs = missing_blobs  # in the catalog, but not in the store
        self.workers = workers
        self.processes = processes  # worker processes (a local store), else threads
        self.stats = stats
        self.progress = progress
        self.pending_uploads: dict[str, str] = {}  # sha1 -> blake3, being stored now
        self.stored_now: dict[str, str] = {}  # sha1 -> blake3, stored by this backup
        self.new_blobs: list[NewBlob] = []
        self.task_bytes = 0  # set by run: how much work a task gets

    def run(self, jobs: list[FileJob]) -> None:
        """Read every chunk the jobs still need; store the new ones. Fills each job's
        chunk list."""
        sources = {job.path: job.source_file() for job in jobs}
        # reading and hashing is CPU-bound: no more of it at once than the cores run,
        # however many threads wait on an object store's requests
        cpu_workers = min(self.workers, usable_cores())
        self.task_bytes = task_bytes(sum(job.length(i) for job in jobs for i in job.reads()),
                                     cpu_workers)
        by_abspath = {sources[job.path].path: (job, sources[job.path]) for job in jobs}
        tasks_left: dict[str, int] = {}
        hash_tasks = list(self._hash_tasks(jobs, sources, tasks_left))
        for job in jobs:
            if not tasks_left.get(job.path):
                _check_file(job)  # nothing to read: still the file that was scanned
        reads = Metered(hash_tasks, cpu_workers + 2)
        feed: Feed[Task] = Feed(reads)
        hashes_left = len(hash_tasks)
        undecided: list[_Undecided] = []
        try:
            for result in imap_unordered(partial(perform, self.repo), feed,
                                         workers=self.workers, window=self.workers + 2,
                                         processes=self.processes):
                if isinstance(result, StoreResult):
                    for stored in result.blobs:
                        self._on_stored(stored)
                    continue
                assert isinstance(result, HashResult)
                reads.done()
                hashes_left -= 1
                job, source = by_abspath[result.path]
                undecided += self._on_hashed(job, source, result)
                tasks_left[job.path] -= 1
                if not tasks_left[job.path]:
                    _check_file(job)
                if undecided and (len(undecided) >= _DECIDE_BATCH or not hashes_left):
                    self._decide(undecided, feed)
                    undecided = []
        finally:
            # what was stored is recorded even when the backup fails: the next one
            # then reuses it without checking it whole
            self.flush_blobs(force=True)

    def _hash_tasks(self, jobs: list[FileJob], sources: dict[str, SourceFile],
                    tasks_left: dict[str, int]) -> Iterator[HashTask]:
        for job in jobs:
            for indexes in batches(job.reads(), job.chunk_size, self.task_bytes):
                tasks_left[job.path] = tasks_left.get(job.path, 0) + 1
                yield HashTask(sources[job.path].part(indexes), tuple(indexes),
                               tuple(job.previous_digest(i) for i in indexes),
                               store_new=not self.repo.properties.remote)

    def _on_hashed(self, job: FileJob, source: SourceFile, result: HashResult
                   ) -> list[_Undecided]:
        """Record a task's chunks; returns those whose fate is for :meth:`_decide`."""
        undecided = []
        hashed_bytes = 0
        for hashed in result.chunks:
            index = hashed.index
            start = index * job.chunk_size
            length = job.length(index)
            hashed_bytes += length
            if hashed.digest is None:
                job.chunks[index] = mf.Chunk(start, None)
                self.stats.chunks_empty += 1
                continue
            self.stats.bytes_read += length
            job.chunks[index] = mf.Chunk(start, hashed.digest)
            # an unchanged chunk's blob is referenced by the previous backup, so it is
            # in the store unless a listing found it missing: no catalog lookup
            if hashed.unchanged and hashed.digest.sha1 not in self.missing_blobs:
                self.stats.chunks_known += 1
            else:
                undecided.append(_Undecided(job, source, index, hashed.digest,
                                            hashed.stored))
        self.progress.advance(hashed_bytes)
        self.guard.refresh()  # a long backup never looks stale
        return undecided

    def _decide(self, batch: list[_Undecided], feed: Feed[Task]) -> None:
        """Have workers store the chunks of ``batch`` whose blobs the store lacks, and
        confirm those the catalog knows but no backup references."""
        known = self.catalog.known_blobs([u.digest.sha1 for u in batch])
        to_store: dict[str, list[_Undecided]] = defaultdict(list)
        confirm: set[tuple[str, int]] = set()
        for u in batch:
            where = f"{u.job.source.abspath} offset {u.index * u.job.chunk_size}"
            action = self._action(u.digest, where, known.get(u.digest.sha1))
            if action is _Action.REUSE:
                self.stats.chunks_known += 1
                continue
            self.pending_uploads[u.digest.sha1] = u.digest.blake3
            if u.stored is not None:  # the store lacked it, and the hash task stored it
                self._on_stored(u.stored)
                continue
            to_store[u.job.path].append(u)
            if action is _Action.CONFIRM:
                confirm.add((u.job.path, u.index))
        for path, chunks in to_store.items():
            by_index = {u.index: u for u in chunks}
            source = chunks[0].source
            for indexes in batches(sorted(by_index), source.chunk_size,
                                   transfer_bytes(self.repo, self.task_bytes)):
                feed.push(StoreTask(source.part(indexes), tuple(
                    (i, by_index[i].digest, (path, i) in confirm) for i in indexes)))

    def _action(self, d: ChunkDigest, where: str, known: KnownBlob | None) -> "_Action":
        """What the chunk's blob needs (``known``: its catalog row); raises on a sha1
        collision."""
        ours = self.pending_uploads.get(d.sha1) or self.stored_now.get(d.sha1)
        if ours is not None:
            other = ours
        elif known is not None:
            other = known.blake3
        else:
            return _Action.STORE
        if other != d.blake3:
            raise CollisionError(
                f"sha1 collision at {where}: sha1 {d.sha1} has blake3 {d.blake3} here and "
                f"{other} in the catalog; nothing was overwritten"
            )
        if ours is not None or known is None:
            return _Action.REUSE  # this backup stored it
        if known.missing:
            return _Action.STORE  # a listing or verify found it gone or damaged
        if known.refcount == 0:
            # no listed backup holds it (left by a failed backup, or its backups were
            # deleted): a gc may have taken it, so the store must say it is there
            return _Action.CONFIRM
        return _Action.REUSE

    def _on_stored(self, r: BlobStored) -> None:
        b = r.blob
        del self.pending_uploads[b.sha1]
        if r.replaced is not None:
            log.warning("backup.stored_blob_replaced", blob=b.sha1, reason=r.replaced)
        if r.existing_blake3 is not None and r.existing_blake3 != b.blake3:
            raise CollisionError(
                f"sha1 collision: blob {b.sha1} in store {self.repo.url} has blake3 "
                f"{r.existing_blake3}, new data has blake3 {b.blake3}; nothing was overwritten"
            )
        self.stored_now[b.sha1] = b.blake3
        if r.confirmed:  # already in the catalog and in the store
            self.stats.chunks_known += 1
            return
        self.new_blobs.append(b)
        if r.written:
            self.stats.blobs_stored += 1
            self.stats.bytes_stored += b.stored_size
        crashpoints.point("backup.blob_stored")
        self.flush_blobs()

    def flush_blobs(self, force: bool = False) -> None:
        if self.new_blobs and (force or len(self.new_blobs) >= _CATALOG_BATCH):
            # the catalog never records a blob a crash could lose
            self.repo.flush([b.sha1 for b in self.new_blobs])
            crashpoints.point("backup.blobs_flushed")
            self.catalog.add_blobs(self.new_blobs)
            self.new_blobs = []

    def store_again(self, source: Path, entries: list[mf.Entry], chunk_size: int) -> None:
        """After a gc overlapped the backup: store again every blob it references that
        the store no longer holds, from the source (which must not have changed)."""
        missing: dict[str, tuple[mf.Entry, mf.Chunk]] = {}
        for entry in entries:
            for chunk in entry.chunks:
                if chunk.digest is not None:
                    missing.setdefault(chunk.digest.sha1, (entry, chunk))
        # one listing, streamed against the backup's blobs: what is held follows the
        # backup, not the store (a set of a million blobs' names is ~100 MB)
        for blob in self.repo.list_blobs():
            missing.pop(blob.sha1, None)
        for entry, chunk in missing.values():
            assert chunk.digest is not None
            path = source / entry.path
            length = mf.chunk_length(entry.size, chunk_size, chunk.start // chunk_size)
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            try:
                data = pread_exact(fd, length, chunk.start)
            finally:
                os.close(fd)
            if not matches(data, chunk.digest):
                raise SourceChanged(f"{path} changed while it was backed up (at offset "
                                    f"{chunk.start}); no backup was written")
            self.pending_uploads[chunk.digest.sha1] = chunk.digest.blake3
            self._on_stored(store_blob(self.repo, chunk.digest, data))
            self.stats.blobs_stored_again += 1
            log.warning("backup.blob_stored_again_after_gc", blob=chunk.digest.sha1)
        self.flush_blobs(force=True)


def _check_file(job: FileJob) -> None:
    """All its chunks read: the file must be as it was when the backup scanned it."""
    try:
        fd = os.open(job.source.abspath, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise SourceChanged(f"{job.source.abspath} changed while it was backed up "
                            f"({exc.strerror}); no backup was written") from exc
    try:
        check_unchanged(job, fd)
    finally:
        os.close(fd)
