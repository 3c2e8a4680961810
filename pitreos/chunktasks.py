"""The per-chunk work of backup and restore, in batches: plain functions of plain,
picklable tasks, so that :mod:`pitreos.parallel` can run them on threads or in worker
processes without either side knowing which.

A task covers up to :data:`~pitreos.defaults.TASK_BYTES` of one file (less when the
whole job is small: :func:`task_bytes`). Each task opens
the file itself and sends back digests and counts, never chunk data: what crosses to
the coordinating process (and its GIL) is a few hundred bytes a task instead of a
chunk's work of Python a chunk (docs/performance.md, "worker processes").
"""

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .defaults import TASK_BYTES
from .errors import IntegrityError, PitreosError, RestoreError, SourceChanged
from .hashing import ChunkDigest, NewBlob, blake3_hex, digest, sha1_hex
from .manifest import chunk_length
from .nodeos import with_dirty_byte
from .repository import BlobState, Repository
from .sparse import (
    chunks_with_data,
    data_extents,
    extents_within,
    nonzero_runs,
    punch_hole,
    pwrite_all,
    read_nonzero,
    read_range,
)

if TYPE_CHECKING:  # the restore package imports this module
    from .restore.seeds import Seeds

Extents = tuple[tuple[int, int], ...]


@dataclass(frozen=True, slots=True)
class SourceFile:
    """A file being backed up, as scanned: its identity, size and data extents."""

    path: str  # absolute
    device: int
    inode: int
    size: int
    chunk_size: int
    extents: Extents

    def open(self) -> int:
        """Open it read-only; the file found there must be the one scanned."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as exc:
            raise PitreosError(f"cannot read {self.path}: {exc.strerror}") from exc
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (self.device, self.inode) or st.st_size < self.size:
            os.close(fd)
            raise SourceChanged(f"{self.path} was replaced or shrank while it was backed "
                                "up; no backup was written: stop the writer or back up a "
                                "snapshot")
        return fd

    def length(self, index: int) -> int:
        return min(self.chunk_size, self.size - index * self.chunk_size)

    def read(self, fd: int, index: int) -> bytes | bytearray | None:
        """Chunk ``index`` (only its data extents are read); None when it is all zeros."""
        start = index * self.chunk_size
        try:
            return read_nonzero(fd, start, self.length(index), self.extents)
        except EOFError as exc:
            raise SourceChanged(f"{self.path} shrank while it was backed up ({exc})") from exc
        except OSError as exc:
            raise PitreosError(f"cannot read {self.path} at offset {start}: "
                               f"{exc.strerror}") from exc

    def part(self, indexes: Sequence[int]) -> "SourceFile":
        """The same file with only the extents of chunks ``indexes``: a task carries no
        more of a large file's extent list than it reads."""
        lo, hi = min(indexes) * self.chunk_size, (max(indexes) + 1) * self.chunk_size
        return SourceFile(self.path, self.device, self.inode, self.size, self.chunk_size,
                          tuple(extents_within(self.extents, lo, hi)))


# Backup, step one: read and hash ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HashTask:
    source: SourceFile
    indexes: tuple[int, ...]
    previous: tuple[ChunkDigest | None, ...]  # the previous backup's digest of each
    # store each new chunk's blob right away when the store lacks it (a local store,
    # where asking costs a stat): its bytes are in hand, hashed, and need not be read
    # and hashed again by a store task
    store_new: bool = False


@dataclass(frozen=True, slots=True)
class Hashed:
    index: int
    digest: ChunkDigest | None  # None: all zeros
    unchanged: bool  # the same bytes as this chunk in the previous backup
    stored: "BlobStored | None" = None  # stored by the task itself (store_new)


@dataclass(frozen=True, slots=True)
class HashResult:
    path: str
    chunks: tuple[Hashed, ...]


