"""Reading a nodeos (EOSIO / Antelope Leap, Spring) data directory, without nodeos.

Formats, with their sources, are documented in ``docs/nodeos.md``:

- ``blocks/blocks.log``: uint32 version (1 to 3; bit 31: pruned), for version > 1 a
  uint32 first block number, then the genesis state (version < 3, or a log that starts
  at block 1) or the 32-byte chain id (version 3 from a later block), then for version >
  1 an 8-byte totem of 0xFF; each entry is a packed signed block followed by a uint64
  holding the entry's own start offset; a pruned log ends with a uint32 block count.
  ``blocks/blocks.index``: one uint64 offset per block, so the head is first + index
  size / 8 - 1. Retained pieces (``blocks-log-stride``) are ``blocks-<first>-<last>.log``
  and ``.index``; state history's are ``<name>_history-<first>-<last>.log``/``.index``
  (``trace_history``, ``chain_state_history``).
- ``snapshots/snapshot-<block id>.bin``: a block id's first 4 bytes are its number,
  big-endian, so the first 8 hex digits of the name give the snapshot's block.
- A block starts with its header: uint32 timestamp (half-second slots since
  2000-01-01T00:00:00Z), uint64 producer, uint16 confirmed, then the previous block's id,
  whose first 4 bytes are that block's number, big-endian.
- ``state/shared_memory.bin``: a 1024-byte chainbase header: uint64 id, the dirty flag
  at offset 8, then the build environment (debug, OS, architecture, boost version,
  compiler), packed.
"""

import hashlib
import re
import shutil
import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from .log import get_logger

log = get_logger(__name__)

BLOCKS_LOG = "blocks/blocks.log"
BLOCKS_INDEX = "blocks/blocks.index"
STATE_FILE = "state/shared_memory.bin"
FINALIZER_SAFETY = "finalizers/safety.dat"
CODE_CACHE = "state/code_cache.bin"  # EOS VM OC's cache: nodeos rebuilds it
CACHES = (CODE_CACHE,)
SNAPSHOT_RE = re.compile(r"(?:.*/)?snapshots/snapshot-([0-9a-f]{64})\.bin")
# finished pieces of a strided log: never written again once moved to the retained dir
RETAINED_RE = re.compile(r"(?:.*/)?(?:blocks|[a-z_]+_history)-(\d+)-(\d+)\.(?:log|index)")
_TOTEM = b"\xff" * 8
_GENESIS_SIZE = 8 + 1 + 33 + 68  # time_point, K1/R1 public key, chain_config_v0

_PRUNED_FLAG = 1 << 31
_BLOCK_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
CHAINBASE_IDS = {b"EOSIODB2", b"EOSIODB3", b"CHAINB01", b"CHAINB02"}
DIRTY_OFFSET = 8  # chainbase's header: uint64 id, then the dirty byte
_OS_NAMES = {0: "linux", 1: "macos", 2: "windows", 3: "other"}
_ARCH_NAMES = {0: "x86_64", 1: "arm", 2: "riscv", 3: "other"}


def with_dirty_byte(first_chunk: bytes) -> tuple[bytes, int | None]:
    """A state file's first chunk with its dirty byte set, and the byte it held (None
    when the chunk is too short to hold one)."""
    if len(first_chunk) <= DIRTY_OFFSET:
        return first_chunk, None
    patched = bytearray(first_chunk)
    patched[DIRTY_OFFSET] = 1
    return bytes(patched), first_chunk[DIRTY_OFFSET]


class NodeFormatError(Exception):
    """A node file is not in the format we expect; the message says why."""


@dataclass(frozen=True)
class Preamble:
    version: int
    pruned: bool
    first_block: int
    chain_id: str | None  # hex; None when the log holds a genesis state instead


@dataclass(frozen=True)
class BlockLogHead:
    version: int
    pruned: bool
    first_block: int
    head_block: int
    head_time: datetime
    chain_id: str | None


@dataclass(frozen=True)
class StateHeader:
    db_id: str
    dirty: bool
    debug: bool
    os: str
    arch: str
    boost_version: str
    compiler: str


