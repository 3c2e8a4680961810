"""Restore, step one: plan. Compare the destination with the backup, changing nothing.

For each file it compares the local data with the backup, hashing every local chunk
that holds data where the backup has data. Only blake3 is computed: equal blake3 means
equal bytes (and so equal sha1), and it is about three times cheaper than sha1. Holes
in the local file are not read. The tasks of :func:`~pitreos.chunktasks.check_chunks`
find the local files' extents and do the comparing; the plan gathers what they found.
:mod:`.execute` then carries the plan out.
"""

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .. import manifest as mf
from .. import nodeos
from ..chunktasks import CheckTask, check_chunks, task_bytes
from ..defaults import MAX_UNKNOWN_DELETED, PROCESS_MIN_BYTES
from ..errors import RestoreError, UsageError
from ..hashing import matches
from ..log import get_logger
from ..manifest import RESTORE_MARKER
from ..parallel import WorkerPool, shared_or_own
from ..progress import NoProgress, Progress
from ..sparse import is_zero, pread_exact
from ..walk import PathFilter
from .nodestate import check_not_running, check_same_chain
from .seeds import Seeds

log = get_logger(__name__)

# The most chunks a check task covers: its message holds a blake3 a chunk (~70 bytes
# pickled), so ~290 KB; a node's log of 1 TB is ~250 tasks where its prefix is trusted.
MAX_CHECK_CHUNKS = 4096


@dataclass
class RestoreOptions:
    workers: int = 4
    delete_extra: bool = False
    path_filter: PathFilter = field(default_factory=PathFilter)
    check_all: bool = False  # hash every local chunk, append-only prefixes too
    force: bool = False  # over a locked or dirty node state, and --delete of many paths
    keep_setid: bool = False  # restore setuid/setgid bits (as tar's --same-permissions)
    write_through_links: bool = False  # write into files with other hard links
    seeds: Seeds = field(default_factory=Seeds)  # local directories to take chunks from
    # from this much data to check or fetch on, a local store's work goes to processes
    process_min_bytes: int = PROCESS_MIN_BYTES


@dataclass
class FilePlan:
    """What restoring one file takes. Chunk lists hold chunk numbers."""

    entry: mf.Entry
    local_size: int | None  # None: no regular file there now (or one replaced whole)
    in_the_way: bool = False  # a directory, symlink or hard-linked file to replace
    local_allocated: int = 0  # the space the local file takes (bytes)
    trusted: int = 0  # leading chunks of an append-only file kept unread
    fetch: list[int] = field(default_factory=list)
    punch: list[int] = field(default_factory=list)
    over_data: set[int] = field(default_factory=set)  # fetched where the local file has data
    kept: int = 0
    checked: int = 0

    def bytes_of(self, chunks: list[int], chunk_size: int) -> int:
        """The bytes of these chunks (distinct indexes): all full but the file's last.
        Not a sum over the chunks: planning an in-place restore sums several lists of
        thousands, ~3 ms of the coordinator's GIL that way (py-spy --gil)."""
        short = self.entry.size % chunk_size
        last = self.entry.size // chunk_size  # the short chunk's index, when there is one
        return len(chunks) * chunk_size - (chunk_size - short if short and last in chunks
                                           else 0)


@dataclass
class RestorePlan:
    manifest: mf.Manifest
    dest: Path
    entries: list[mf.Entry]
    files: list[FilePlan]
    extra: list[str]  # local paths the backup does not have
    extra_count: int = 0  # those and everything below the extra directories
    resuming: bool = False  # the destination holds the marker of an unfinished restore
    bytes_checked: int = 0  # local data read and hashed to make the plan

    def bytes_to_fetch(self) -> int:
        return sum(p.bytes_of(p.fetch, self.manifest.chunk_size) for p in self.files)

    def bytes_to_punch(self) -> int:
        return sum(p.bytes_of(p.punch, self.manifest.chunk_size) for p in self.files)

    def check_deletions(self, options: RestoreOptions) -> None:
        """Refuse a ``--delete`` that would remove many local paths, unless forced: a
        wrong destination must not cost a sibling application its files."""
        if options.delete_extra and self.extra_count > MAX_UNKNOWN_DELETED \
                and not options.force:
            shown = ", ".join(self.extra[:5]) + (", ..." if len(self.extra) > 5 else "")
            raise UsageError(
                f"--delete would remove {self.extra_count} local paths under {self.dest} "
                f"that backup {self.manifest.name} does not have ({shown}); more than "
                f"{MAX_UNKNOWN_DELETED} is refused: check with --dry-run, then pass --force")

    def truncated(self) -> list[FilePlan]:
        return [p for p in self.files if p.local_size is not None
                and p.local_size > p.entry.size]