def hash_chunks(repo: Repository, task: HashTask) -> HashResult:
    fd = task.source.open()
    out = []
    try:
        for index, before in zip(task.indexes, task.previous, strict=True):
            data = task.source.read(fd, index)
            if data is None:
                out.append(Hashed(index, None, False))
                continue
            if before is not None:
                # blake3 first, ~3x cheaper than sha1: equal to the previous backup's
                # blake3 for this chunk means the same bytes, whose sha1 is known
                b3 = blake3_hex(data)
                if b3 == before.blake3:
                    out.append(Hashed(index, before, True))
                    continue
                chunk = ChunkDigest(sha1_hex(data), b3)
            else:
                chunk = digest(data)
            stored = None
            if task.store_new and not repo.blob_exists(chunk.sha1):
                stored = store_blob(repo, chunk, data)
            out.append(Hashed(index, chunk, False, stored))
    finally:
        os.close(fd)
    return HashResult(task.source.path, tuple(out))


# Backup, step two: compress and store --------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoreTask:
    source: SourceFile
    chunks: tuple[tuple[int, ChunkDigest, bool], ...]  # index, digest, confirm first


@dataclass(frozen=True, slots=True)
class BlobStored:
    """A blob a task stored (or found stored)."""

    blob: NewBlob
    written: bool
    existing_blake3: str | None  # a sound blob of other data there: a sha1 collision
    confirmed: bool = False  # known to the catalog; the store said it still has it
    replaced: str | None = None  # a damaged blob was there (why): replaced


@dataclass(frozen=True, slots=True)
class StoreResult:
    blobs: tuple[BlobStored, ...]


def store_chunks(repo: Repository, task: StoreTask) -> StoreResult:
    """Read each chunk again, check it is the one hashed, and store its blob unless the
    store has it. The chunk is read again rather than kept: a task's result is digests,
    not data, and a second read comes from the page cache."""
    fd = task.source.open()
    out = []
    try:
        for index, chunk, confirm_first in task.chunks:
            with repo.transfer():
                out.append(_store_chunk(repo, task.source, fd, index, chunk, confirm_first))
    finally:
        os.close(fd)
    return StoreResult(tuple(out))


def _store_chunk(repo: Repository, source: SourceFile, fd: int, index: int,
                 chunk: ChunkDigest, confirm_first: bool) -> BlobStored:
    if confirm_first and repo.blob_exists(chunk.sha1):
        return BlobStored(NewBlob(chunk.sha1, chunk.blake3, source.length(index), 0),
                          written=False, existing_blake3=None, confirmed=True)
    with repo.blob_encoder() as encode:  # no more chunks read at once than compressors
        data = source.read(fd, index)
        if data is None or blake3_hex(data) != chunk.blake3:
            raise SourceChanged(
                f"{source.path} changed while it was backed up (at offset "
                f"{index * source.chunk_size}); no backup was written: stop the writer or "
                "back up a snapshot")
        blob, size = encode(data, chunk), len(data)
        del data  # only the blob is held while the request is in flight
    return _put_blob(repo, chunk, blob, size)


def store_blob(repo: Repository, chunk: ChunkDigest, data: bytes | bytearray) -> BlobStored:
    return _put_blob(repo, chunk, repo.encode_blob(data, chunk), len(data))


def _put_blob(repo: Repository, chunk: ChunkDigest, blob: bytes, size: int) -> BlobStored:
    new = NewBlob(chunk.sha1, chunk.blake3, size, len(blob))
    if repo.put_blob(chunk.sha1, blob):
        return BlobStored(new, written=True, existing_blake3=None)
    # the store holds a blob of that name the catalog does not know (left by an
    # interrupted backup, or written by another machine): check it whole; one cut
    # short by a crash before it was synced is replaced
    state, detail = repo.examine_blob(chunk)
    if state is BlobState.OTHER:
        return BlobStored(new, written=False, existing_blake3=detail)
    if state is BlobState.DAMAGED:
        repo.replace_blob(chunk.sha1, blob)
        return BlobStored(new, written=True, existing_blake3=None, replaced=detail)
    return BlobStored(new, written=False, existing_blake3=None)


# Restore: check local chunks, then fetch and write ------------------------------------


