"""Restore, in place: plan what differs, then fetch only that.

Planning is read-only: for each file it compares the local data with the backup,
hashing every local chunk that holds data where the backup has data. Only blake3 is
computed: equal blake3 means equal bytes (and so equal sha1), and it is about three
times cheaper than sha1. Holes in the local file are not read.
Execution then fetches the chunks that differ, checks both hashes of each blob before
writing, writes only the non-zero blocks (holes stay holes), punches holes where the
backup is empty and the local file is not, and sets modes and mtimes last.

While a restore runs, ``DIR/.pitreos-restore`` names the backup being restored; it is
removed only when everything is written and synced, so a failed or interrupted restore
never looks finished. Running the same restore again completes it.
"""

import json
import os
import shutil
import stat
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from . import manifest as mf
from .errors import PitreosError, RestoreError, UsageError
from .handles import Handles
from .hashing import blake3_hex, digest
from .parallel import TaskWindow
from .progress import NoProgress, Progress
from .repository import Repository
from .sparse import (
    data_extents,
    is_zero,
    nonzero_runs,
    overlaps,
    pread_exact,
    punch_hole,
    pwrite_all,
    read_range,
)
from .walk import RESTORE_MARKER, PathFilter

log = structlog.get_logger(__name__)


@dataclass
class RestoreOptions:
    workers: int = 4
    delete_extra: bool = False
    path_filter: PathFilter = field(default_factory=PathFilter)
    check_all: bool = False  # hash every local chunk, append-only prefixes too


@dataclass
class FilePlan:
    """What restoring one file takes. Chunk lists hold chunk numbers."""

    entry: mf.Entry
    local_size: int | None  # None: no regular file there now
    in_the_way: bool = False  # a directory or symlink occupies the path
    fetch: list[int] = field(default_factory=list)
    punch: list[int] = field(default_factory=list)
    local_data: set[int] = field(default_factory=set)  # chunks where the local file has data
    local_extents: list[tuple[int, int]] = field(default_factory=list)
    kept: int = 0
    checked: int = 0

    def bytes_of(self, chunks: list[int], chunk_size: int) -> int:
        return sum(mf.chunk_length(self.entry.size, chunk_size, i) for i in chunks)


@dataclass
class RestorePlan:
    manifest: mf.Manifest
    dest: Path
    entries: list[mf.Entry]
    files: list[FilePlan]
    extra: list[str]  # local paths the backup does not have

    def bytes_to_fetch(self) -> int:
        return sum(p.bytes_of(p.fetch, self.manifest.chunk_size) for p in self.files)

    def bytes_to_punch(self) -> int:
        return sum(p.bytes_of(p.punch, self.manifest.chunk_size) for p in self.files)

    def truncated(self) -> list[FilePlan]:
        return [p for p in self.files if p.local_size is not None
                and p.local_size > p.entry.size]


@dataclass
class RestoreStats:
    chunks_checked: int = 0
    chunks_kept: int = 0
    chunks_fetched: int = 0
    chunks_holed: int = 0
    bytes_fetched: int = 0  # as stored (compressed)
    bytes_written: int = 0
    files: int = 0
    deleted: int = 0
    seconds: float = 0.0


def plan_restore(manifest: mf.Manifest, dest: Path, options: RestoreOptions,
                 progress: Progress | None = None) -> RestorePlan:
    """Compare ``dest`` with the backup; reads and hashes local data, changes nothing."""
    progress = progress or NoProgress()
    if dest.exists() and not dest.is_dir():
        raise UsageError(f"destination {dest} exists and is not a directory")
    kept_paths = options.path_filter.apply([e.path for e in manifest.entries])
    entries = [e for e in manifest.entries if e.path in kept_paths]
    if options.path_filter.include and not any(e.type == "file" for e in entries):
        log.warning("restore.filter_matches_nothing", include=options.path_filter.include)
    files = [_inspect(dest, e, manifest.chunk_size) for e in entries if e.type == "file"]
    trusted: set[tuple[str, int]] = set()
    if not options.check_all:
        for fp in files:
            trusted.update((fp.entry.path, i)
                           for i in _trusted_prefix(dest, fp, manifest.chunk_size))
    checks = [(p, i) for p in files for i in sorted(p.local_data)
              if p.entry.chunks[i].digest is not None and (p.entry.path, i) not in trusted]
    step = manifest.chunk_size
    progress.start("check", sum(mf.chunk_length(p.entry.size, step, i) for p, i in checks))
    try:
        _check_local_chunks(dest, checks, step, options.workers, progress)
    finally:
        progress.finish()
    extra = _extra_paths(dest, {e.path for e in manifest.entries}, options.path_filter)
    return RestorePlan(manifest, dest, entries, files, extra)