def plan_restore(manifest: mf.Manifest, dest: Path, options: RestoreOptions,
                 progress: Progress | None = None, pool: WorkerPool | None = None
                 ) -> RestorePlan:
    """Compare ``dest`` with the backup; reads and hashes local data, changes nothing.
    ``pool``: workers to hash with, kept for :func:`execute_restore` (None: its own)."""
    try:
        return _plan(manifest, dest, options, progress or NoProgress(), pool)
    except OSError as exc:
        raise RestoreError(f"cannot inspect {exc.filename or dest} before restoring: "
                           f"{exc.strerror}; nothing was changed") from exc


def _plan(manifest: mf.Manifest, dest: Path, options: RestoreOptions,
          progress: Progress, pool: WorkerPool | None) -> RestorePlan:
    if dest.exists() and not dest.is_dir():
        raise UsageError(f"destination {dest} exists and is not a directory")
    resuming = os.path.lexists(dest / RESTORE_MARKER)
    if any(e.path == nodeos.STATE_FILE for e in manifest.entries):
        check_not_running(dest, force=options.force, resuming=resuming)
    check_same_chain(dest, manifest, force=options.force)
    kept_paths = options.path_filter.apply([e.path for e in manifest.entries])
    entries = [e for e in manifest.entries if e.path in kept_paths]
    if options.path_filter.include and not any(e.type == "file" for e in entries):
        log.warning("restore.filter_matches_nothing", include=options.path_filter.include)
    step = manifest.chunk_size
    files = [_inspect(dest, e, step, options.write_through_links)
             for e in entries if e.type == "file"]
    local = [fp for fp in files if fp.local_size is not None and fp.entry.chunks]
    for fp in local if not options.check_all else ():
        fp.trusted = _trusted_prefix(dest, fp, step)
    to_check = sum(_data_to_check(fp) for fp in local)
    progress.start("check", to_check)
    # worker processes when the whole restore reads and writes enough (what is known
    # to be fetched already counts: the pool started now serves the fetch too)
    processes = options.workers > 1 and \
        to_check + sum(p.bytes_of(p.fetch, step) for p in files) >= options.process_min_bytes
    try:
        checked = _check_local_chunks(dest, local, step, to_check, options, progress,
                                      processes, pool)
    finally:
        progress.finish()
    # what the backup left out as a cache nodeos rebuilds is not the backup's to judge:
    # a local copy stays, even with --delete
    caches = [p for p in manifest.meta.get("caches_left_out", "").split(",") if p]
    extra = [rel for rel in _extra_paths(dest, {e.path for e in manifest.entries},
                                         options.path_filter) if rel not in caches]
    extra_count = sum(_count_below(dest / rel) for rel in extra)
    return RestorePlan(manifest, dest, entries, files, extra, extra_count, resuming, checked)


def _count_below(path: Path) -> int:
    """The path, and everything under it when it is a real directory."""
    if path.is_symlink() or not path.is_dir():
        return 1
    return 1 + sum(len(dirs) + len(names) for _, dirs, names in os.walk(path))


def _inspect(dest: Path, entry: mf.Entry, step: int, write_through_links: bool) -> FilePlan:
    path = dest / entry.path
    st = os.lstat(path) if _inside_real_dirs(dest, entry.path) else None
    plan = FilePlan(entry, None)
    if st is not None and (not stat.S_ISREG(st.st_mode)
                           or (st.st_nlink > 1 and not write_through_links)):
        # a file with other hard links is replaced, not written into: a link may lead
        # outside the destination
        plan.in_the_way = True
        st = None
    if st is None:
        plan.fetch = [i for i, chunk in enumerate(entry.chunks) if chunk.digest is not None]
    else:  # compared chunk by chunk by the check's tasks
        plan.local_size = st.st_size
        plan.local_allocated = st.st_blocks * 512
    return plan


def _data_to_check(plan: FilePlan) -> int:
    """The local data that checking ``plan``'s file reads, estimated before its extents
    are known: the space the local file takes, but for a trusted prefix's share."""
    count = len(plan.entry.chunks)
    return min(plan.local_allocated, plan.entry.size) * (count - plan.trusted) // count


