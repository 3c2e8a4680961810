"""Restore, step one: plan. Compare the destination with the backup, changing nothing.

For each file it compares the local data with the backup, hashing every local chunk
that holds data where the backup has data. Only blake3 is computed: equal blake3 means
equal bytes (and so equal sha1), and it is about three times cheaper than sha1. Holes
in the local file are not read. :mod:`.execute` then carries the plan out.
"""

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .. import manifest as mf
from .. import nodeos
from ..chunktasks import CheckTask, batches, check_chunks, task_bytes
from ..defaults import MAX_UNKNOWN_DELETED, PROCESS_MIN_BYTES
from ..errors import RestoreError, UsageError
from ..hashing import matches
from ..log import get_logger
from ..manifest import RESTORE_MARKER
from ..parallel import WorkerPool, shared_or_own
from ..progress import NoProgress, Progress
from ..sparse import chunks_with_data, data_extents, extents_within, is_zero, pread_exact
from ..walk import PathFilter
from .nodestate import check_not_running, check_same_chain
from .seeds import Seeds

log = get_logger(__name__)




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
    fetch: list[int] = field(default_factory=list)
    punch: list[int] = field(default_factory=list)
    local_data: set[int] = field(default_factory=set)  # chunks where the local file has data
    local_extents: list[tuple[int, int]] = field(default_factory=list)
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
    files = [_inspect(dest, e, manifest.chunk_size, options.write_through_links)
             for e in entries if e.type == "file"]
    step = manifest.chunk_size
    checks: list[tuple[FilePlan, list[int]]] = []
    for fp in files:
        trusted = set() if options.check_all else set(_trusted_prefix(dest, fp, step))
        indexes = [i for i in sorted(fp.local_data)
                   if fp.entry.chunks[i].digest is not None and i not in trusted]
        if indexes:
            checks.append((fp, indexes))
    to_check = sum(p.bytes_of(indexes, step) for p, indexes in checks)
    progress.start("check", to_check)
    # worker processes when the whole restore reads and writes enough (what is known
    # to be fetched already counts: the pool started now serves the fetch too)
    processes = options.workers > 1 and \
        to_check + sum(p.bytes_of(p.fetch, step) for p in files) >= options.process_min_bytes
    try:
        checked = _check_local_chunks(dest, checks, step, options, progress, processes,
                                      pool)
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
    if st is not None:
        plan.local_size = st.st_size
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            plan.local_extents = data_extents(fd, st.st_size)
        finally:
            os.close(fd)
    plan.local_data = chunks_with_data(plan.local_extents, entry.size, step)
    for index, chunk in enumerate(entry.chunks):
        has_local = index in plan.local_data
        if chunk.digest is None:
            if has_local:
                plan.punch.append(index)
        elif not has_local:
            plan.fetch.append(index)
    return plan


def _trusted_prefix(dest: Path, plan: FilePlan, step: int) -> list[int]:
    """For an append-only file: the leading chunks kept without hashing them all.

    The local file's full chunks (within the backup's size) form a prefix; when its first
    and last full chunks match the backup (their blake3), the whole prefix is taken as
    matching, and only the tail is fetched. Otherwise every chunk is checked.
    """
    entry = plan.entry
    if not entry.appendonly or not plan.local_size:
        return []
    full = min(plan.local_size, entry.size) // step
    if full == 0:
        return []
    fd = os.open(dest / entry.path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        for index in sorted({0, full - 1}):
            expected = entry.chunks[index].digest
            data = pread_exact(fd, step, index * step)
            same = is_zero(data) if expected is None else matches(data, expected)
            if not same:
                log.warning("restore.appendonly_prefix_differs", path=entry.path,
                            chunk=index, action="checking every chunk")
                return []
    finally:
        os.close(fd)
    kept = [i for i in range(full) if i in plan.local_data and entry.chunks[i].digest]
    plan.kept += len(kept)
    return kept


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


def _check_local_chunks(dest: Path, checks: list[tuple[FilePlan, list[int]]], step: int,
                        options: RestoreOptions, progress: Progress, processes: bool,
                        pool: WorkerPool | None) -> int:
    """Hash local chunks; those whose blake3 matches are kept. Returns the bytes read."""
    to_hash: list[tuple[str, FilePlan, list[int]]] = []
    for plan, indexes in checks:
        assert plan.local_size is not None
        local_size = plan.local_size
        whole = [i for i in indexes
                 if i * step + mf.chunk_length(plan.entry.size, step, i) <= local_size]
        # the chunks the local file is too short to hold: the last ones (sorted), fetched
        plan.checked += len(indexes) - len(whole)
        plan.fetch.extend(indexes[len(whole):])
        if whole:
            to_hash.append((str(dest / plan.entry.path), plan, whole))
    plans = {path: plan for path, plan, _ in to_hash}
    size = task_bytes(sum(plan.bytes_of(whole, step) for _, plan, whole in to_hash),
                      options.workers)

    def tasks() -> Iterator[CheckTask]:
        for path, plan, indexes in to_hash:
            for batch in batches(indexes, step, size):
                chunks = []
                for index in batch:
                    digest = plan.entry.chunks[index].digest
                    assert digest is not None
                    chunks.append((index, index * step,
                                   mf.chunk_length(plan.entry.size, step, index),
                                   digest.blake3))
                extents = extents_within(plan.local_extents, batch[0] * step,
                                         (batch[-1] + 1) * step)
                yield CheckTask(path, tuple(extents), tuple(chunks))

    read = 0
    with shared_or_own(pool, options.workers) as workers:
        for result in workers.imap_unordered(check_chunks, tasks(), processes=processes):
            plan = plans[result.path]
            progress.advance(result.bytes_read)
            read += result.bytes_read
            for index, same in result.same:
                plan.checked += 1
                if same:
                    plan.kept += 1
                else:
                    plan.fetch.append(index)
    for plan, _ in checks:
        plan.fetch.sort()
    return read


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