@dataclass
class NodeInfo:
    """What a node directory says about itself, as backup metadata."""

    meta: dict[str, str] = field(default_factory=dict)
    state: StateHeader | None = None


def is_node_dir(root: Path) -> bool:
    try:
        return (root / BLOCKS_LOG).is_file() or (root / STATE_FILE).is_file()
    except OSError:  # an unreadable subdirectory: the scan reports it
        return False


def read_preamble(log_path: Path) -> Preamble:
    """A block log's preamble: version, pruned flag, first block, and the chain id:
    held as is by a version-3 log that starts after block 1, or else the sha256 of the
    packed genesis state it holds (``genesis_state::compute_chain_id``)."""
    with open(log_path, "rb") as f:
        raw = f.read(4 + 4 + _GENESIS_SIZE + 8)
    if len(raw) < 4:
        raise NodeFormatError(f"{log_path} is too short for a header")
    version = struct.unpack_from("<I", raw)[0]
    pruned = bool(version & _PRUNED_FLAG)
    version &= ~_PRUNED_FLAG
    if version < 1 or version > 3:
        raise NodeFormatError(f"{log_path} has unsupported version {version}")
    if version > 1 and len(raw) < 8:
        raise NodeFormatError(f"{log_path} is too short for a header")
    first = struct.unpack_from("<I", raw, 4)[0] if version > 1 else 1
    chain_id = None
    if version >= 3 and first > 1:
        if len(raw) < 48 or raw[40:48] != _TOTEM:
            raise NodeFormatError(f"{log_path}: no totem after the chain id in its header")
        chain_id = raw[8:40].hex()
    else:
        chain_id = _genesis_chain_id(raw[4 if version == 1 else 8:], totem=version > 1)
    return Preamble(version, pruned, first, chain_id)


def _genesis_chain_id(raw: bytes, *, totem: bool) -> str | None:
    """The chain id of a packed genesis state: ``time_point`` (int64), ``public_key``
    (a variant: varint index, then 33 bytes for K1 or R1; WebAuthn keys vary in size
    and are not read), ``chain_config_v0`` (68 bytes). None when it cannot be told
    apart from what follows (a version-2 or -3 log must have the totem right after)."""
    genesis = raw[:_GENESIS_SIZE]
    if len(genesis) < _GENESIS_SIZE or genesis[8] not in (0, 1):
        return None
    if totem and raw[_GENESIS_SIZE:_GENESIS_SIZE + 8] != _TOTEM:
        return None
    return hashlib.sha256(genesis).hexdigest()


def snapshot_block(path: str) -> int | None:
    """The block of a portable snapshot, from its name (None: not a snapshot)."""
    match = SNAPSHOT_RE.fullmatch(path)
    return int(match.group(1)[:8], 16) if match else None


def is_retained(path: str) -> bool:
    """A finished piece of a strided block or state-history log."""
    return RETAINED_RE.fullmatch(path) is not None


def read_block_log_head(log_path: Path, index_path: Path) -> BlockLogHead:
    """The head block of a blocks.log, cross-checked against its index."""
    preamble = read_preamble(log_path)
    version, pruned, first = preamble.version, preamble.pruned, preamble.first_block
    with open(log_path, "rb") as f:
        index_size = index_path.stat().st_size
        if index_size == 0 or index_size % 8:
            raise NodeFormatError(f"{index_path} is truncated ({index_size} bytes, not a "
                                  "non-zero multiple of 8)")
        head = first + index_size // 8 - 1
        f.seek(0, 2)
        end = f.tell() - (4 if pruned else 0)
        f.seek(end - 8)
        last_pos = struct.unpack("<Q", f.read(8))[0]
        with open(index_path, "rb") as index:
            index.seek(index_size - 8)
            index_pos = struct.unpack("<Q", index.read(8))[0]
        if last_pos != index_pos or last_pos >= end - 8:
            raise NodeFormatError(
                f"{index_path} does not agree with {log_path}: the index's last block starts "
                f"at {index_pos}, the log's at {last_pos}")
        f.seek(last_pos)
        header = f.read(46)
    if len(header) < 46:
        raise NodeFormatError(f"{log_path}: the last block's header is cut short")
    slot = struct.unpack_from("<I", header)[0]
    previous_num = struct.unpack_from(">I", header, 14)[0]
    if previous_num + 1 != head:
        raise NodeFormatError(
            f"{index_path} does not agree with {log_path}: the index ends at block {head}, "
            f"the log's last block is {previous_num + 1}")
    return BlockLogHead(version, pruned, first, head,
                        _BLOCK_EPOCH + timedelta(milliseconds=500 * slot), preamble.chain_id)


