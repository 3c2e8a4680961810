"""What changed between two backups, from their manifests alone (no blob is read):
files added, removed, changed (with the chunks and bytes that differ), as ``restic
diff`` shows it."""

from dataclasses import dataclass
from typing import Literal

from . import manifest as mf

ChangeKind = Literal["added", "removed", "changed", "type", "metadata"]


@dataclass(frozen=True, slots=True)
class Change:
    path: str
    kind: ChangeKind
    chunks: int = 0  # chunks whose content differs (for files)
    bytes: int = 0  # bytes in those chunks (of the newer backup, or the older one gone)


def diff_manifests(old: mf.Manifest, new: mf.Manifest) -> list[Change]:
    """The changes from ``old`` to ``new``, by path."""
    before = {e.path: e for e in old.entries}
    after = {e.path: e for e in new.entries}
    changes: list[Change] = []
    for path in sorted(before.keys() | after.keys()):
        a, b = before.get(path), after.get(path)
        if a is None:
            assert b is not None
            changes.append(Change(path, "added", len(_data(b)), b.data_size))
        elif b is None:
            changes.append(Change(path, "removed", len(_data(a)), a.data_size))
        elif a.type != b.type:
            changes.append(Change(path, "type"))
        elif a.type == "file":
            change = _file_change(a, b, old.chunk_size, new.chunk_size)
            if change is not None:
                changes.append(change)
        elif a.target != b.target:
            changes.append(Change(path, "changed"))
        elif (a.mode, a.mtime_ns) != (b.mode, b.mtime_ns):
            changes.append(Change(path, "metadata"))
    return changes


def _data(entry: mf.Entry) -> list[mf.Chunk]:
    return [c for c in entry.chunks if c.digest is not None]


def _file_change(a: mf.Entry, b: mf.Entry, a_step: int, b_step: int) -> Change | None:
    if a_step != b_step:  # chunk boundaries differ: only whole-file equality is known
        same = a.size == b.size and [c.digest for c in a.chunks] == [c.digest for c in b.chunks]
        return None if same else Change(b.path, "changed", len(_data(b)), b.data_size)
    chunks = changed_bytes = 0
    for index in range(max(len(a.chunks), len(b.chunks))):
        da = a.chunks[index].digest if index < len(a.chunks) else None
        db = b.chunks[index].digest if index < len(b.chunks) else None
        if da != db or (index < len(a.chunks)) != (index < len(b.chunks)):
            chunks += 1
            entry, size = (b, b.size) if index < len(b.chunks) else (a, a.size)
            changed_bytes += mf.chunk_length(size, b_step, index) if entry is b else \
                mf.chunk_length(size, a_step, index)
    if chunks or a.size != b.size:
        return Change(b.path, "changed", chunks, changed_bytes)
    if (a.mode, a.mtime_ns) != (b.mode, b.mtime_ns):
        return Change(b.path, "metadata")
    return None
