"""A file being backed up: shared by the planner (which decides what to read) and the
pipeline (which reads it)."""

import os
from dataclasses import dataclass

from .. import manifest as mf
from ..catalog import FileRecord
from ..chunktasks import SourceFile
from ..errors import PitreosError, SourceChanged
from ..hashing import ChunkDigest, matches
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

    def source_file(self) -> SourceFile:
        """What a worker needs to read it (:mod:`pitreos.chunktasks`)."""
        st = self.source.st
        return SourceFile(self.source.abspath, st.st_dev, st.st_ino, st.st_size,
                          self.chunk_size, tuple(self.extents))

    def holds(self, index: int, expected: ChunkDigest | None) -> bool:
        """Whether chunk ``index``, read here and now, is the one recorded as
        ``expected`` (None: all zeros), judged by its blake3 as every chunk kept is."""
        source = self.source_file().part([index])
        fd = source.open()
        try:
            data = source.read(fd, index)
        finally:
            os.close(fd)
        if data is None:  # all zeros
            return expected is None
        return expected is not None and matches(data, expected)

    def previous_digest(self, index: int) -> ChunkDigest | None:
        """The previous backup's digest of this chunk, if it covered the same bytes."""
        prev = self.previous
        if prev is None or index >= len(prev.chunks):
            return None
        if mf.chunk_length(prev.size, self.chunk_size, index) != self.length(index):
            return None  # the previous chunk covered fewer bytes
        return prev.chunks[index].digest


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
