"""Sparse-file I/O: where a file holds data, punching holes, and spotting zero blocks.

Data extents come from ``lseek(SEEK_DATA/SEEK_HOLE)``; on a file system that cannot
tell, the whole file counts as data. Holes are punched with
``fallocate(PUNCH_HOLE | KEEP_SIZE)``; where that is unsupported, zeros are written so
the content is right even if the space is not given back.
"""

import bisect
import ctypes
import errno
import os
from collections.abc import Iterator, Sequence

from . import libc

# The granularity at which restore keeps zero blocks out of the file: the page size
# that nodeos (mmap) and most file systems use.
BLOCK_SIZE = 4096
_ZERO_BLOCK = bytes(BLOCK_SIZE)

# Holes shorter than this between two data extents are read as data: a file that
# alternates data and hole page by page would otherwise cost one extent (and one read)
# per page, and hold a list as long as its pages.
MERGE_GAP = 64 << 10
# A chunk that meets more extents than this is read whole rather than piece by piece.
_MAX_PIECES = 16

_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02


def data_extents(fd: int, size: int, start: int = 0) -> list[tuple[int, int]]:
    """The ranges ``(a, b)`` of ``fd`` between offsets ``start`` and ``size`` that hold
    data, in order. Extents less than :data:`MERGE_GAP` apart come back as one."""
    extents: list[tuple[int, int]] = []
    pos = start
    try:
        while pos < size:
            try:
                found = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # no data after pos
                    break
                raise
            if found >= size:
                break
            end = min(os.lseek(fd, found, os.SEEK_HOLE), size)
            if extents and found - extents[-1][1] < MERGE_GAP:
                extents[-1] = (extents[-1][0], end)
            else:
                extents.append((found, end))
            pos = end
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
            return [(start, size)] if size > start else []
        raise
    return extents


def _extent_end(extent: tuple[int, int]) -> int:
    return extent[1]


def extents_within(extents: Sequence[tuple[int, int]], start: int, end: int
                   ) -> list[tuple[int, int]]:
    """The parts of ``extents`` (sorted, non-overlapping) inside ``[start, end)``."""
    pieces = []
    index = bisect.bisect_right(extents, start, key=_extent_end)
    while index < len(extents) and extents[index][0] < end:  # no slice: O(pieces)
        ext_start, ext_end = extents[index]
        pieces.append((max(ext_start, start), min(ext_end, end)))
        index += 1
    return pieces


