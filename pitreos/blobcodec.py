"""Encoding of a chunk into a stored blob, and decoding with full verification.

A blob is a 37-byte header followed by the payload::

    b"PTB1" | codec (1 byte: 0 raw, 1 zstd) | blake3 of the plain chunk (32 bytes) | payload

The header makes every blob self-describing: a blob found in a bucket can be checked
without its manifest, and a backup that meets an existing blob it did not write can
compare blake3 hashes to detect a sha1 collision. Chunks that do not shrink under zstd
are stored raw.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from queue import SimpleQueue
from typing import TYPE_CHECKING

from .cores import usable_cores
from .errors import IntegrityError
from .hashing import ChunkDigest, blake3_hex, matches, sha1_hex

if TYPE_CHECKING:
    import zstandard

MAGIC = b"PTB1"
CODEC_RAW = 0
CODEC_ZSTD = 1
HEADER_SIZE = len(MAGIC) + 1 + 32


@dataclass(frozen=True, slots=True)
class BlobHeader:
    codec: int
    blake3: str


def parse_header(blob: bytes, name: str) -> BlobHeader:
    """Read a blob's header; ``name`` identifies the blob in errors."""
    if len(blob) < HEADER_SIZE or blob[: len(MAGIC)] != MAGIC:
        raise IntegrityError(f"blob {name} is truncated or not a pitreos blob")
    codec = blob[len(MAGIC)]
    if codec not in (CODEC_RAW, CODEC_ZSTD):
        raise IntegrityError(f"blob {name} has unknown codec {codec}")
    return BlobHeader(codec=codec, blake3=blob[len(MAGIC) + 1 : HEADER_SIZE].hex())


def _blob(compressed: bytes, data: bytes | bytearray | memoryview, chunk: ChunkDigest
          ) -> bytes:
    """The blob of ``data``, given its zstd form: raw when that does not shrink it."""
    if len(compressed) < len(data):
        codec, payload = CODEC_ZSTD, compressed
    else:
        codec, payload = CODEC_RAW, bytes(data)
    return b"".join((MAGIC, bytes((codec,)), bytes.fromhex(chunk.blake3), payload))


Encoder = Callable[[bytes | bytearray | memoryview, ChunkDigest], bytes]


def _new_compressor(level: int) -> zstandard.ZstdCompressor:
    import zstandard

    return zstandard.ZstdCompressor(level=level)


def _zstd_error() -> type[Exception]:
    """zstandard's error class, for an ``except`` clause: Python evaluates the clause's
    class only when an exception reaches it, so a decoded chunk pays no import."""
    import zstandard

    return zstandard.ZstdError