@dataclass(frozen=True, slots=True)
class CheckTask:
    """Chunks ``first`` onward of a local file that a restore writes in place: the task
    finds where the file holds data, and hashes what the backup has data for too. Its
    extents are found here, not by the coordinator: with ``lseek`` over a node state's
    thousands of extents and a loop a chunk there, the coordinator of the bench's
    in-place restore held the GIL 54.5 ms a restore, against 39.5 ms since (py-spy
    --gil at 1,000 Hz, medians of 8 alternating runs)."""

    path: str  # absolute
    local_size: int  # the local file's size, as planned
    size: int  # the file's size in the backup
    chunk_size: int
    first: int
    expected: tuple[str | None, ...]  # the backup's blake3 of each chunk; None: zeros
    # chunks below this index that hold data on both sides are kept unread: an
    # append-only file's prefix whose first and last chunks matched
    trusted: int = 0


@dataclass(frozen=True, slots=True)
class CheckResult:
    """What the local chunks of a :class:`CheckTask` need; chunk indexes."""

    path: str
    fetch: tuple[int, ...]
    over_data: tuple[int, ...]  # those of ``fetch`` where the local file holds data
    punch: tuple[int, ...]  # empty in the backup, data in the local file
    checked: int  # chunks hashed, or found too short to hold the backup's chunk
    kept: int
    bytes_read: int


