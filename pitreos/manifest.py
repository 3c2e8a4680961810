"""The backup manifest: what a backup holds, as human-readable YAML in the store.

The format is documented in ``schema/manifest.md``. Loading validates everything a
restore relies on (version, paths that stay inside the destination, the chunk layout), so
the rest of the engine can trust a :class:`Manifest`.
"""

import re
import stat
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple

import yaml

from . import __version__
from .errors import ManifestError, UsageError
from .hashing import ChunkDigest

FORMAT_VERSION = 1
EntryType = Literal["file", "dir", "symlink"]
ENTRY_TYPES: tuple[EntryType, ...] = ("file", "dir", "symlink")

_TAG_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_META_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,62}")
_CHUNK_LINE_RE = re.compile(r"(\d+) (?:(-)|([0-9a-f]{40}) ([0-9a-f]{64}))")
_NAME_TIME_FORMAT = "%Y-%m-%dT%H-%M-%SZ"
EMPTY_MARK = "-"
RESTORE_MARKER = ".pitreos-restore"  # in a destination while a restore is unfinished


class Chunk(NamedTuple):
    """One fixed-size slice of a file; ``digest`` is None for a hole or all-zero chunk."""

    start: int
    digest: ChunkDigest | None


@dataclass(slots=True)
class Entry:
    """A file, directory or symlink, by its path relative to the backed-up directory."""

    path: str
    type: EntryType
    mode: int
    mtime_ns: int
    size: int = 0
    target: str | None = None
    inode: int | None = None
    appendonly: bool = False  # only ever appended to: restore trusts a matching prefix
    chunks: list[Chunk] = field(default_factory=list)

    @property
    def data_size(self) -> int:
        """Bytes of the file held in data chunks (its apparent size less empty chunks)."""
        if not self.chunks:
            return 0
        ends = [c.start for c in self.chunks[1:]] + [self.size]
        pairs = zip(self.chunks, ends, strict=True)
        return sum(end - c.start for c, end in pairs if c.digest is not None)


@dataclass(slots=True)
class Manifest:
    name: str
    tag: str
    created: datetime
    chunk_size: int
    entries: list[Entry]
    meta: dict[str, str] = field(default_factory=dict)
    tool: str = f"pitreos {__version__}"
    version: int = FORMAT_VERSION

    def files(self) -> list[Entry]:
        return [e for e in self.entries if e.type == "file"]

    def digests(self) -> set[ChunkDigest]:
        return {c.digest for e in self.entries for c in e.chunks if c.digest is not None}


def chunk_length(size: int, chunk_size: int, index: int) -> int:
    """Bytes in chunk ``index`` of a file of ``size`` bytes: only the last may be short."""
    return min(chunk_size, size - index * chunk_size)


def validate_tag(tag: str) -> str:
    if not _TAG_RE.fullmatch(tag) or "--" in tag:
        raise UsageError(
            f"invalid tag {tag!r}: use 1-63 letters, digits, '.', '_' or '-' "
            "(starting with a letter or digit, no '--')"
        )
    return tag


def validate_meta_key(key: str) -> str:
    if not _META_KEY_RE.fullmatch(key):
        raise UsageError(f"invalid metadata key {key!r}: use letters, digits, '_', '.', '-'")
    return key


def backup_name(created: datetime, tag: str) -> str:
    """Names sort by time and read well: ``2026-11-26T02-00-00Z--standard``."""
    return f"{created.astimezone(UTC).strftime(_NAME_TIME_FORMAT)}--{tag}"


def format_time_ns(ns: int) -> str:
    seconds, frac = divmod(ns, 1_000_000_000)
    base = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{frac:09d}Z"