class BlobCodec:
    """Compresses and decompresses blobs; safe to share between threads.

    zstandard's (de)compressor objects must not be used by two threads at once. Each
    thread keeps its own decompressor (~100 KiB) in a ``threading.local``; compressors
    are lent, at most one a core at once: each holds ~2.5 MiB at level 3, and a backup
    to a far store runs a thread a request in flight (63 threads held 160 MiB of them).
    For the same reason a decoded chunk is held only in a turn (:meth:`chunk_turn`), at
    most one a core at once.

    zstandard is imported when a (de)compressor is first made: every command opens a
    codec, and ``pitreos list`` decodes nothing. Its import took 0.9 ms there (7 runs,
    2 cores; click had imported ``platform``, which zstandard imports to tell PyPy
    apart) and 6 ms in a process without ``platform``, such as a worker process (whose
    server preloads it: :mod:`pitreos.parallel`).
    """

    def __init__(self, level: int = 3, max_chunk_size: int = 1 << 30) -> None:
        self.level = level
        self.max_chunk_size = max_chunk_size
        self._local = threading.local()
        # one slot a core: a compressor, or None until a turn first needs one
        self._compressors: SimpleQueue[zstandard.ZstdCompressor | None] = SimpleQueue()
        for _ in range(usable_cores()):
            self._compressors.put(None)
        self._chunk_turns = threading.BoundedSemaphore(usable_cores())

    def __getstate__(self) -> tuple[int, int]:
        # to a worker process: the settings, not this process's (de)compressors
        return self.level, self.max_chunk_size

    def __setstate__(self, state: tuple[int, int]) -> None:
        self.__init__(*state)  # type: ignore[misc]

    def _decompressor(self) -> zstandard.ZstdDecompressor:
        dec = getattr(self._local, "decompressor", None)
        if dec is None:
            import zstandard

            dec = zstandard.ZstdDecompressor()
            self._local.decompressor = dec
        return dec

    @contextmanager
    def encoder(self) -> Iterator[Encoder]:
        """A turn at compressing: blocks while every core's compressor is lent. A caller
        reads its chunk inside the turn, so that the chunks held at once are as few as
        the compressors."""
        compressor = self._compressors.get() or _new_compressor(self.level)
        try:
            yield lambda data, chunk: _blob(compressor.compress(data), data, chunk)
        finally:
            self._compressors.put(compressor)

    @contextmanager
    def chunk_turn(self) -> Iterator[None]:
        """A turn at holding a decoded chunk until it is written: blocks while every
        core has one. A restore from a far store runs a thread a request in flight (up
        to 128): without turns, each could hold its chunk (the chunk size) from decoding
        to writing, 128 of them when writes fall behind the link. Through the bench's
        latency proxy, where writes keep up, peak RSS did not move beyond its noise:
        glibc's heap, not the chunks, is most of it (docs/performance.md)."""
        with self._chunk_turns:
            yield

    def encode(self, data: bytes | bytearray | memoryview, chunk: ChunkDigest) -> bytes:
        """Build the blob for ``data``, whose digest the caller computed."""
        with self.encoder() as encode:
            return encode(data, chunk)

    def decode(self, blob: bytes, expected: ChunkDigest, *, check_name: bool = False
               ) -> bytes:
        """Return the chunk a blob holds, after checking its header and the chunk's
        blake3 against ``expected``; with ``check_name``, its sha1 too.

        Equal blake3 means equal bytes, and so the same sha1 as well, whenever
        ``expected`` was recorded by hashing the chunk (a manifest, the catalog, a
        backup's own hash): a restore, and a backup meeting a blob it did not write,
        check blake3 alone, as the in-place restore and the incremental backup already
        judge a chunk unchanged by its blake3. Skipping sha1 took a local restore of
        the bench's 2 GiB from 4.53 to 3.52 s, and the machine's CPU from 6.8 to 4.4 s,
        on 2 cores (4 alternating runs each; equal times when the disk was the bound).
        What vouches for a blob under its name (``verify --deep``, ``copy``, a cache
        that knows only the name) checks the name too: a cache has no record but the
        name, and verify and copy check the record as well as the blob."""
        header = parse_header(blob, expected.sha1)
        if header.blake3 != expected.blake3:
            raise IntegrityError(
                f"blob {expected.sha1} has blake3 {header.blake3}, expected {expected.blake3}"
            )
        payload = memoryview(blob)[HEADER_SIZE:]
        if header.codec == CODEC_ZSTD:
            try:
                data = self._decompressor().decompress(
                    payload, max_output_size=self.max_chunk_size
                )
            except _zstd_error() as exc:  # evaluated only when an error propagates
                raise IntegrityError(f"blob {expected.sha1} does not decompress: {exc}") from exc
        else:
            data = bytes(payload)
        if not matches(data, expected):  # blake3 again only to name what was found
            raise IntegrityError(f"blob {expected.sha1} holds data with blake3 "
                                 f"{blake3_hex(data)}, expected {expected.blake3}")
        if check_name and (named := sha1_hex(data)) != expected.sha1:
            raise IntegrityError(f"blob {expected.sha1} holds data with sha1 {named}: its "
                                 "name is not its data's")
        return data
