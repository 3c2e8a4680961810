"""A backup as a stream: one file's bytes (``dump``), or the whole backup as a tar
stream (``export``).

The tar stream is POSIX pax. A file with holes is written in GNU's sparse format 1.0
(the one GNU tar and libarchive extract sparse): a pax header names the real file and
its size, and the member's data is a sparse map (decimal lines: the count of data
regions, then each region's offset and length, padded to a block) followed by the data
regions only. A 4 GiB state file holding 100 MiB of data is a stream of about 100 MiB.
Headers come from the standard library's ``tarfile``; only the sparse map and the
member data are written here. Every blob's two hashes are checked before its bytes go
out, as in a restore.
"""

import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from . import manifest as mf
from .errors import PitreosError
from .parallel import imap_ordered
from .repository import Repository

BLOCK = tarfile.BLOCKSIZE


@dataclass
class ExportStats:
    files: int = 0
    entries: int = 0
    data_bytes: int = 0  # file bytes in data chunks, fetched and checked
    bytes_written: int = 0  # the stream's length


def regions(entry: mf.Entry) -> list[tuple[int, int]]:
    """The (offset, length) runs of ``entry`` held in data chunks, adjacent ones merged."""
    out: list[tuple[int, int]] = []
    for chunk, length in entry.spans():
        if chunk.digest is None:
            continue
        if out and out[-1][0] + out[-1][1] == chunk.start:
            out[-1] = (out[-1][0], out[-1][1] + length)
        else:
            out.append((chunk.start, length))
    return out


def file_pieces(repo: Repository, entry: mf.Entry, workers: int, *,
                holes: bool) -> Iterator[bytes]:
    """The bytes of ``entry`` in order, each blob fetched and checked in parallel;
    ``holes`` gives zeros for the empty chunks, otherwise they are skipped."""
    spans = entry.spans()

    def piece(index: int) -> bytes:
        chunk, length = spans[index]
        if chunk.digest is None:
            return bytes(length)
        data, _ = repo.read_chunk(chunk.digest)
        if len(data) != length:
            raise PitreosError(f"blob {chunk.digest.sha1} holds {len(data)} bytes, chunk "
                               f"{index} of {entry.path} is {length}")
        return data

    wanted = [i for i, c in enumerate(entry.chunks) if holes or c.digest is not None]
    yield from imap_ordered(piece, wanted, workers=workers)


def _info(entry: mf.Entry, created: int) -> tarfile.TarInfo:
    # a name that is not UTF-8 is held as surrogate escapes: tarfile writes its original
    # bytes back (with the pax header hdrcharset=BINARY)
    info = tarfile.TarInfo(entry.path)
    info.mode = entry.mode & 0o7777
    info.mtime = entry.mtime_ns // 1_000_000_000 if entry.mtime_ns else created
    info.uid = info.gid = 0
    if entry.type == "dir":
        info.type = tarfile.DIRTYPE
    elif entry.type == "symlink":
        info.type = tarfile.SYMTYPE
        info.linkname = entry.target or ""
    else:
        info.type = tarfile.REGTYPE
        info.size = entry.size
    return info


def export_tar(manifest: mf.Manifest, repo: Repository, out: BinaryIO,
               workers: int) -> ExportStats:
    """Write ``manifest`` to ``out`` as a pax tar stream (see the module's notes)."""
    stats = ExportStats()
    created = int(manifest.created.timestamp())

    def write(data: bytes) -> None:
        out.write(data)
        stats.bytes_written += len(data)

    for entry in manifest.entries:
        info = _info(entry, created)
        stats.entries += 1
        if entry.type != "file":
            write(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
            continue
        stats.files += 1
        data_regions = regions(entry)
        data_size = sum(length for _, length in data_regions)
        sparse = data_size < entry.size
        prefix = b""
        if sparse:
            spans = [*data_regions, (entry.size, 0)] if (
                not data_regions or sum(data_regions[-1]) < entry.size) else data_regions
            lines = [str(len(spans))] + [f"{v}" for span in spans for v in span]
            prefix = ("\n".join(lines) + "\n").encode()
            prefix += bytes(-len(prefix) % BLOCK)
            head, tail = os.path.split(entry.path)
            info.name = os.path.join(head, "GNUSparseFile.0", tail)
            info.size = len(prefix) + data_size
            info.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0",
                                "GNU.sparse.name": entry.path,
                                "GNU.sparse.realsize": str(entry.size)}
        write(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
        write(prefix)
        for piece in file_pieces(repo, entry, workers, holes=not sparse):
            stats.data_bytes += len(piece)
            write(piece)
        write(bytes(-info.size % BLOCK))
    write(bytes(2 * BLOCK))  # the end-of-archive marker
    out.flush()
    return stats
