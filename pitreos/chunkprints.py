"""Which chunks of a file's list repeat the list an earlier backup had for that file,
told without holding the earlier list: by prints (blake3) of the lists' prefixes.

A catalog sync inserts a node's backups oldest first, and an append-only log's list in
one backup is the previous backup's list plus what was appended (the previous last
chunk, if it was partial, grew). The catalog then copies the repeated prefix's rows
from the earlier file in one statement instead of looking up each chunk's blob
(:class:`~pitreos.catalog.CopiedChunks`, as an incremental backup does): three
manifests of a 1,000,000-chunk log synced in 34.3-34.5 s instead of 48.6-49.8 s, each
after the first in ~9 s instead of ~16 s (docs/performance.md, seventeenth pass). The
earlier list itself is gone by then: keeping it would hold ~350 MB more at that size,
which is why only prints are kept.

A print covers both hashes of every chunk, at a fixed width, so equal prints are
equal lists (up to a blake3 collision): a list whose sha1s repeat with another blake3
is never taken for the earlier one, and the catalog still finds the collision.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import blake3

from .catalog import CopiedChunks, FileRecord
from .manifest import Chunk, Manifest

_NO_DATA = "-" * (40 + 64)  # a chunk without data, as wide as a digest's two hashes
# chunks joined and hashed at once: 6.8 MB of text at most
_CHUNKS_A_STEP = 1 << 16


@dataclass(frozen=True, slots=True)
class ListPrint:
    """A file's chunk list in a backup the catalog holds, by its prints."""

    backup: str
    count: int  # chunks in the list
    whole: bytes  # the print of all of them
    but_last: bytes | None  # of all but the last (None for a list of one chunk)


# what a print is kept under: a backup's tag (its incremental backups build on the
# previous one of that tag), the file's path and the backup's chunk size
PrintKey = tuple[str, str, int]


def prefix_prints(chunks: Sequence[Chunk], lengths: Iterable[int]) -> dict[int, bytes]:
    """The print of ``chunks[:n]`` for each ``n`` of ``lengths`` (from 1 to
    ``len(chunks)``), in one pass over the list. ~0.6 µs a chunk on the 2-core VM
    (a 1,000,000-chunk list in 0.59 s), against ~9 µs a chunk that a catalog insert
    spends on a chunk it cannot copy."""
    hasher = blake3.blake3()
    prints: dict[int, bytes] = {}
    done = 0
    for length in sorted(set(lengths)):
        if not 0 < length <= len(chunks):
            raise ValueError(f"no prefix of {length} chunks in a list of {len(chunks)}")
        while done < length:
            end = min(length, done + _CHUNKS_A_STEP)
            hasher.update("".join([_NO_DATA if d is None else d[0] + d[1]
                                   for _, d in chunks[done:end]]).encode("ascii"))
            done = end
        prints[length] = hasher.copy().digest()
    return prints


def _repeated(earlier: ListPrint, of_prefix: Mapping[int, bytes]) -> int:
    """How many first chunks of a list repeat ``earlier``'s: all of them, all but its
    last (an append-only file's partial last chunk grew), or none."""
    if of_prefix.get(earlier.count) == earlier.whole:
        return earlier.count
    if earlier.but_last is not None and of_prefix.get(earlier.count - 1) == earlier.but_last:
        return earlier.count - 1
    return 0


def _ends(count: int) -> set[int]:
    """The lengths a list of ``count`` chunks is printed at: whole, and but its last."""
    return {n for n in (count - 1, count) if n > 0}


def _print_of(backup: str, chunks: Sequence[Chunk], prints: Mapping[int, bytes]) -> ListPrint:
    count = len(chunks)
    return ListPrint(backup, count, prints[count], prints.get(count - 1))


class RepeatedChunks:
    """The prints of the lists of the backups inserted so far, the latest for each
    key, and what a new backup's lists repeat of them."""

    def __init__(self) -> None:
        self._prints: dict[PrintKey, ListPrint] = {}

    def compare(self, manifest: Manifest, *, keep: bool
                ) -> tuple[dict[str, CopiedChunks], dict[PrintKey, ListPrint]]:
        """For each regular file of ``manifest``: the chunks whose rows can be copied
        from the earlier backup's file (by path), and, with ``keep`` (a later backup
        may build on this one), the prints to :meth:`remember` once it is inserted."""
        copied: dict[str, CopiedChunks] = {}
        prints: dict[PrintKey, ListPrint] = {}
        for entry in manifest.files():
            count = len(entry.chunks)
            key = (manifest.tag, entry.path, manifest.chunk_size)
            earlier = self._prints.get(key)
            lengths = (_ends(count) if keep else set()) | \
                (_ends(earlier.count) if earlier is not None else set())
            lengths = {n for n in lengths if n <= count}
            if not lengths:
                continue
            of_prefix = prefix_prints(entry.chunks, lengths)
            if earlier is not None and (repeated := _repeated(earlier, of_prefix)):
                copied[entry.path] = CopiedChunks(earlier.backup, entry.path, range(repeated))
            if keep:
                prints[key] = _print_of(manifest.name, entry.chunks, of_prefix)
        return copied, prints

    def remember(self, prints: Mapping[PrintKey, ListPrint]) -> None:
        """Keep the prints of a backup now in the catalog: later ones compare with it."""
        self._prints.update(prints)

    def remember_files(self, tag: str, files: Mapping[str, FileRecord]) -> None:
        """Print and keep the lists of a backup of ``tag`` that the catalog held before
        (:meth:`~pitreos.catalog.Catalog.files_of`): the first new backup of the tag
        compares with it."""
        for path, record in files.items():
            if record.chunks:
                of_prefix = prefix_prints(record.chunks, _ends(len(record.chunks)))
                self._prints[(tag, path, record.chunk_size)] = _print_of(
                    record.backup, record.chunks, of_prefix)