def chunks_with_data(extents: Sequence[tuple[int, int]], size: int, step: int) -> set[int]:
    """The indexes of the ``step``-sized chunks of a ``size``-byte file that meet an
    extent. One pass over the extents: a bisection per chunk held the GIL for ~8 ms of
    the bench's 0.9 s in-place restore (py-spy ``--gil``)."""
    indexes: set[int] = set()
    for start, end in extents:
        end = min(end, size)
        if start < end:
            indexes.update(range(start // step, -(-end // step)))
    return indexes


def read_range(fd: int, start: int, length: int, extents: Sequence[tuple[int, int]]
               ) -> bytes | bytearray:
    """Read ``[start, start + length)`` of ``fd``, whose data extents are ``extents``.

    Only the parts inside data extents are read: holes come back as zeros without a
    read, so they cost neither a copy nor page-cache pages (reading a hole makes the
    kernel allocate and zero one, evicting data the node may need).
    """
    data, _ = _read_pieces(fd, start, length, extents)
    return data


def read_nonzero(fd: int, start: int, length: int, extents: Sequence[tuple[int, int]]
                 ) -> bytes | bytearray | None:
    """:func:`read_range`, or None when every byte is zero (only the parts read are
    compared: holes are zeros)."""
    data, pieces = _read_pieces(fd, start, length, extents)
    if all(is_zero(data, a - start, b - start) for a, b in pieces):
        return None
    return data


def _read_pieces(fd: int, start: int, length: int, extents: Sequence[tuple[int, int]]
                 ) -> tuple[bytes | bytearray, list[tuple[int, int]]]:
    """The range's bytes, and the ``[start, end)`` pieces of it that were read."""
    end = start + length
    pieces = extents_within(extents, start, end)
    if pieces == [(start, end)] or len(pieces) > _MAX_PIECES:
        return pread_exact(fd, length, start), [(start, end)]
    buf = bytearray(length)
    view = memoryview(buf)
    for piece_start, piece_end in pieces:
        _pread_into(fd, view[piece_start - start:piece_end - start], piece_start)
    return buf, pieces


def _pread_into(fd: int, view: memoryview, offset: int) -> None:
    while view:
        n = os.preadv(fd, [view], offset)
        if n == 0:
            raise EOFError(f"file ended at offset {offset}, expected {offset + len(view)}")
        view = view[n:]
        offset += n


def is_zero(buf: bytes | bytearray, start: int = 0, end: int | None = None) -> bool:
    """Whether every byte of ``buf[start:end]`` is zero (memcmp, not a Python loop over
    bytes). Most data fails on its first block, before the full comparison copies."""
    end = len(buf) if end is None else end
    head = buf[start:min(end, start + BLOCK_SIZE)]
    if head != _ZERO_BLOCK[:len(head)]:
        return False
    return bool(buf[start:end] == bytes(end - start))


def nonzero_runs(buf: bytes) -> Iterator[tuple[int, int]]:
    """Yield ``[start, end)`` runs of ``buf`` made of blocks that are not all zero.

    Blocks are ``BLOCK_SIZE`` long and aligned (the last may be short). Restore writes
    only these runs, so zero blocks inside a chunk stay holes. ``bytes.find`` (C) skips
    stretches with no zero block: an aligned zero block can only start at or after the
    first unaligned run of ``BLOCK_SIZE`` zero bytes it finds. Blocks are compared as
    bytes slices (memcmp); memoryview comparisons go byte by byte.
    """
    size = len(buf)
    run_start = pos = 0
    while pos < size:
        found = buf.find(_ZERO_BLOCK, pos)
        if found < 0:
            break
        block = -(-found // BLOCK_SIZE) * BLOCK_SIZE  # the first aligned candidate
        if block + BLOCK_SIZE > size:
            break
        if buf[block:block + BLOCK_SIZE] != _ZERO_BLOCK:
            pos = block + 1
            continue
        end = block + BLOCK_SIZE
        while end + BLOCK_SIZE <= size and buf[end:end + BLOCK_SIZE] == _ZERO_BLOCK:
            end += BLOCK_SIZE
        if block > run_start:
            yield run_start, block
        run_start = pos = end
    tail = size - size % BLOCK_SIZE
    if run_start <= tail < size and buf[tail:] == _ZERO_BLOCK[: size - tail]:
        size = tail  # a short, all-zero last block stays a hole too
    if run_start < size:
        yield run_start, size


def punch_hole(fd: int, offset: int, length: int) -> None:
    """Deallocate ``[offset, offset + length)``; reads there return zeros afterwards."""
    if length <= 0:
        return
    argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
    fallocate = libc.function("fallocate64", *argtypes) or libc.function("fallocate", *argtypes)
    if fallocate is not None:
        try:
            fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, offset, length)
            return
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise
    write_zeros(fd, offset, length)


def write_zeros(fd: int, offset: int, length: int) -> None:
    """Fallback for file systems without hole punching: overwrite with zeros."""
    step = 1 << 20
    zeros = bytes(min(step, length))
    end = offset + length
    while offset < end:
        n = min(step, end - offset)
        pwrite_all(fd, memoryview(zeros)[:n], offset)
        offset += n


def pread_exact(fd: int, length: int, offset: int) -> bytes:
    """Read exactly ``length`` bytes at ``offset``; short reads are retried, EOF is an error."""
    data = os.pread(fd, length, offset)
    if len(data) == length:
        return data
    parts = [data]
    got = len(data)
    while got < length:
        more = os.pread(fd, length - got, offset + got)
        if not more:
            raise EOFError(f"file ended at offset {offset + got}, expected {offset + length}")
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    """Write all of ``data`` at ``offset`` (``os.pwrite`` may write less than asked)."""
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


def allocated_bytes(path: str | os.PathLike[str]) -> int:
    """Disk space a file really uses (what ``du`` reports), for sparse-ness checks."""
    return os.stat(path).st_blocks * 512
