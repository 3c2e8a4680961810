"""A node's state file during a restore: never written while nodeos holds it, and never
looking restored before it is.

nodeos (chainbase's ``pinnable_mapped_file``) holds a ``boost::interprocess::file_lock``
on ``state/shared_memory.bin`` while it runs, which on Linux is an ``fcntl`` write lock
on the whole file, and keeps the header's dirty byte (offset 8) set; it refuses to open
a file whose dirty byte is set. A restore uses both facts: it refuses to touch a state
file that another process has locked or that is dirty (unless forced, or resuming its
own interrupted restore), and it keeps the dirty byte set on disk from before its first
write to the file until every byte of the restore is written and synced, so that a
restore killed half way leaves a state file that nodeos refuses.
"""

import errno
import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

from .. import manifest as mf
from .. import nodeos
from ..errors import ChainMismatch, NodeRunning

DIRTY_OFFSET = nodeos.DIRTY_OFFSET


def check_not_running(dest: Path, *, force: bool, resuming: bool) -> None:
    """Refuse (before anything is changed) to restore over a state file that another
    process has locked, or that is dirty (not closed cleanly: nodeos may be running)."""
    path = dest / nodeos.STATE_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
    except OSError:
        return  # absent, or not a regular file: nothing running uses it
    try:
        header = os.pread(fd, DIRTY_OFFSET + 1, 0)
        locked = _locked_by_another(fd)
    finally:
        os.close(fd)
    if force:
        return
    if locked:
        raise NodeRunning(
            f"{path} is locked by another process (nodeos is running?): stop it first, "
            "or pass --force to write into it anyway")
    chainbase = header[:8] in nodeos.CHAINBASE_IDS
    if chainbase and len(header) > DIRTY_OFFSET and header[DIRTY_OFFSET] and not resuming:
        raise NodeRunning(
            f"{path} has its dirty flag set (nodeos is running, or crashed): stop nodeos, "
            "or pass --force to overwrite it")


def check_same_chain(dest: Path, manifest: mf.Manifest, *, force: bool) -> None:
    """Refuse to restore a backup of one chain over a block log of another: the result
    would be neither node."""
    wanted = manifest.meta.get("chain_id")
    log_path = dest / nodeos.BLOCKS_LOG
    if wanted is None or force or not log_path.is_file():
        return
    try:
        local = nodeos.read_preamble(log_path).chain_id
    except (nodeos.NodeFormatError, OSError):
        return  # unreadable: the restore replaces it
    if local is not None and local != wanted:
        raise ChainMismatch(
            f"{log_path} belongs to chain {local}, backup {manifest.name} to chain "
            f"{wanted}: restoring would mix two chains. Restore into another directory, or "
            "pass --force to replace this node's data")


def _locked_by_another(fd: int) -> bool:
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return True
        raise
    fcntl.lockf(fd, fcntl.LOCK_UN)
    return False


@dataclass
class DirtyHold:
    """Keeps a state file's dirty byte set while it is restored. ``original`` is the
    byte the backup holds there, learnt from the fetched first chunk or, when that
    chunk is kept, from the local file before it is marked."""

    path: str  # relative to the destination
    mtime_ns: int
    original: int | None = None

    def mark(self, fd: int, first_chunk_kept: bool) -> None:
        """Before the first write to the file: set the dirty byte on disk."""
        if first_chunk_kept:
            current = os.pread(fd, 1, DIRTY_OFFSET)
            self.original = current[0] if current else 0
        os.pwrite(fd, b"\x01", DIRTY_OFFSET)
        os.fsync(fd)

    def release(self, dest: Path) -> None:
        """Everything is written and synced: give the byte the backup's value."""
        if self.original is None:
            return
        fd = os.open(dest / self.path, os.O_RDWR | os.O_NOFOLLOW)
        try:
            os.pwrite(fd, bytes((self.original,)), DIRTY_OFFSET)
            os.fsync(fd)
            os.utime(fd, ns=(self.mtime_ns, self.mtime_ns))
        finally:
            os.close(fd)
