#!/usr/bin/env python3
"""Generate a node-like data directory for demos, tests and benchmarks.

    python3 tools/gen_data.py SCALE DIR [--seed N]

SCALE is tiny (a few MiB), small (4 GiB sparse state, ~1 GiB of it data, 1 GiB log) or
large (32 GiB sparse state holding 4 GiB of data, 4 GiB log). The directory holds:

- state/shared_memory.bin: sparse, data in runs of 4 KiB to 1 MiB, with a chainbase-like
  1024-byte header (id CHAINB01, dirty flag clear);
- blocks/blocks.log: version-3 header then entries (a compressible block record followed
  by the uint64 offset of the entry's start), and blocks/blocks.index (one uint64 offset
  per block).

Also importable: ``change_pages`` and ``append_blocks`` mutate a generated directory
the way a running node would.
"""

import argparse
import os
import random
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

PAGE = 4096


@dataclass(frozen=True)
class Scale:
    state_size: int
    state_data: int
    log_size: int


SCALES = {
    "tiny": Scale(64 << 20, 16 << 20, 8 << 20),
    "small": Scale(4 << 30, 1 << 30, 1 << 30),
    "large": Scale(32 << 30, 4 << 30, 4 << 30),
}
CHAIN_ID = bytes.fromhex("aca376f206b8fc25a6ed44dbdc66547c36c6c33e3a119ffbeaef943642f0e906")
# a packed genesis_state (leap genesis_state.hpp: initial_timestamp, initial_key,
# initial_configuration): 2018-06-01T12:00:00 in microseconds, a K1 key (variant index
# 0, 33 bytes), chain_config_v0 (uint64, 14 uint32, 2 uint16); its sha256 is the chain id
GENESIS = (struct.pack("<q", 1_527_854_400_000_000) + b"\x00" + b"\x02" + bytes(range(32))
           + struct.pack("<Q14I2H", 1024 * 1024, 1000, 512 * 1024, 12, 500, 1, 100,
                         200_000, 1000, 150_000, 100, 3600, 600, 45 * 24 * 3600, 4096, 4,
                         6))


def chainbase_header(dirty: bool = False) -> bytes:
    """The first 1024 bytes of a chainbase file (packed): uint64 id, dirty flag, then
    the environment: debug, OS, architecture, uint32 boost version, 512 reserved bytes,
    256 bytes of compiler name."""
    env = b"".join((
        bytes([0, 0, 0]),  # not debug, linux, x86_64
        struct.pack("<I", 108_300),  # boost 1.83.0
        bytes(512),
        b"GCC 12 libstdc++ 12".ljust(256, b"\0"),
    ))
    return (b"CHAINB01" + bytes([1 if dirty else 0]) + env).ljust(1024, b"\0")


def write_state(path: Path, scale: Scale, rng: random.Random) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.truncate(scale.state_size)
        f.write(chainbase_header())
        written = 1024
        pages = scale.state_size // PAGE
        while written < scale.state_data:
            run = rng.randint(1, 256) * PAGE  # 4 KiB to 1 MiB
            start = rng.randrange(1, pages) * PAGE
            run = min(run, scale.state_size - start)
            f.seek(start)
            f.write(rng.randbytes(run))
            written += run


def block_record(rng: random.Random, number: int) -> bytes:
    """A stand-in for a packed signed block: a real block header (timestamp slot,
    producer, confirmed, previous id holding the previous number big-endian) followed
    by compressible actions."""
    slot = 800_000_000 + number  # half-second slots since 2000-01-01
    previous = struct.pack(">I", number - 1) + rng.randbytes(28)
    header = struct.pack("<IQH", slot, 0x5530EA033482A600, 0) + previous
    actions = b"".join(
        struct.pack("<QQ", number, rng.randrange(1 << 20)) + b"transfer eosio.token " * 4
        for _ in range(rng.randint(4, 40))
    )
    return header + rng.randbytes(64) + actions


def block_log_preamble(first_block: int, chain_id: bytes = CHAIN_ID) -> bytes:
    """A version-3 block log preamble (spring libraries/chain/block_log.cpp): version,
    first block, then the chain id for a log that starts after block 1, or the packed
    genesis state for one that starts at 1, then the totem."""
    context = chain_id if first_block > 1 else GENESIS
    return struct.pack("<II", 3, first_block) + context + b"\xff" * 8


def write_blocks(directory: Path, size: int, rng: random.Random, first_block: int = 1,
                 chain_id: bytes = CHAIN_ID) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    header = block_log_preamble(first_block, chain_id)
    with open(directory / "blocks.log", "wb") as log, \
            open(directory / "blocks.index", "wb") as index:
        log.write(header)
        _append(log, index, size - len(header), first_block, rng)


def _append(log: BinaryIO, index: BinaryIO, nbytes: int, number: int,
            rng: random.Random) -> int:
    """Write blocks from ``number`` on until ``nbytes`` were added; returns the next number."""
    pos = log.tell()
    end = pos + nbytes
    while pos < end:
        entry = block_record(rng, number)
        log.write(entry + struct.pack("<Q", pos))
        index.write(struct.pack("<Q", pos))
        pos += len(entry) + 8
        number += 1
    return number