def _inspect(dest: Path, entry: mf.Entry, step: int) -> FilePlan:
    path = dest / entry.path
    st = os.lstat(path) if _inside_real_dirs(dest, entry.path) else None
    plan = FilePlan(entry, None)
    if st is not None and not stat.S_ISREG(st.st_mode):
        plan.in_the_way = True
        st = None
    if st is not None:
        plan.local_size = st.st_size
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            plan.local_extents = data_extents(fd, st.st_size)
        finally:
            os.close(fd)
    for index, chunk in enumerate(entry.chunks):
        start = chunk.start
        has_local = overlaps(plan.local_extents, start, min(start + step, entry.size))
        if has_local:
            plan.local_data.add(index)
        if chunk.digest is None:
            if has_local:
                plan.punch.append(index)
        elif not has_local:
            plan.fetch.append(index)
    return plan


def _trusted_prefix(dest: Path, plan: FilePlan, step: int) -> list[int]:
    """For an append-only file: the leading chunks kept without hashing them all.

    The local file's full chunks (within the backup's size) form a prefix; when its first
    and last full chunks match the backup (both hashes), the whole prefix is taken as
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
            actual = None if is_zero(data) else digest(data)
            if actual != expected:
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


def _check_local_chunks(dest: Path, checks: list[tuple[FilePlan, int]], step: int,
                        workers: int, progress: Progress) -> None:
    """Hash local chunks; those whose blake3 matches are kept."""
    handles = Handles(lambda path: os.open(dest / path, os.O_RDONLY | os.O_NOFOLLOW))
    for path, count in Counter(p.entry.path for p, _ in checks).items():
        handles.expect(path, count)

    def check(plan: FilePlan, index: int, fd: int) -> tuple[FilePlan, int, bool]:
        chunk = plan.entry.chunks[index]
        assert plan.local_size is not None and chunk.digest is not None
        length = mf.chunk_length(plan.entry.size, step, index)
        if plan.local_size < chunk.start + length:
            return plan, index, False
        data = read_range(fd, chunk.start, length, plan.local_extents)
        progress.advance(length)
        return plan, index, blake3_hex(data) == chunk.digest.blake3

    try:
        with TaskWindow[tuple[FilePlan, int, bool]](workers) as window:
            queue = list(reversed(checks))
            while queue or len(window):
                while queue and not window.full:
                    plan, index = queue.pop()
                    window.submit(check, plan, index, handles.fd(plan.entry.path))
                plan, index, same = window.next_done()
                handles.done(plan.entry.path)
                plan.checked += 1
                if same:
                    plan.kept += 1
                else:
                    plan.fetch.append(index)
    finally:
        handles.close_all()
    for plan, _ in checks:
        plan.fetch.sort()


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


def execute_restore(plan: RestorePlan, repo: Repository, options: RestoreOptions,
                    progress: Progress | None = None) -> RestoreStats:
    """Carry out a plan made by :func:`plan_restore`."""
    progress = progress or NoProgress()
    started = time.monotonic()
    dest = plan.dest
    stats = RestoreStats()
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RestoreError(f"cannot create destination {dest}: {exc.strerror}") from exc
    marker = dest / RESTORE_MARKER
    if marker.exists():
        log.warning("restore.resuming", destination=str(dest),
                    previous=marker.read_text(errors="replace").strip())
    marker.write_text(json.dumps({"restoring": plan.manifest.name, "started": time.time()}))
    _fsync_dir(dest)
    try:
        _restore_entries(plan, repo, options, stats, progress)
    except (PitreosError, OSError) as exc:
        raise RestoreError(
            f"restore of {plan.manifest.name} into {dest} failed: {exc}; the files there are "
            "incomplete: run the same restore again to finish it"
        ) from exc
    marker.unlink()
    _fsync_dir(dest)
    stats.seconds = time.monotonic() - started
    log.info("restore.done", backup=plan.manifest.name, destination=str(dest),
             fetched=stats.chunks_fetched, kept=stats.chunks_kept, holed=stats.chunks_holed,
             seconds=round(stats.seconds, 3))
    return stats


def _restore_entries(plan: RestorePlan, repo: Repository, options: RestoreOptions,
                     stats: RestoreStats, progress: Progress) -> None:
    dest = plan.dest
    for entry in plan.entries:
        if entry.type == "dir":
            _ensure_dir(dest, entry.path)
    for fp in plan.files:
        stats.files += 1
        stats.chunks_checked += fp.checked
        stats.chunks_kept += fp.kept
    progress.start("restore", plan.bytes_to_fetch())
    try:
        _fetch_and_write(plan, repo, options.workers, stats, progress)
    finally:
        progress.finish()
    for entry in plan.entries:
        if entry.type == "symlink":
            _restore_symlink(dest, entry)
    if options.delete_extra:
        for rel in reversed(plan.extra):
            _remove(dest / rel)
            stats.deleted += 1
            log.info("restore.deleted", path=rel)
    for entry in reversed(plan.entries):  # children before parents: mtimes stick
        if entry.type == "dir":
            path = dest / entry.path
            os.chmod(path, entry.mode)
            os.utime(path, ns=(entry.mtime_ns, entry.mtime_ns))


def _fetch_and_write(plan: RestorePlan, repo: Repository, workers: int,
                     stats: RestoreStats, progress: Progress) -> None:
    """Per file, in order: open (created or resized) on its first task, punch and fetch,
    then fsync and give it its mode and mtime after its last task."""
    step = plan.manifest.chunk_size
    by_path = {fp.entry.path: fp for fp in plan.files}

    def finish(path: str, fd: int) -> None:
        entry = by_path[path].entry
        os.fsync(fd)
        os.fchmod(fd, entry.mode)
        os.utime(fd, ns=(entry.mtime_ns, entry.mtime_ns))

    handles = Handles(lambda path: _open_for_restore(plan.dest, by_path[path]), finish)

    def punch(fp: FilePlan, index: int, fd: int) -> tuple[str, int, int]:
        start = index * step
        punch_hole(fd, start, mf.chunk_length(fp.entry.size, step, index))
        return fp.entry.path, 0, 0

    def fetch(fp: FilePlan, index: int, fd: int) -> tuple[str, int, int]:
        chunk = fp.entry.chunks[index]
        assert chunk.digest is not None
        data, fetched = repo.read_chunk(chunk.digest)
        written = 0
        previous_end = 0
        had_data = index in fp.local_data
        for run_start, run_end in nonzero_runs(data):
            if had_data and run_start > previous_end:
                punch_hole(fd, chunk.start + previous_end, run_start - previous_end)
            pwrite_all(fd, memoryview(data)[run_start:run_end], chunk.start + run_start)
            written += run_end - run_start
            previous_end = run_end
        if had_data and previous_end < len(data):
            punch_hole(fd, chunk.start + previous_end, len(data) - previous_end)
        progress.advance(len(data))
        return fp.entry.path, fetched, written

    Task = tuple[Callable[[FilePlan, int, int], tuple[str, int, int]], FilePlan, int]
    tasks: list[Task] = []
    try:
        for fp in plan.files:
            handles.expect(fp.entry.path, len(fp.punch) + len(fp.fetch))
            tasks += [(punch, fp, i) for i in fp.punch] + [(fetch, fp, i) for i in fp.fetch]
        tasks.reverse()
        with TaskWindow[tuple[str, int, int]](workers) as window:
            while tasks or len(window):
                while tasks and not window.full:
                    fn, fp, index = tasks.pop()
                    window.submit(fn, fp, index, handles.fd(fp.entry.path))
                path, fetched, written = window.next_done()
                stats.bytes_fetched += fetched
                stats.bytes_written += written
                handles.done(path)
    finally:
        handles.close_all()
    stats.chunks_holed = sum(len(fp.punch) for fp in plan.files)
    stats.chunks_fetched = sum(len(fp.fetch) for fp in plan.files)


def _open_for_restore(dest: Path, fp: FilePlan) -> int:
    path = dest / fp.entry.path
    _ensure_dir(dest, fp.entry.path.rpartition("/")[0])
    if fp.in_the_way:
        _remove(path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    if fp.local_size != fp.entry.size:
        os.ftruncate(fd, fp.entry.size)
    return fd


def _ensure_dir(dest: Path, rel: str) -> None:
    """Make ``dest/rel`` a real directory, never following a symlink on the way: a
    symlink or file in the way of a directory the backup has is replaced."""
    current = dest
    for part in rel.split("/") if rel else []:
        current = current / part
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            current.mkdir()
            continue
        if not stat.S_ISDIR(st.st_mode):
            _remove(current)
            current.mkdir()


def _restore_symlink(dest: Path, entry: mf.Entry) -> None:
    path = dest / entry.path
    _ensure_dir(dest, entry.path.rpartition("/")[0])
    assert entry.target is not None
    if not (os.path.islink(path) and os.readlink(path) == entry.target):
        if os.path.lexists(path):
            _remove(path)
        os.symlink(entry.target, path)
    os.utime(path, ns=(entry.mtime_ns, entry.mtime_ns), follow_symlinks=False)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
