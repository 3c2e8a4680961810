"""The two hashes every chunk carries: sha1 names the blob, blake3 guards against collisions;
and the record of a blob just stored under them.

Both hash functions release the GIL on large buffers, so worker threads hash in parallel.
"""

import hashlib
from dataclasses import dataclass
from typing import NamedTuple

import blake3


class ChunkDigest(NamedTuple):
    """The identity of a chunk's bytes: sha1 (the blob's name) and blake3 (its check).

    A NamedTuple, not a dataclass: a catalog sync builds a million of them, and tuples
    are built several times faster."""

    sha1: str
    blake3: str


@dataclass(frozen=True, slots=True)
class NewBlob:
    """A blob this machine just stored: its chunk's hashes, the chunk's size and the
    blob's. The catalog records it with no references until a manifest does. Defined
    here, beside the digest, so that worker processes need not import the catalog
    (sqlite3, platformdirs: ~20 ms of each pool's start)."""

    sha1: str
    blake3: str
    size: int
    stored_size: int


def sha1_hex(data: bytes | bytearray | memoryview) -> str:
    return hashlib.sha1(data, usedforsecurity=False).hexdigest()


def blake3_hex(data: bytes | bytearray | memoryview) -> str:
    """blake3, single-threaded: callers parallelise across chunks."""
    return blake3.blake3(data).hexdigest()


def digest(data: bytes | bytearray | memoryview) -> ChunkDigest:
    """Hash ``data`` with sha1 and blake3."""
    return ChunkDigest(sha1=sha1_hex(data), blake3=blake3_hex(data))


def matches(data: bytes | bytearray | memoryview, expected: ChunkDigest) -> bool:
    """Whether ``data`` is the chunk whose hashes were recorded as ``expected``: equal
    blake3, equal bytes, and so the same sha1 too. What restores a chunk or keeps a
    local one judges it so; sha1 is its name, not its check (``BlobCodec.decode``)."""
    return blake3_hex(data) == expected.blake3
