"""Reading a node's files: the head block from blocks.log and its index, the chainbase
header's dirty flag and build environment, and the clear errors on bad files."""

import random
import struct
import sys
from pathlib import Path

import pytest

from pitreos import nodeos

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import gen_data


def test_head_block_of_a_generated_log(tmp_path: Path) -> None:
    gen_data.write_blocks(tmp_path / "blocks", 200_000, random.Random(1), first_block=500)
    head = nodeos.read_block_log_head(tmp_path / nodeos.BLOCKS_LOG,
                                      tmp_path / nodeos.BLOCKS_INDEX)
    blocks = (tmp_path / nodeos.BLOCKS_INDEX).stat().st_size // 8
    assert head.first_block == 500 and head.head_block == 500 + blocks - 1
    assert not head.pruned


def test_an_index_that_disagrees_is_refused(tmp_path: Path) -> None:
    gen_data.write_blocks(tmp_path / "blocks", 100_000, random.Random(2))
    index = tmp_path / nodeos.BLOCKS_INDEX
    index.write_bytes(index.read_bytes()[:-8])  # one entry short
    with pytest.raises(nodeos.NodeFormatError, match="does not agree"):
        nodeos.read_block_log_head(tmp_path / nodeos.BLOCKS_LOG, index)


def test_unsupported_version(tmp_path: Path) -> None:
    (tmp_path / "blocks.log").write_bytes(struct.pack("<II", 9, 1) + bytes(100))
    (tmp_path / "blocks.index").write_bytes(bytes(8))
    with pytest.raises(nodeos.NodeFormatError, match="unsupported version 9"):
        nodeos.read_block_log_head(tmp_path / "blocks.log", tmp_path / "blocks.index")


@pytest.mark.parametrize("dirty", [False, True])
def test_state_header(tmp_path: Path, dirty: bool) -> None:
    path = tmp_path / "shared_memory.bin"
    path.write_bytes(gen_data.chainbase_header(dirty=dirty))
    header = nodeos.read_state_header(path)
    assert header.dirty is dirty
    assert header.os and header.arch and header.compiler


def test_state_header_that_is_not_chainbase(tmp_path: Path) -> None:
    path = tmp_path / "shared_memory.bin"
    path.write_bytes(b"notchain" + bytes(1016))
    with pytest.raises(nodeos.NodeFormatError, match="unknown chainbase id"):
        nodeos.read_state_header(path)


def test_names_of_retained_pieces_and_snapshots() -> None:
    from pitreos import nodeos

    for path in ("blocks/retained/blocks-1-100000.log", "blocks/archive/blocks-1-2.index",
                 "state-history/retained/trace_history-101-200.log",
                 "state-history/retained/chain_state_history-101-200.index"):
        assert nodeos.is_retained(path), path
    for path in ("blocks/blocks.log", "state-history/trace_history.log",
                 "blocks/retained/blocks-1-x.log", "blocks/blocks-1-2.log.tmp"):
        assert not nodeos.is_retained(path), path
    block_id = "00000410" + "ab" * 28
    assert nodeos.snapshot_block(f"snapshots/snapshot-{block_id}.bin") == 1040
    assert nodeos.snapshot_block(f"snapshots/snapshot-{block_id}.bin.tmp") is None
    assert nodeos.snapshot_block("snapshots/snapshot-1040.bin") is None


def test_the_chain_id_of_a_log_that_starts_at_genesis(tmp_path: Path) -> None:
    import hashlib

    from pitreos import nodeos

    assert len(gen_data.GENESIS) == 110
    gen_data.write_blocks(tmp_path / "blocks", 50_000, random.Random(3))  # from block 1
    preamble = nodeos.read_preamble(tmp_path / "blocks/blocks.log")
    assert preamble.first_block == 1
    assert preamble.chain_id == hashlib.sha256(gen_data.GENESIS).hexdigest()
    # a genesis state that does not end at the totem is not guessed at
    raw = bytearray((tmp_path / "blocks/blocks.log").read_bytes())
    raw[8 + 110] = 0
    (tmp_path / "blocks/blocks.log").write_bytes(bytes(raw))
    assert nodeos.read_preamble(tmp_path / "blocks/blocks.log").chain_id is None
