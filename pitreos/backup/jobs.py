"""A file being backed up, and reading one of its chunks: shared by the planner (which
probes an append-only file's prefix) and the pipeline."""

import os
from dataclasses import dataclass

from .. import manifest as mf
from ..catalog import FileRecord
from ..errors import PitreosError, SourceChanged
from ..hashing import ChunkDigest, blake3_hex, digest, sha1_hex
from ..sparse import read_nonzero
from ..walk import SourceEntry


@dataclass
class FileJob:
    """A file being read: its identity and the chunks resolved so far (None: to read)."""

    source: SourceEntry
    chunk_size: int
    chunks: list[mf.Chunk | None]
    extents: list[tuple[int, int]]  # where the file holds data: holes are not read
    previous: FileRecord | None = None  # the same file in the previous backup

    @property
    def path(self) -> str:
        return self.source.path

    def reads(self) -> list[int]:
        """The chunks still to read."""
        return [i for i, c in enumerate(self.chunks) if c is None]

    def length(self, index: int) -> int:
        return mf.chunk_length(self.source.st.st_size, self.chunk_size, index)

    def previous_digest(self, index: int) -> ChunkDigest | None:
        """The previous backup's digest of this chunk, if it covered the same bytes."""
        prev = self.previous
        if prev is None or index >= len(prev.chunks):
            return None
        if mf.chunk_length(prev.size, self.chunk_size, index) != self.length(index):
            return None  # the previous chunk covered fewer bytes
        return prev.chunks[index].digest


@dataclass(frozen=True, slots=True)
class ChunkRead:
    job: FileJob
    index: int
    data: bytes | bytearray | None  # None: all zeros
    digest: ChunkDigest | None
    unchanged: bool = False  # the same bytes as this chunk in the previous backup


def read_chunk(job: FileJob, index: int, fd: int) -> ChunkRead:
    """Read and hash one chunk (on a worker thread)."""
    start = index * job.chunk_size
    length = job.length(index)
    try:
        data = read_nonzero(fd, start, length, job.extents)
    except EOFError as exc:
        raise SourceChanged(f"{job.source.abspath} shrank while it was backed up "
                            f"({exc})") from exc
    except OSError as exc:
        raise PitreosError(f"cannot read {job.source.abspath} at offset {start}: "
                           f"{exc.strerror}") from exc
    if data is None:
        return ChunkRead(job, index, None, None)
    before = job.previous_digest(index)
    if before is not None:
        # blake3 first, ~3x cheaper than sha1: equal to the previous backup's blake3
        # for this chunk means the same bytes, whose sha1 is already known
        b3 = blake3_hex(data)
        if b3 == before.blake3:
            return ChunkRead(job, index, data, before, unchanged=True)
        return ChunkRead(job, index, data, ChunkDigest(sha1_hex(data), b3))
    return ChunkRead(job, index, data, digest(data))


def open_source(src: SourceEntry) -> int:
    try:
        return os.open(src.abspath, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise PitreosError(f"cannot read {src.abspath}: {exc.strerror}") from exc


def check_unchanged(job: FileJob, fd: int) -> None:
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