def _trusted_prefix(dest: Path, plan: FilePlan, step: int) -> int:
    """For an append-only file: how many leading chunks are kept without hashing them.

    The local file's full chunks (within the backup's size) form a prefix; when its first
    and last full chunks match the backup (their blake3), the whole prefix is taken as
    matching, and only the tail is fetched. Otherwise (0) every chunk is checked.
    """
    entry = plan.entry
    if not entry.appendonly or not plan.local_size:
        return 0
    full = min(plan.local_size, entry.size) // step
    if full == 0:
        return 0
    fd = os.open(dest / entry.path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        for index in sorted({0, full - 1}):
            expected = entry.chunks[index].digest
            data = pread_exact(fd, step, index * step)
            same = is_zero(data) if expected is None else matches(data, expected)
            if not same:
                log.warning("restore.appendonly_prefix_differs", path=entry.path,
                            chunk=index, action="checking every chunk")
                return 0
    finally:
        os.close(fd)
    return full


def _inside_real_dirs(dest: Path, rel: str) -> bool:
    """Whether ``dest/rel`` exists and every directory above it is a real directory
    (not a symlink): local data seen through a symlink is never trusted."""
    current = dest
    parts = rel.split("/")
    for part in parts[:-1]:
        current = current / part
        try:
            if not stat.S_ISDIR(os.lstat(current).st_mode):
                return False
        except FileNotFoundError:
            return False
    return os.path.lexists(current / parts[-1])


def _check_local_chunks(dest: Path, plans: list[FilePlan], step: int, to_check: int,
                        options: RestoreOptions, progress: Progress, processes: bool,
                        pool: WorkerPool | None) -> int:
    """Compare the local files with the backup, chunk by chunk; those whose blake3
    matches are kept. Returns the bytes read."""
    data_a_task = task_bytes(to_check, options.workers)

    def tasks() -> Iterator[CheckTask]:
        for plan in plans:
            entry = plan.entry
            assert plan.local_size is not None
            # about ``data_a_task`` of data to read a task: a sparse file's holes and a
            # trusted prefix cost no read, so they go in the largest tasks
            density = max(1, min(plan.local_allocated, entry.size)) / max(1, entry.size)
            span = min(MAX_CHECK_CHUNKS, max(1, int(data_a_task / density) // step))
            for first, end in _spans(len(entry.chunks), plan.trusted, span):
                yield CheckTask(str(dest / entry.path), plan.local_size, entry.size, step,
                                first, tuple(None if c.digest is None else c.digest.blake3
                                             for c in entry.chunks[first:end]),
                                plan.trusted)

    plans_by_path = {str(dest / plan.entry.path): plan for plan in plans}
    read = 0
    with shared_or_own(pool, options.workers) as workers:
        for result in workers.imap_unordered(check_chunks, tasks(), processes=processes):
            plan = plans_by_path[result.path]
            progress.advance(result.bytes_read)
            read += result.bytes_read
            plan.fetch += result.fetch
            plan.over_data.update(result.over_data)
            plan.punch += result.punch
            plan.checked += result.checked
            plan.kept += result.kept
    for plan in plans:
        plan.fetch.sort()
        plan.punch.sort()
    return read


def _spans(count: int, trusted: int, span: int) -> Iterator[tuple[int, int]]:
    """``[first, end)`` runs of ``count`` chunks: of ``span`` chunks, but those of a
    trusted prefix of ``MAX_CHECK_CHUNKS``."""
    for low, high, size in ((0, trusted, MAX_CHECK_CHUNKS), (trusted, count, span)):
        for first in range(low, high, size):
            yield first, min(first + size, high)


def _extra_paths(dest: Path, wanted: set[str], path_filter: PathFilter) -> list[str]:
    """Local paths under ``dest`` that the backup lacks (within the filter's scope)."""
    if not dest.is_dir():
        return []
    extra: list[str] = []
    for dirpath, dirnames, filenames in os.walk(dest):
        rel_dir = os.path.relpath(dirpath, dest).replace(os.sep, "/")
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        for name in sorted(dirnames + filenames):
            rel = rel_dir + name
            if rel == RESTORE_MARKER or rel in wanted:
                continue
            if path_filter.excludes(rel) or not path_filter.includes(rel):
                continue
            extra.append(rel)
        # do not descend into directories that are extra as a whole
        dirnames[:] = [d for d in dirnames if rel_dir + d in wanted]
    return sorted(extra)


