"""Seeds: local directories that a restore takes chunks from before fetching them, as
desync's seeds do. A new node beside an old one (or an older copy on the same host)
then downloads only what differs.

A seed is looked up by the chunk's own path and offset (a node directory has the same
layout everywhere, and its files change in place or grow at the end), and a chunk found
there is used only when its blake3 matches the backup's, as for a fetched blob.
"""

import os
from dataclasses import dataclass
from pathlib import Path

from ..hashing import ChunkDigest, matches


@dataclass(frozen=True)
class Seeds:
    directories: tuple[Path, ...] = ()

    def find(self, path: str, start: int, length: int, wanted: ChunkDigest) -> bytes | None:
        """The chunk of file ``path`` at ``start``, from the first seed that holds it
        with the backup's blake3; None when none does."""
        for directory in self.directories:
            data = _read(directory / path, start, length)
            if data is not None and matches(data, wanted):
                return data
        return None


def _read(path: Path, start: int, length: int) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None  # absent, a symlink, unreadable: not a seed for this chunk
    try:
        data = os.pread(fd, length, start)
    except OSError:
        return None
    finally:
        os.close(fd)
    return data if len(data) == length else None
