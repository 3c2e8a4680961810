"""What a backup is asked to do, and what it reports."""

from dataclasses import dataclass, field

from .. import locks
from .. import manifest as mf
from ..defaults import APPEND_ONLY_DEFAULTS, DEFAULT_CHUNK_SIZE, PROCESS_MIN_BYTES
from ..walk import PathFilter


@dataclass
class BackupOptions:
    tag: str = "default"
    meta: dict[str, str] = field(default_factory=dict)
    chunk_size: int = DEFAULT_CHUNK_SIZE
    workers: int = 4
    incremental: bool = False
    path_filter: PathFilter = field(default_factory=PathFilter)
    appendonly: tuple[str, ...] = APPEND_ONLY_DEFAULTS
    node: bool | None = None  # None: detect a nodeos data directory
    allow_dirty: bool = False
    keep_finalizer_safety: bool = False
    exclude_caches: bool = False  # leave out what nodeos rebuilds (state/code_cache.bin)
    latest_snapshot_only: bool = False  # of snapshots/snapshot-*.bin, only the newest
    # from this much data to read on, a local store's work goes to worker processes
    process_min_bytes: int = PROCESS_MIN_BYTES
    lock_stale_after: float = locks.DEFAULT_STALE_AFTER  # seconds
    gc_poll_seconds: float = 2.0


@dataclass
class BackupStats:
    files: int = 0
    files_unchanged: int = 0
    files_appended: int = 0  # append-only files of which only the tail was read
    files_racy: int = 0  # read, and modified too recently to be trusted next time
    blobs_stored_again: int = 0  # reused blobs an overlapping gc deleted
    chunks: int = 0
    chunks_empty: int = 0
    chunks_known: int = 0
    blobs_stored: int = 0
    bytes_read: int = 0
    bytes_stored: int = 0
    seconds: float = 0.0


@dataclass
class BackupResult:
    manifest: mf.Manifest
    stats: BackupStats