def parse_time_ns(text: str, where: str) -> int:
    try:
        base, _, frac = text.rstrip("Z").partition(".")
        seconds = int(datetime.strptime(base, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp())
        return seconds * 1_000_000_000 + int((frac or "0").ljust(9, "0")[:9])
    except ValueError as exc:
        raise ManifestError(f"{where}: invalid time {text!r}") from exc


def check_relative_path(path: str, where: str) -> str:
    """Refuse paths that could escape the destination directory."""
    if not isinstance(path, str) or not path:
        raise ManifestError(f"{where}: empty or non-text path")
    parts = path.split("/")
    if path.startswith("/") or "\0" in path or any(p in ("", ".", "..") for p in parts):
        raise ManifestError(f"{where}: unsafe path {path!r} (absolute, '..', or empty part)")
    return path


class _Block(str):
    """A string written as a YAML literal block (``|``)."""


class _Dumper(yaml.CSafeDumper):
    pass


_Dumper.add_representer(
    _Block, lambda dumper, text: dumper.represent_scalar("tag:yaml.org,2002:str", str(text),
                                                        style="|"))


def dump(manifest: Manifest) -> bytes:
    """Serialise a manifest to YAML."""
    files: list[dict[str, Any]] = []
    for e in manifest.entries:
        item: dict[str, Any] = {"path": e.path, "type": e.type, "mode": f"{e.mode:04o}"}
        item["mtime"] = format_time_ns(e.mtime_ns)
        if e.type == "symlink":
            item["target"] = e.target
        if e.type == "file":
            item["size"] = e.size
            if e.inode is not None:
                item["inode"] = e.inode
            if e.appendonly:
                item["appendonly"] = True
            if e.chunks:  # one literal block a file: one YAML node, not one per chunk
                item["chunks"] = _Block("".join(
                    f"{c.start} {EMPTY_MARK}\n" if c.digest is None
                    else f"{c.start} {c.digest.sha1} {c.digest.blake3}\n" for c in e.chunks))
        files.append(item)
    doc: dict[str, Any] = {
        "pitreos_manifest": manifest.version,
        "name": manifest.name,
        "tool": manifest.tool,
        "created": manifest.created.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "tag": manifest.tag,
        "chunk_size": manifest.chunk_size,
        "meta": dict(manifest.meta),
        "files": files,
    }
    text = yaml.dump(
        doc, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=1 << 16
    )
    return text.encode()


def load(data: bytes, source: str) -> Manifest:
    """Parse and validate a manifest; ``source`` names it in errors."""
    try:
        doc = yaml.load(data, Loader=yaml.CSafeLoader)
    except yaml.YAMLError as exc:
        raise ManifestError(f"manifest {source} does not parse: {exc}".splitlines()[0]) from exc
    if not isinstance(doc, dict) or "pitreos_manifest" not in doc:
        raise ManifestError(f"manifest {source} is not a pitreos manifest")
    if doc["pitreos_manifest"] != FORMAT_VERSION:
        raise ManifestError(
            f"manifest {source} has format version {doc['pitreos_manifest']!r}; "
            f"this pitreos reads version {FORMAT_VERSION}: upgrade pitreos"
        )
    try:
        return _from_doc(doc, source)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ManifestError(f"manifest {source} is malformed: {exc!r}") from exc


def _from_doc(doc: dict[str, Any], source: str) -> Manifest:
    chunk_size = int(doc["chunk_size"])
    if chunk_size <= 0:
        raise ManifestError(f"manifest {source}: chunk_size must be positive")
    created = datetime.fromisoformat(str(doc["created"]).replace("Z", "+00:00"))
    meta = {str(k): str(v) for k, v in (doc.get("meta") or {}).items()}
    entries: list[Entry] = []
    seen: dict[str, EntryType] = {}
    for item in doc["files"] or []:
        path = check_relative_path(item["path"], f"manifest {source}")
        where = f"manifest {source}, {path}"
        if path == RESTORE_MARKER:
            raise ManifestError(f"{where}: this name is reserved for the marker of an "
                                "unfinished restore")
        kind = item["type"]
        if kind not in ENTRY_TYPES:
            raise ManifestError(f"{where}: unknown type {kind!r}")
        if path in seen:
            raise ManifestError(f"{where}: listed twice")
        parent = path.rpartition("/")[0]
        while parent:
            if seen.get(parent) not in (None, "dir"):
                raise ManifestError(f"{where}: lies below {parent}, which is not a directory")
            parent = parent.rpartition("/")[0]
        seen[path] = kind
        entry = Entry(
            path=path,
            type=kind,
            mode=stat.S_IMODE(int(str(item["mode"]), 8)),
            mtime_ns=parse_time_ns(str(item["mtime"]), where),
        )
        if kind == "symlink":
            entry.target = str(item["target"])
        elif kind == "file":
            entry.size = int(item["size"])
            if entry.size < 0:
                raise ManifestError(f"{where}: negative size {entry.size}")
            entry.inode = int(item["inode"]) if item.get("inode") is not None else None
            entry.appendonly = item.get("appendonly", False) is True
            entry.chunks = _parse_chunks(item.get("chunks") or "", entry.size, chunk_size, where)
        entries.append(entry)
    return Manifest(
        name=str(doc["name"]),
        tag=str(doc["tag"]),
        created=created,
        chunk_size=chunk_size,
        entries=entries,
        meta=meta,
        tool=str(doc.get("tool", "")),
        version=int(doc["pitreos_manifest"]),
    )


def _parse_chunks(block: str | list[str], size: int, chunk_size: int,
                  where: str) -> list[Chunk]:
    """Chunk lines, from a literal block (what pitreos writes) or a YAML list."""
    lines = block.splitlines() if isinstance(block, str) else block
    expected = -(-size // chunk_size)
    if len(lines) != expected:
        raise ManifestError(f"{where}: {len(lines)} chunks listed, size needs {expected}")
    chunks: list[Chunk] = []
    match = _CHUNK_LINE_RE.fullmatch
    for index, line in enumerate(lines):
        found = match(line) if isinstance(line, str) else None
        if found is None:
            raise ManifestError(f"{where}: malformed chunk line {line!r}")
        start = int(found[1])
        if start != index * chunk_size:
            raise ManifestError(f"{where}: chunk {index} starts at {start}, expected "
                                f"{index * chunk_size}")
        chunks.append(Chunk(start, None if found[2] else ChunkDigest(found[3], found[4])))
    return chunks
