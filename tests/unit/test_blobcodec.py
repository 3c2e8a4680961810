"""Blobs: round trip, raw when zstd does not help, every kind of damage caught, and no
more compressors at once than cores."""

import os
import threading
import time

import pytest

from pitreos.blobcodec import CODEC_RAW, CODEC_ZSTD, HEADER_SIZE, BlobCodec, parse_header
from pitreos.cores import usable_cores
from pitreos.errors import IntegrityError
from pitreos.hashing import ChunkDigest, digest

from .occupancy import Occupancy


@pytest.mark.parametrize(("data", "codec"), [(b"a" * 100_000, CODEC_ZSTD),
                                             (os.urandom(100_000), CODEC_RAW)])
def test_round_trip(data: bytes, codec: int) -> None:
    d = digest(data)
    blob = BlobCodec().encode(data, d)
    assert parse_header(blob, d.sha1).codec == codec
    assert BlobCodec().decode(blob, d) == data


def test_damage_is_caught() -> None:
    data = b"some chunk " * 5000
    d = digest(data)
    codec = BlobCodec()
    blob = codec.encode(data, d)
    flipped = bytearray(blob)
    flipped[HEADER_SIZE + 10] ^= 1
    for bad in (blob[:HEADER_SIZE - 1], bytes(flipped), b"XXXX" + blob[4:]):
        with pytest.raises(IntegrityError):
            codec.decode(bad, d)
    with pytest.raises(IntegrityError, match="expected"):  # same sha1, another blake3
        codec.decode(blob, ChunkDigest(d.sha1, "0" * 64))


def test_the_chunk_is_proven_by_blake3_and_the_name_checked_when_asked() -> None:
    """A restore writes what matches the recorded blake3 without deriving the name
    again (equal blake3, equal bytes); what vouches for a blob under its name finds a
    name that is not its chunk's sha1."""
    data = b"a chunk " * 5000
    d = digest(data)
    codec = BlobCodec()
    blob = codec.encode(data, d)
    misnamed = ChunkDigest("0" * 40, d.blake3)
    assert codec.decode(blob, misnamed) == data
    assert codec.decode(blob, d, check_name=True) == data
    with pytest.raises(IntegrityError, match=f"blob {'0' * 40} holds data with sha1 {d.sha1}"):
        codec.decode(blob, misnamed, check_name=True)
    other = codec.encode(b"another chunk", d)  # d's header, another chunk's data
    for check_name in (False, True):  # the data's blake3 is checked either way
        with pytest.raises(IntegrityError, match=f"holds data with blake3 .*, expected {d.blake3}"):
            codec.decode(other, d, check_name=check_name)


def test_no_more_compressors_lent_at_once_than_cores() -> None:
    """A thread a request in flight must not mean a 2.5 MiB compressor a thread: turns
    beyond the cores wait, and every thread's blob still decodes."""
    codec = BlobCodec()
    cores = usable_cores()
    encoding = Occupancy()
    blobs: list[tuple[bytes, bytes]] = []

    def work(i: int) -> None:
        data = bytes([i % 256]) * 50_000
        with codec.encoder() as encode, encoding:
            time.sleep(0.02)
            blob = encode(data, digest(data))
        blobs.append((data, blob))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(cores + 6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert encoding.most == cores
    assert all(codec.decode(blob, digest(data)) == data for data, blob in blobs)
    assert len(blobs) == cores + 6


def test_a_zstd_payload_that_does_not_decompress_is_named() -> None:
    """Its header's blake3 is right: only zstandard's own error tells what is wrong,
    and it must come out as the blob's integrity error, not zstandard's."""
    data = b"a" * 100_000
    d = digest(data)
    blob = BlobCodec().encode(data, d)
    damaged = blob[:HEADER_SIZE] + b"not a zstd frame" + blob[HEADER_SIZE + 16:]
    with pytest.raises(IntegrityError, match=f"blob {d.sha1} does not decompress"):
        BlobCodec().decode(damaged, d)
