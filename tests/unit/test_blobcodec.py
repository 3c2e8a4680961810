"""Blobs: round trip, raw when zstd does not help, and every kind of damage caught."""

import os

import pytest

from pitreos.blobcodec import CODEC_RAW, CODEC_ZSTD, HEADER_SIZE, BlobCodec, parse_header
from pitreos.errors import IntegrityError
from pitreos.hashing import ChunkDigest, digest


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
