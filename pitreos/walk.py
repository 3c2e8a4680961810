"""Scanning the directory to back up, and matching paths against globs."""

import os
import re
import stat
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .errors import PitreosError, UsageError
from .log import get_logger
from .manifest import RESTORE_MARKER, EntryType

log = get_logger(__name__)

# Left behind in a destination while a restore runs; never backed up or deleted.



@dataclass(frozen=True, slots=True)
class SourceEntry:
    path: str  # relative, '/'-separated
    abspath: str
    type: EntryType
    st: os.stat_result


@lru_cache(maxsize=256)
def _glob_regex(pattern: str) -> re.Pattern[str]:
    """``**`` matches any number of path parts, ``*`` and ``?`` stay inside one part."""
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


def glob_match(path: str, pattern: str) -> bool:
    """Whether ``path`` matches ``pattern`` or lies below a directory that does."""
    regex = _glob_regex(pattern.strip("/"))
    parts = path.split("/")
    return any(regex.fullmatch("/".join(parts[:n])) for n in range(len(parts), 0, -1))


@dataclass(frozen=True)
class PathFilter:
    """``--include`` / ``--exclude``: a path is kept when it matches an include (or there
    are none) and no exclude; the directories above a kept path are kept too."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def excludes(self, path: str) -> bool:
        return any(glob_match(path, p) for p in self.exclude)

    def includes(self, path: str) -> bool:
        return not self.include or any(glob_match(path, p) for p in self.include)

    def apply(self, paths: list[str]) -> set[str]:
        """The subset of ``paths`` (parents listed before children) that is kept."""
        kept = {p for p in paths if not self.excludes(p) and self.includes(p)}
        for path in list(kept):
            parent = path.rpartition("/")[0]
            while parent and parent not in kept:
                kept.add(parent)
                parent = parent.rpartition("/")[0]
        return kept

    def unused(self, paths: list[str], excluded: list[str] | None = None) -> list[str]:
        """Patterns that matched nothing (to warn about typos): includes are checked
        against ``paths``, excludes against ``excluded`` when given, else ``paths``."""
        against_excludes = paths if excluded is None else excluded
        return [p for p in self.include if not any(glob_match(x, p) for x in paths)] + [
            p for p in self.exclude if not any(glob_match(x, p) for x in against_excludes)]


@dataclass
class ScanResult:
    entries: list[SourceEntry]
    excluded: list[str]  # paths left out by an exclude pattern (not descended into)


def check_source_dir(source: Path) -> None:
    """Raise a usage error unless ``source`` is a readable directory."""
    try:
        st = os.stat(source)
    except FileNotFoundError as exc:
        raise UsageError(f"directory {source} does not exist") from exc
    except OSError as exc:
        raise UsageError(f"cannot read directory {source}: {exc.strerror}") from exc
    if not stat.S_ISDIR(st.st_mode):
        raise UsageError(f"{source} is not a directory")
    if not os.access(source, os.R_OK | os.X_OK):
        raise UsageError(f"cannot read directory {source}: permission denied")


def scan(source: Path, path_filter: PathFilter | None = None) -> ScanResult:
    """Every directory, regular file and symlink below ``source``, parents first.

    Symlinks are recorded, never followed. Other kinds (sockets, FIFOs, devices) are
    reported and skipped. An unreadable directory is an error: a backup that silently
    misses part of a node is worse than none.
    """
    check_source_dir(source)
    path_filter = path_filter or PathFilter()
    result = ScanResult([], [])
    _scan_dir(str(source), "", path_filter, result)
    if path_filter.include:
        kept = path_filter.apply([e.path for e in result.entries])
        result.entries = [e for e in result.entries if e.path in kept]
    return result


def _scan_dir(abs_dir: str, rel_dir: str, path_filter: PathFilter,
              result: ScanResult) -> None:
    try:
        with os.scandir(abs_dir) as it:
            children = sorted(it, key=lambda d: d.name)
    except OSError as exc:
        raise PitreosError(f"cannot read directory {abs_dir}: {exc.strerror}") from exc
    for child in children:
        rel = f"{rel_dir}/{child.name}" if rel_dir else child.name
        if rel == RESTORE_MARKER:
            continue
        if path_filter.excludes(rel):
            result.excluded.append(rel)
            continue
        try:
            st = child.stat(follow_symlinks=False)
        except FileNotFoundError:  # removed while scanning
            continue
        if stat.S_ISDIR(st.st_mode):
            result.entries.append(SourceEntry(rel, child.path, "dir", st))
            _scan_dir(child.path, rel, path_filter, result)
        elif stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
            kind: EntryType = "file" if stat.S_ISREG(st.st_mode) else "symlink"
            result.entries.append(SourceEntry(rel, child.path, kind, st))
        else:
            log.warning("backup.skipped_special_file", path=child.path,
                        kind=_kind_name(st.st_mode))


def _kind_name(mode: int) -> str:
    for test, name in ((stat.S_ISSOCK, "socket"), (stat.S_ISFIFO, "fifo"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device")):
        if test(mode):
            return name
    return "unknown"