def read_state_header(path: Path) -> StateHeader:
    with open(path, "rb") as f:
        raw = f.read(1024)
    if len(raw) < 784:
        raise NodeFormatError(f"{path} is too short for a chainbase header")
    db_id = raw[:8]
    if db_id not in CHAINBASE_IDS:
        raise NodeFormatError(f"{path} has unknown chainbase id {db_id!r}")
    debug, os_code, arch_code = raw[9], raw[10], raw[11]
    boost = struct.unpack_from("<I", raw, 12)[0]
    compiler = raw[528:784].split(b"\0", 1)[0].decode("utf-8", "replace")
    return StateHeader(
        db_id=db_id.decode(), dirty=raw[8] != 0, debug=bool(debug),
        os=_OS_NAMES.get(os_code, f"unknown({os_code})"),
        arch=_ARCH_NAMES.get(arch_code, f"unknown({arch_code})"),
        boost_version=f"{boost // 100000}.{boost // 100 % 1000}.{boost % 100}",
        compiler=compiler,
    )


def inspect(root: Path) -> NodeInfo:
    """Read what can be read; where a value cannot be read, say why and carry on."""
    info = NodeInfo()
    if (root / BLOCKS_LOG).is_file():
        try:
            head = read_block_log_head(root / BLOCKS_LOG, root / BLOCKS_INDEX)
        except (NodeFormatError, OSError, struct.error) as exc:
            log.warning("node.block_unknown", reason=str(exc))
        else:
            info.meta.update(block=str(head.head_block),
                             block_time=head.head_time.isoformat().replace("+00:00", "Z"),
                             block_log_version=str(head.version),
                             first_block=str(head.first_block))
            if head.chain_id is not None:
                info.meta["chain_id"] = head.chain_id
    version = local_nodeos_version()
    if version is not None:
        info.meta["nodeos_version"] = version
    if (root / STATE_FILE).is_file():
        try:
            state = read_state_header(root / STATE_FILE)
        except (NodeFormatError, OSError, struct.error) as exc:
            log.warning("node.state_header_unknown", reason=str(exc))
        else:
            info.state = state
            info.meta.update(state_db=state.db_id, state_compiler=state.compiler,
                             state_boost=state.boost_version, state_os=state.os,
                             state_arch=state.arch,
                             state_debug="true" if state.debug else "false")
    return info


def local_nodeos_version() -> str | None:
    """``nodeos --full-version`` of the nodeos on the PATH (None: none, or it failed)."""
    import subprocess  # here: worker processes import this module (~4 ms)

    binary = shutil.which("nodeos")
    if binary is None:
        return None
    try:
        done = subprocess.run([binary, "--full-version"], capture_output=True, text=True,
                              timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("node.version_unknown", nodeos=binary, reason=str(exc))
        return None
    version = done.stdout.strip().splitlines()[0] if done.stdout.strip() else ""
    return version if done.returncode == 0 and version else None


def describe_state_environment(meta: dict[str, str]) -> str | None:
    """A line saying which nodeos build can open the backed-up state, if recorded."""
    if "state_db" not in meta:
        return None
    debug = " (debug build)" if meta.get("state_debug") == "true" else ""
    return (f"state {meta['state_db']} was written by a nodeos built with "
            f"{meta.get('state_compiler', '?')}, boost {meta.get('state_boost', '?')}, "
            f"{meta.get('state_os', '?')}/{meta.get('state_arch', '?')}{debug}: only a "
            "matching build opens it")