def append_blocks(directory: Path, nbytes: int, seed: int = 1) -> None:
    """Grow blocks.log (and its index) by about ``nbytes``, as a syncing node does."""
    index_path = directory / "blocks.index"
    first = struct.unpack("<I", (directory / "blocks.log").read_bytes()[4:8])[0]
    number = first + index_path.stat().st_size // 8
    with open(directory / "blocks.log", "ab") as log, open(index_path, "ab") as index:
        _append(log, index, nbytes, number, random.Random(seed))


def write_spring_node(root: Path, rng: random.Random, *, first_block: int = 1001,
                      chain_id: bytes = CHAIN_ID, stride: int = 50,
                      snapshots: tuple[int, ...] = (1040, 1090)) -> None:
    """A Spring 1.x layout (docs/nodeos.md): a clean state, a block log that starts at
    ``first_block`` (its header holds the chain id), finished stride pieces
    blocks/retained/blocks-<first>-<last>.log/.index and their state-history twins
    (the same entry shape; the real ones begin with a 'ship' header), portable snapshots
    named by block id (contents are stand-ins), state/chain_head.dat, and a sparse
    state/code_cache.bin."""
    write_state(root / "state/shared_memory.bin", Scale(8 << 20, 1 << 20, 0), rng)
    for start in range(first_block - 2 * stride, first_block, stride):
        end = start + stride - 1
        for directory, name in ((root / "blocks/retained", f"blocks-{start}-{end}"),
                                (root / "state-history/retained",
                                 f"trace_history-{start}-{end}")):
            directory.mkdir(parents=True, exist_ok=True)
            with open(directory / f"{name}.log", "wb") as log, \
                    open(directory / f"{name}.index", "wb") as index:
                log.write(block_log_preamble(start, chain_id))
                for number in range(start, end + 1):
                    pos = log.tell()
                    log.write(block_record(rng, number) + struct.pack("<Q", pos))
                    index.write(struct.pack("<Q", pos))
    write_blocks(root / "blocks", 256 << 10, rng, first_block, chain_id)
    (root / "snapshots").mkdir(parents=True, exist_ok=True)
    for block in snapshots:
        block_id = struct.pack(">I", block) + rng.randbytes(28)
        (root / f"snapshots/snapshot-{block_id.hex()}.bin").write_bytes(rng.randbytes(40_000))
    (root / "state/chain_head.dat").write_bytes(rng.randbytes(3000))
    with open(root / "state/code_cache.bin", "wb") as f:
        f.truncate(16 << 20)
        f.write(rng.randbytes(64 << 10))


def prune_blocks(directory: Path, keep: int) -> None:
    """Prune blocks.log as ``block-log-retain-blocks`` does: set the pruned flag, punch
    holes from after the preamble to the first kept block (in the index too), append
    the uint32 count of blocks kept."""
    from pitreos.sparse import punch_hole  # installed with the project

    log_path, index_path = directory / "blocks.log", directory / "blocks.index"
    blocks = index_path.stat().st_size // 8
    if keep >= blocks:
        return
    with open(index_path, "r+b") as index:
        index.seek((blocks - keep) * 8)
        first_kept = struct.unpack("<Q", index.read(8))[0]
    with open(log_path, "r+b") as log:
        version = struct.unpack("<I", log.read(4))[0]
        log.seek(0)
        log.write(struct.pack("<I", version | 1 << 31))
        preamble = len(block_log_preamble(struct.unpack("<I", log.read(4))[0]))
        log.seek(0, 2)
        log.write(struct.pack("<I", keep))
    for path, start, end in ((log_path, preamble, first_kept),
                             (index_path, 0, (blocks - keep) * 8)):
        fd = os.open(path, os.O_RDWR)
        try:
            punch_hole(fd, start, end - start)
        finally:
            os.close(fd)


def data_pages(path: Path) -> list[int]:
    """Numbers of the 4 KiB pages of ``path`` that hold data (from SEEK_DATA/SEEK_HOLE)."""
    size = path.stat().st_size
    fd = os.open(path, os.O_RDONLY)
    pages: list[int] = []
    try:
        pos = 0
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            pages.extend(range(start // PAGE, end // PAGE))
            pos = end
    finally:
        os.close(fd)
    return pages


def change_pages(path: Path, fraction: float, seed: int = 1, scattered: bool = False) -> int:
    """Overwrite ``fraction`` of the data pages (never the 1024-byte header's page).

    By default changes come in runs of 1 to 64 pages at random places, as chainbase
    updates objects that live together; ``scattered`` changes single pages uniformly at
    random, a worst case for any fixed chunking. Returns the pages changed."""
    rng = random.Random(seed)
    pages = [p for p in data_pages(path) if p != 0]
    target = max(1, int(len(pages) * fraction))
    chosen: set[int] = set()
    while len(chosen) < target:
        first = rng.randrange(len(pages))
        length = 1 if scattered else rng.randint(1, 64)
        chosen.update(pages[first:first + min(length, target - len(chosen))])
    fd = os.open(path, os.O_RDWR)
    try:
        for page in sorted(chosen):
            os.pwrite(fd, rng.randbytes(PAGE), page * PAGE)
    finally:
        os.close(fd)
    return len(chosen)


def generate(directory: Path, scale: Scale, seed: int = 0) -> None:
    rng = random.Random(seed)
    write_state(directory / "state/shared_memory.bin", scale, rng)
    write_blocks(directory / "blocks", scale.log_size, rng)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scale", choices=sorted(SCALES))
    parser.add_argument("directory", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    generate(args.directory, SCALES[args.scale], args.seed)
    print(args.directory)


if __name__ == "__main__":
    main()