def check_chunks(task: CheckTask) -> CheckResult:
    """blake3 of each local chunk against the backup's (equal blake3: equal bytes).

    The restore has written nothing yet when its check runs. A local file that another
    program cuts shorter while this task reads it ends the restore in one line naming
    it; one that cannot be opened is the plan's error (`plan_restore`). Cut shorter
    before the task looks, its lost chunks are simply fetched."""
    fd = os.open(task.path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        return _judged(task, fd)
    except EOFError as exc:
        raise RestoreError(f"{task.path} shrank while the restore compared it with the "
                           f"backup ({exc}); nothing was changed: stop what writes to it, "
                           "then restore again") from exc
    finally:
        os.close(fd)


def _judged(task: CheckTask, fd: int) -> CheckResult:
    """Each chunk of the task's run, judged: fetched, punched or kept."""
    step, size, local_size = task.chunk_size, task.size, task.local_size
    fetch, over_data, punch = [], [], []
    checked = kept = read = 0
    start = task.first * step
    extents = data_extents(fd, min(local_size, start + len(task.expected) * step),
                           start)
    with_data = chunks_with_data(extents, size, step)
    for index, expected in enumerate(task.expected, task.first):
        if index not in with_data:
            if expected is not None:
                fetch.append(index)
        elif expected is None:
            punch.append(index)
        elif index < task.trusted:
            kept += 1
        else:
            checked += 1
            at = index * step
            length = chunk_length(size, step, index)
            if at + length <= local_size:
                read += length
                if blake3_hex(read_range(fd, at, length, extents)) == expected:
                    kept += 1
                    continue
            fetch.append(index)
            over_data.append(index)
    return CheckResult(task.path, tuple(fetch), tuple(over_data), tuple(punch), checked,
                       kept, read)


@dataclass(frozen=True, slots=True)
class FetchChunk:
    index: int
    start: int
    length: int
    digest: ChunkDigest
    had_data: bool  # the local file has data there: zero runs must be punched
    dirty_byte: bool = False  # the node state's first chunk: written with it set


@dataclass(frozen=True, slots=True)
class WriteTask:
    path: str  # absolute, opened (created, sized) by the coordinator already
    entry_path: str  # as in the backup: how seeds find the chunk
    backup: str
    punch: tuple[tuple[int, int], ...]  # start, length
    fetch: tuple[FetchChunk, ...]
    seeds: "Seeds"


@dataclass(frozen=True, slots=True)
class WriteResult:
    path: str
    punched: int
    fetched: int
    data_bytes: int
    stored_bytes: int  # as the store sent them
    written: int  # non-zero bytes written
    seeded: int
    dirty_original: int | None  # the backup's dirty byte, when the task wrote it set


def write_chunks(repo: Repository, task: WriteTask) -> WriteResult:
    """Punch the holes and write the fetched chunks of one file (each chunk's blake3
    checked before a byte is written; only non-zero runs are written)."""
    fd = os.open(task.path, os.O_WRONLY | os.O_NOFOLLOW)
    data_bytes = stored_bytes = written = seeded = 0
    original = None
    try:
        for start, length in task.punch:
            punch_hole(fd, start, length)
        for chunk in task.fetch:
            with repo.transfer():
                one = _write_chunk(repo, task, chunk, fd)
            data_bytes += chunk.length
            stored_bytes += one.fetched
            written += one.written
            seeded += one.seeded
            original = one.dirty_original if chunk.dirty_byte else original
    finally:
        os.close(fd)
    return WriteResult(task.path, len(task.punch), len(task.fetch), data_bytes,
                       stored_bytes, written, seeded, original)


@dataclass(frozen=True, slots=True)
class _ChunkWritten:
    fetched: int  # bytes fetched from the store: 0 from a seed
    written: int
    seeded: bool
    dirty_original: int | None


def _write_chunk(repo: Repository, task: WriteTask, chunk: FetchChunk, fd: int
                 ) -> _ChunkWritten:
    """Write one chunk, from a seed or else fetched. The chunk is held only in a turn
    (at most one a core), and not past this call."""
    if task.seeds.directories:
        with repo.chunk_turn():
            found = task.seeds.find(task.entry_path, chunk.start, chunk.length,
                                    chunk.digest)
            if found is not None:
                return _write_found(task, chunk, fd, found, fetched=0, seeded=True)
    with repo.chunk_read(chunk.digest) as (data, fetched):
        return _write_found(task, chunk, fd, data, fetched=fetched, seeded=False)


def _write_found(task: WriteTask, chunk: FetchChunk, fd: int, data: bytes, *, fetched: int,
                 seeded: bool) -> _ChunkWritten:
    if len(data) != chunk.length:
        raise _wrong_length(task, chunk, len(data))
    original = None
    if chunk.dirty_byte:
        data, original = with_dirty_byte(data)
    return _ChunkWritten(fetched, _write_runs(fd, chunk, data), seeded, original)


def _write_runs(fd: int, chunk: FetchChunk, data: bytes) -> int:
    written = previous_end = 0
    for run_start, run_end in nonzero_runs(data):
        if chunk.had_data and run_start > previous_end:
            punch_hole(fd, chunk.start + previous_end, run_start - previous_end)
        pwrite_all(fd, memoryview(data)[run_start:run_end], chunk.start + run_start)
        written += run_end - run_start
        previous_end = run_end
    if chunk.had_data and previous_end < len(data):
        punch_hole(fd, chunk.start + previous_end, len(data) - previous_end)
    return written


def _wrong_length(task: WriteTask, chunk: FetchChunk, got: int) -> PitreosError:
    return IntegrityError(
        f"blob {chunk.digest.sha1} holds {got} bytes, but {task.entry_path} chunk "
        f"{chunk.index} of backup {task.backup} is {chunk.length} bytes: the manifest "
        "disagrees with its blobs; nothing of that chunk was written")


# Running them -----------------------------------------------------------------------------


Task = HashTask | StoreTask | CheckTask | WriteTask
Result = HashResult | StoreResult | CheckResult | WriteResult


def perform(repo: Repository, task: Task) -> Result:
    """Run one task (the function that :mod:`pitreos.parallel` maps)."""
    if isinstance(task, HashTask):
        return hash_chunks(repo, task)
    if isinstance(task, StoreTask):
        return store_chunks(repo, task)
    if isinstance(task, CheckTask):
        return check_chunks(task)
    return write_chunks(repo, task)


def task_bytes(total: int, workers: int) -> int:
    """The size of tasks for ``total`` bytes of work: up to ``TASK_BYTES`` (fewer, larger
    tasks: less work for the coordinator), but four tasks a worker at least, so that a
    small job keeps every worker busy (64 MiB appended to a log, on 2 workers: 8 tasks,
    not one)."""
    return min(TASK_BYTES, total // (4 * max(1, workers)))


def transfer_bytes(repo: Repository, local: int) -> int:
    """The size of tasks that store or fetch blobs: ``local`` on a local store, one
    chunk on an object store (each request a task of its own, so that as many are in
    flight as the link wants)."""
    return 1 if repo.properties.remote else local


def batches(indexes: Sequence[int], chunk_size: int, task_bytes: int) -> Iterator[list[int]]:
    """``indexes`` in runs of at most ``task_bytes`` of chunks (one chunk at least)."""
    per_task = max(1, task_bytes // chunk_size)
    for at in range(0, len(indexes), per_task):
        yield list(indexes[at:at + per_task])
