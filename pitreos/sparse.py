"""Sparse-file I/O: where a file holds data, punching holes, and spotting zero blocks.

Data extents come from ``lseek(SEEK_DATA/SEEK_HOLE)``; on a file system that cannot
tell, the whole file counts as data. Holes are punched with
``fallocate(PUNCH_HOLE | KEEP_SIZE)``; where that is unsupported, zeros are written so
the content is right even if the space is not given back.
"""

import ctypes
import ctypes.util
import errno
import functools
import os
from collections.abc import Iterator

# The granularity at which restore keeps zero blocks out of the file: the page size
# that nodeos (mmap) and most file systems use.
BLOCK_SIZE = 4096
_ZERO_BLOCK = bytes(BLOCK_SIZE)

_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02


@functools.cache
def _fallocate() -> "ctypes._NamedFuncPointer | None":
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return None
    libc = ctypes.CDLL(libc_name, use_errno=True)
    func = getattr(libc, "fallocate64", None) or getattr(libc, "fallocate", None)
    if func is None:
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    func.restype = ctypes.c_int
    return func  # type: ignore[no-any-return]


def data_extents(fd: int, size: int) -> list[tuple[int, int]]:
    """Return the ``[start, end)`` ranges of ``fd`` that hold data, in order."""
    extents: list[tuple[int, int]] = []
    pos = 0
    try:
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # no data after pos
                    break
                raise
            if start >= size:
                break
            end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
            extents.append((start, end))
            pos = end
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
            return [(0, size)] if size else []
        raise
    return extents


def overlaps(extents: list[tuple[int, int]], start: int, end: int) -> bool:
    """Whether ``[start, end)`` meets any extent (``extents`` sorted, non-overlapping)."""
    lo, hi = 0, len(extents)
    while lo < hi:  # first extent whose end is past start
        mid = (lo + hi) // 2
        if extents[mid][1] <= start:
            lo = mid + 1
        else:
            hi = mid
    return lo < len(extents) and extents[lo][0] < end


def is_zero(buf: bytes | bytearray | memoryview) -> bool:
    """Whether every byte of ``buf`` is zero (a memcmp, not a Python loop over bytes)."""
    return bool(buf == bytes(len(buf)))


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
    func = _fallocate()
    if func is not None:
        if func(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, offset, length) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            raise OSError(err, os.strerror(err))
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
