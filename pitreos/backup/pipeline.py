"""The backup pipeline: read, hash, decide, store.

Workers read and hash chunks; the main thread decides, from the catalog, which chunks
are new (a batch at a time: one query per batch, not per chunk); workers compress and
store those. The catalog is touched only from the main thread, and only after the store
write it records (and a flush that makes it durable).
"""

import enum
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from .. import crashpoints
from .. import manifest as mf
from ..catalog import Catalog, KnownBlob, NewBlob
from ..errors import CollisionError, SourceChanged
from ..gcprotocol import BackupGuard
from ..handles import Handles
from ..hashing import ChunkDigest, digest
from ..log import get_logger
from ..parallel import Feed, call, imap_unordered
from ..progress import Progress
from ..repository import BlobState, Repository
from ..sparse import pread_exact
from .jobs import ChunkRead, FileJob, check_unchanged, open_source, read_chunk
from .options import BackupStats

log = get_logger(__name__)
_CATALOG_BATCH = 256
# Read chunks whose fate needs the catalog wait for a batch this big (bounded memory:
# one chunk buffer each). One query a chunk cost the main thread 117 us each (cProfile,
# mostly regaining the GIL after SQLite released it) while workers waited for work.
_DECIDE_BATCH = 16


@dataclass(frozen=True, slots=True)
class BlobStored:
    """A blob a worker stored (or found stored)."""

    blob: NewBlob
    written: bool
    existing_blake3: str | None  # a blob already there and not in the catalog
    confirmed: bool = False  # known to the catalog; the store said it still has it


class _Action(enum.Enum):
    REUSE = "reuse"  # in the store: nothing to do
    STORE = "store"  # store it (a conditional put: one already there is checked whole)
    CONFIRM = "confirm"  # ask the store whether it has it; store it if not


class Pipeline:
    def __init__(self, repo: Repository, catalog: Catalog, guard: BackupGuard,
                 missing_blobs: set[str], *, workers: int, stats: BackupStats,
                 progress: Progress) -> None:
        self.repo = repo
        self.catalog = catalog
        self.guard = guard
        self.missing_blobs = missing_blobs  # in the catalog, but not in the store
        self.workers = workers
        self.stats = stats
        self.progress = progress
        self.pending_uploads: dict[str, str] = {}  # sha1 -> blake3, being stored now
        self.stored_now: dict[str, str] = {}  # sha1 -> blake3, stored by this backup
        self.new_blobs: list[NewBlob] = []

    def run(self, jobs: list[FileJob]) -> None:
        """Read every chunk the jobs still need; store the new ones. Fills each job's
        chunk list."""
        by_path = {job.path: job for job in jobs}
        # files open as their first chunk is read and close after their last
        handles = Handles(lambda path: open_source(by_path[path].source),
                          lambda path, fd: check_unchanged(by_path[path], fd))
        reads_left = 0
        for job in jobs:
            count = len(job.reads())
            handles.expect(job.path, count)
            reads_left += count
        feed: Feed[Callable[[], ChunkRead | BlobStored]] = Feed(self._reads(jobs, handles))
        undecided: list[ChunkRead] = []
        try:
            for result in imap_unordered(call, feed, workers=self.workers,
                                         window=self.workers + 2):
                if isinstance(result, BlobStored):
                    self._on_stored(result)
                    continue
                reads_left -= 1
                if self._on_read(result):
                    undecided.append(result)
                handles.done(result.job.path)
                if undecided and (len(undecided) >= _DECIDE_BATCH or not reads_left):
                    self._decide(undecided, feed)
                    undecided = []
        finally:
            handles.close_all()
            self.flush_blobs(force=True)

    def _reads(self, jobs: list[FileJob],
               handles: Handles) -> Iterator[Callable[[], ChunkRead]]:
        for job in jobs:
            for index in job.reads():
                yield partial(read_chunk, job, index, handles.fd(job.path))

    def _on_read(self, r: ChunkRead) -> bool:
        """Record a chunk read; True when whether to store it is for :meth:`_decide`."""
        start = r.index * r.job.chunk_size
        undecided = False
        self.progress.advance(len(r.data) if r.data is not None else r.job.length(r.index))
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
        self.guard.refresh()  # a long backup never looks stale
        return undecided

    def _decide(self, batch: list[ChunkRead], feed: Feed[Callable[[], ChunkRead | BlobStored]]
                ) -> None:
        """Store the chunks of ``batch`` whose blobs the store lacks; have the store
        confirm those the catalog knows but no backup references."""
        known = self.catalog.known_blobs([r.digest.sha1 for r in batch if r.digest])
        for r in batch:
            assert r.digest is not None and r.data is not None
            where = f"{r.job.source.abspath} offset {r.index * r.job.chunk_size}"
            action = self._action(r.digest, where, known.get(r.digest.sha1))
            if action is _Action.REUSE:
                self.stats.chunks_known += 1
                continue
            self.pending_uploads[r.digest.sha1] = r.digest.blake3
            feed.push(partial(self._store_blob, r.digest, r.data,
                              confirm_first=action is _Action.CONFIRM))

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

    def _store_blob(self, d: ChunkDigest, data: bytes | bytearray, *,
                    confirm_first: bool = False) -> BlobStored:
        if confirm_first and self.repo.blob_exists(d.sha1):
            return BlobStored(NewBlob(d.sha1, d.blake3, len(data), 0), written=False,
                              existing_blake3=None, confirmed=True)
        blob = self.repo.encode_blob(data, d)
        written = self.repo.put_blob(d.sha1, blob)
        existing = None
        if not written:
            written, existing = self._check_stored_blob(d, blob)
        return BlobStored(NewBlob(d.sha1, d.blake3, len(data), len(blob)), written, existing)

    def _check_stored_blob(self, d: ChunkDigest, blob: bytes) -> tuple[bool, str | None]:
        """The store already holds a blob named ``d.sha1`` that the catalog does not know
        (left by an interrupted backup, or written by another machine): check it whole.
        Returns (whether it was replaced, its blake3 if it holds other data: a collision).
        A damaged one (cut short by a crash before it was synced) is replaced."""
        state, detail = self.repo.examine_blob(d)
        if state is BlobState.OTHER:
            return False, detail
        if state is BlobState.DAMAGED:
            log.warning("backup.stored_blob_replaced", blob=d.sha1, reason=detail)
            self.repo.replace_blob(d.sha1, blob)
            return True, None
        return False, None

    def _on_stored(self, r: BlobStored) -> None:
        b = r.blob
        del self.pending_uploads[b.sha1]
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
            self.repo.flush()  # the catalog never records a blob a crash could lose
            crashpoints.point("backup.blobs_flushed")
            self.catalog.add_blobs(self.new_blobs)
            self.new_blobs = []

    def store_again(self, source: Path, entries: list[mf.Entry], chunk_size: int) -> None:
        """After a gc overlapped the backup: store again every blob it references that
        the store no longer holds, from the source (which must not have changed)."""
        present = {b.sha1 for b in self.repo.list_blobs()}
        missing: dict[str, tuple[mf.Entry, mf.Chunk]] = {}
        for entry in entries:
            for chunk in entry.chunks:
                if chunk.digest is not None and chunk.digest.sha1 not in present:
                    missing.setdefault(chunk.digest.sha1, (entry, chunk))
        for entry, chunk in missing.values():
            assert chunk.digest is not None
            path = source / entry.path
            length = mf.chunk_length(entry.size, chunk_size, chunk.start // chunk_size)
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
        self.flush_blobs(force=True)
