"""Checking a node's data directory as nodeos will need it (``pitreos check-node``,
``restore --check``): the block index agrees with the log entry by entry, the head is
the one a backup recorded, the chain is the same, the state file is clean, and its
build environment is shown beside the local nodeos's.
"""

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from . import nodeos

_INDEX_READ = 1 << 20  # index bytes read at a time: 131,072 entries


@dataclass
class NodeCheck:
    directory: Path
    head_block: int | None = None
    chain_id: str | None = None
    blocks_checked: int = 0
    state_environment: str | None = None
    local_nodeos: str | None = None
    problems: list[str] = field(default_factory=list)


def check_node(directory: Path, recorded: dict[str, str] | None = None) -> NodeCheck:
    """Check ``directory``; ``recorded`` is the metadata of the backup it should match
    (its head block and chain). Problems are collected, not raised."""
    result = NodeCheck(directory)
    recorded = recorded or {}
    log_path, index_path = directory / nodeos.BLOCKS_LOG, directory / nodeos.BLOCKS_INDEX
    if log_path.is_file():
        _check_log(log_path, index_path, recorded, result)
    elif "block" in recorded:
        result.problems.append(f"{log_path} is missing; the backup has block "
                               f"{recorded['block']}")
    state_path = directory / nodeos.STATE_FILE
    if state_path.is_file():
        try:
            state = nodeos.read_state_header(state_path)
        except (nodeos.NodeFormatError, OSError) as exc:
            result.problems.append(f"{state_path}: {exc}")
        else:
            meta = {"state_db": state.db_id, "state_compiler": state.compiler,
                    "state_boost": state.boost_version, "state_os": state.os,
                    "state_arch": state.arch, "state_debug": str(state.debug).lower()}
            result.state_environment = nodeos.describe_state_environment(meta)
            if state.dirty:
                result.problems.append(f"{state_path} has its dirty flag set: nodeos will "
                                       "not open it (an unfinished restore, or a crash)")
    result.local_nodeos = nodeos.local_nodeos_version()
    return result


def _check_log(log_path: Path, index_path: Path, recorded: dict[str, str],
               result: NodeCheck) -> None:
    try:
        head = nodeos.read_block_log_head(log_path, index_path)
    except (nodeos.NodeFormatError, OSError, struct.error) as exc:
        result.problems.append(str(exc))
        return
    result.head_block, result.chain_id = head.head_block, head.chain_id
    if recorded.get("block", str(head.head_block)) != str(head.head_block):
        result.problems.append(f"{log_path} ends at block {head.head_block}, the backup at "
                               f"block {recorded['block']}")
    wanted = recorded.get("chain_id")
    if wanted is not None and head.chain_id is not None and wanted != head.chain_id:
        result.problems.append(f"{log_path} belongs to chain {head.chain_id}, the backup to "
                               f"chain {wanted}")
    problem = _index_agrees(log_path, index_path, head, result)
    if problem is not None:
        result.problems.append(problem)


def _index_agrees(log_path: Path, index_path: Path, head: nodeos.BlockLogHead,
                  result: NodeCheck) -> str | None:
    """Each block's index entry is where its log entry starts: the uint64 that ends the
    entry (just before the next one starts) holds that same offset. Entries a pruned
    log punched away read as 0 and are skipped."""
    with open(log_path, "rb") as log, open(index_path, "rb") as index:
        log.seek(0, 2)
        end = log.tell() - (4 if head.pruned else 0)
        previous: int | None = None
        number = head.first_block - 1
        while chunk := index.read(_INDEX_READ):
            for (offset,) in struct.iter_unpack("<Q", chunk):
                number += 1
                if offset == 0 and head.pruned:
                    continue
                if previous is not None:
                    problem = _entry_ends(log, offset, previous, number - 1, log_path)
                    if problem:
                        return problem
                    result.blocks_checked += 1
                previous = offset
        if previous is not None:
            problem = _entry_ends(log, end, previous, number, log_path)
            if problem:
                return problem
            result.blocks_checked += 1
    return None


def _entry_ends(log: BinaryIO, next_start: int, start: int, number: int,
                log_path: Path) -> str | None:
    if next_start - 8 < start:
        return (f"{log_path}: the index says block {number} starts at {start} and the next "
                f"at {next_start}")
    log.seek(next_start - 8)
    (trailer,) = struct.unpack("<Q", log.read(8))
    if trailer != start:
        return (f"the index disagrees with {log_path} at blocks {number}-{number + 1}: it "
                f"puts block {number} at {start} and block {number + 1} at {next_start}, "
                f"but the entry ending there says it began at {trailer}")
    return None
