"""The backup manifest: what a backup holds, as human-readable YAML in the store.

The format is documented in ``schema/manifest.md``. Loading validates everything a
restore relies on (version, paths that stay inside the destination, the chunk layout), so
the rest of the engine can trust a :class:`Manifest`.
"""

import base64
import functools
import os
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple

from . import __version__
from .collector import collector_paused
from .defaults import MAX_CHUNK_SIZE, MIN_CHUNK_SIZE
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
_MODE_RE = re.compile(r"[0-7]{1,6}")
_TIME_RE = re.compile(r"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?Z")
_I64_MIN = -(1 << 63)
_U64_MAX = (1 << 64) - 1
MAX_FILE_SIZE = (1 << 63) - 1  # off_t
MAX_MANIFEST_BYTES = 2 << 30  # a 4 TB log in 1 MiB chunks is ~450 MB of manifest
MAX_ENTRIES = 10_000_000
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
    ctime_ns: int | None = None  # with inode, only for incremental backups' change checks
    appendonly: bool = False  # only ever appended to: restore trusts a matching prefix
    chunks: list[Chunk] = field(default_factory=list)

    def spans(self) -> list[tuple["Chunk", int]]:
        """Each chunk with its length (the next chunk's start, or the file's end)."""
        ends = [c.start for c in self.chunks[1:]] + [self.size]
        return [(c, end - c.start) for c, end in zip(self.chunks, ends, strict=False)]

    @property
    def data_size(self) -> int:
        """Bytes of the file held in data chunks (its apparent size less empty chunks).

        The size less the empty chunks' lengths: a loop that only looks at each chunk,
        where summing every chunk's span cost ~1.3 us a chunk (6 ms of each incremental
        backup of a 4 GiB log, every backup)."""
        chunks = self.chunks
        if not chunks:
            return 0
        empty = 0
        for index, chunk in enumerate(chunks):
            if chunk.digest is None:
                end = chunks[index + 1].start if index + 1 < len(chunks) else self.size
                empty += end - chunk.start
        return self.size - chunks[0].start - empty


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
    """A time written by :func:`format_time_ns`: nanoseconds since the epoch, within what
    a file system's 64-bit nanosecond times can hold."""
    match = _TIME_RE.fullmatch(text)
    if match is None:
        raise ManifestError(f"{where}: invalid time {_brief(text)}")
    try:
        base = datetime.strptime(match[1], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    except ValueError as exc:
        raise ManifestError(f"{where}: invalid time {text!r}") from exc
    ns = int(base.timestamp()) * 1_000_000_000 + int((match[2] or "0").ljust(9, "0"))
    if not _I64_MIN <= ns <= _U64_MAX:
        raise ManifestError(f"{where}: time {text} is beyond what a file system can hold")
    return ns


def check_relative_path(path: str, where: str) -> str:
    """Refuse paths that could escape the destination directory."""
    if not isinstance(path, str) or not path:
        raise ManifestError(f"{where}: empty or non-text path")
    if len(path) > 4096:
        raise ManifestError(f"{where}: path longer than 4096 characters")
    parts = path.split("/")
    if path.startswith("/") or "\0" in path or any(p in ("", ".", "..") for p in parts):
        raise ManifestError(f"{where}: unsafe path {path!r} (absolute, '..', or empty part)")
    return path


@functools.cache
def _yaml() -> tuple[Any, type[Any], type[Any]]:
    """PyYAML with pitreos's dumper and loader, imported on first use: most commands
    (``list``, ``--version``) read no manifest, and PyYAML costs ~17 ms of their start
    (``python -X importtime``).

    The loader is the safe one, but times stay text: the fields that hold times are
    parsed and checked by pitreos (PyYAML's timestamp constructor fails on '2026-1' with
    an AttributeError)."""
    import yaml

    class Loader(yaml.CSafeLoader):
        pass

    def time_as_text(loader: yaml.SafeLoader, node: yaml.Node) -> str:
        if not isinstance(node, yaml.ScalarNode):
            raise ValueError("a time that is not a plain value")
        return str(loader.construct_scalar(node))

    Loader.add_constructor("tag:yaml.org,2002:timestamp", time_as_text)
    return yaml, yaml.CSafeDumper, Loader


# Where a file's chunk list goes: PyYAML writes the rest, and this line of the files
# list (an entry's key, two spaces in; a scalar's continuation lines are indented four)
# is replaced by the list as a literal block. PyYAML's emitter scans every character of
# a block it writes: for a 4 GiB log's 4,433 chunks, 8.5 of the 11 ms that writing its
# manifest took, every backup (~2 s for a 1 TB log).
_CHUNKS_MARK = "pitreos-chunks"
_CHUNKS_LINE = f"  chunks: {_CHUNKS_MARK}\n"


def dump(manifest: Manifest) -> bytes:
    """Serialise a manifest to YAML."""
    files: list[dict[str, Any]] = []
    blocks: list[str] = []
    for e in manifest.entries:
        item: dict[str, Any] = {**_name_field("path", e.path), "type": e.type,
                                "mode": f"{e.mode:04o}"}
        item["mtime"] = format_time_ns(e.mtime_ns)
        if e.type == "symlink":
            assert e.target is not None
            item.update(_name_field("target", e.target))
        if e.type == "file":
            item["size"] = e.size
            if e.inode is not None:
                item["inode"] = e.inode
            if e.ctime_ns is not None:
                item["ctime"] = format_time_ns(e.ctime_ns)
            if e.appendonly:
                item["appendonly"] = True
            if e.chunks:  # one literal block a file: one YAML node, not one per chunk
                item["chunks"] = _CHUNKS_MARK
                blocks.append("".join(
                    f"    {c.start} {EMPTY_MARK}\n" if c.digest is None
                    else f"    {c.start} {c.digest.sha1} {c.digest.blake3}\n"
                    for c in e.chunks))
        files.append(item)
    doc: dict[str, Any] = {
        "pitreos_manifest": manifest.version,
        "name": manifest.name,
        "tool": manifest.tool,
        "created": manifest.created.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "tag": manifest.tag,
        "chunk_size": manifest.chunk_size,
        "meta": dict(manifest.meta),
    }
    yaml, dumper, _ = _yaml()

    def emit(data: Any) -> str:
        text: str = yaml.dump(data, Dumper=dumper, sort_keys=False,
                              default_flow_style=False, width=1 << 16)
        return text

    if not files:
        return (emit(doc) + "files: []\n").encode()
    parts = emit(files).split(_CHUNKS_LINE)
    body = [parts[0]]
    for block, after in zip(blocks, parts[1:], strict=True):
        body += ("  chunks: |\n", block, after)
    return (emit(doc) + "files:\n" + "".join(body)).encode()


def load(data: bytes, source: str) -> Manifest:
    """Parse and validate a manifest; ``source`` names it in errors.

    Every field is checked for its type and range here, so nothing that passes can
    fail later (in the catalog, a restore, a gc): a bad manifest is one error naming the
    manifest and the field. Anchors and aliases are refused (a few KiB of them expand to
    gigabytes), and so are manifests over ``MAX_MANIFEST_BYTES`` or ``MAX_ENTRIES``.
    """
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"manifest {source} is {len(data)} bytes, over the limit of "
                            f"{MAX_MANIFEST_BYTES}")
    yaml, _, loader = _yaml()
    try:
        # an anchor or an alias is a token of the stream, written with '&' or '*' (bytes
        # 0x26, 0x2a in UTF-8 and in UTF-16 alike): without those bytes there is none, and
        # the second pass is skipped (2.2 of the 17 ms that the bench's 5,000-chunk
        # manifest took to load)
        for event in yaml.parse(data, Loader=yaml.CSafeLoader) \
                if b"&" in data or b"*" in data else ():
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise ManifestError(f"manifest {source} uses YAML anchors or aliases, "
                                    "which pitreos never writes: refused")
        doc = yaml.load(data, Loader=loader)
    except ManifestError:
        raise
    except Exception as exc:  # PyYAML's constructors raise what they meet: the boundary
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ManifestError(f"manifest {source} does not parse: {first}") from exc
    if not isinstance(doc, dict) or "pitreos_manifest" not in doc:
        raise ManifestError(f"manifest {source} is not a pitreos manifest")
    if doc["pitreos_manifest"] != FORMAT_VERSION:
        raise ManifestError(
            f"manifest {source} has format version {doc['pitreos_manifest']!r}; "
            f"this pitreos reads version {FORMAT_VERSION}: upgrade pitreos"
        )
    # a million chunks: 2.9-3.0 s with the collector paused, 4.0-4.6 s without
    with collector_paused():
        return _from_doc(doc, f"manifest {source}")


def _brief(value: Any) -> str:
    """A value quoted in an error: whole when short, else its start, marked as cut."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:60]}... ({len(text)} characters)"


def _field(item: dict[str, Any], key: str, where: str) -> Any:
    if not isinstance(item, dict):
        raise ManifestError(f"{where}: expected a mapping, found {type(item).__name__}")
    if key not in item:
        raise ManifestError(f"{where}: field '{key}' is missing")
    return item[key]


def _name_field(key: str, name: str) -> dict[str, str]:
    """A file name as the manifest holds it: text when it is UTF-8 (nearly always), else
    its raw bytes in base64 under ``<key>_bytes`` (Linux names are any bytes but '/' and
    NUL; such a name comes from the OS as text with surrogate escapes)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return {f"{key}_bytes": base64.b64encode(os.fsencode(name)).decode()}
    return {key: name}


def _name(item: Any, key: str, where: str) -> str:
    """A file name written by :func:`_name_field`, back as the OS's text."""
    if isinstance(item, dict) and f"{key}_bytes" in item:
        raw = _text(item[f"{key}_bytes"], where, f"{key}_bytes")
        try:
            return os.fsdecode(base64.b64decode(raw, validate=True))
        except ValueError as exc:
            raise ManifestError(f"{where}: field '{key}_bytes' is not base64") from exc
    return _text(_field(item, key, where), where, key)


def _text(value: Any, where: str, key: str) -> str:
    if not isinstance(value, str):
        raise ManifestError(f"{where}: field '{key}' must be text, not {_brief(value)}")
    return value


def _whole(value: Any, where: str, key: str, low: int, high: int) -> int:
    if type(value) is not int:  # bool, float (.inf) and text are refused
        raise ManifestError(f"{where}: field '{key}' must be a whole number, not "
                            f"{_brief(value)}")
    if not low <= value <= high:
        raise ManifestError(f"{where}: field '{key}' is {value}, outside {low}..{high}")
    return int(value)


def _from_doc(doc: dict[str, Any], where: str) -> Manifest:
    chunk_size = _whole(_field(doc, "chunk_size", where), where, "chunk_size",
                        MIN_CHUNK_SIZE, MAX_CHUNK_SIZE)
    created_raw = _text(_field(doc, "created", where), where, "created")  # never a datetime:
    try:  # the loader keeps YAML timestamps as text
        created = datetime.fromisoformat(created_raw.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ManifestError(f"{where}: field 'created' is not a time: {created_raw!r}") from exc
    if created.tzinfo is None:
        raise ManifestError(f"{where}: field 'created' has no time zone")
    meta_raw = doc.get("meta") or {}
    if not isinstance(meta_raw, dict) or not all(
            isinstance(k, str) and isinstance(v, str | int | float | bool)
            for k, v in meta_raw.items()):
        raise ManifestError(f"{where}: field 'meta' must map names to plain values")
    meta = {k: str(v) for k, v in meta_raw.items()}
    items = _field(doc, "files", where) or []
    if not isinstance(items, list):
        raise ManifestError(f"{where}: field 'files' must be a list")
    if len(items) > MAX_ENTRIES:
        raise ManifestError(f"{where}: {len(items)} entries, over the limit of {MAX_ENTRIES}")
    tag = _text(_field(doc, "tag", where), where, "tag")
    if not _TAG_RE.fullmatch(tag):
        raise ManifestError(f"{where}: field 'tag' is not a valid tag: {_brief(tag)}")
    entries = [_entry(item, where, chunk_size) for item in items]
    seen: dict[str, EntryType] = {}
    for entry in entries:
        at = f"{where}, {entry.path}"
        if entry.path in seen:
            raise ManifestError(f"{at}: listed twice")
        parent = entry.path.rpartition("/")[0]
        while parent:
            if seen.get(parent) not in (None, "dir"):
                raise ManifestError(f"{at}: lies below {parent}, which is not a directory")
            parent = parent.rpartition("/")[0]
        seen[entry.path] = entry.type
    return Manifest(
        name=_text(_field(doc, "name", where), where, "name"), tag=tag, created=created,
        chunk_size=chunk_size, entries=entries, meta=meta,
        tool=_text(doc.get("tool", ""), where, "tool"),
        version=int(doc["pitreos_manifest"]),
    )


def _entry(item: Any, where: str, chunk_size: int) -> Entry:
    path = check_relative_path(_name(item, "path", where), where)
    at = f"{where}, {path}"
    if path == RESTORE_MARKER:
        raise ManifestError(f"{at}: this name is reserved for the marker of an unfinished "
                            "restore")
    kind = _field(item, "type", at)
    if kind not in ENTRY_TYPES:
        raise ManifestError(f"{at}: unknown type {_brief(kind)}")
    mode_text = _text(_field(item, "mode", at), at, "mode")
    if not _MODE_RE.fullmatch(mode_text) or int(mode_text, 8) > 0o7777:
        raise ManifestError(f"{at}: field 'mode' must be octal permission bits, not "
                            f"{_brief(mode_text)}")
    entry = Entry(path=path, type=kind, mode=int(mode_text, 8),
                  mtime_ns=parse_time_ns(_text(_field(item, "mtime", at), at, "mtime"), at))
    if kind == "symlink":
        entry.target = _name(item, "target", at)
        if not entry.target or "\0" in entry.target:
            raise ManifestError(f"{at}: empty or invalid symlink target")
    elif kind == "file":
        entry.size = _whole(_field(item, "size", at), at, "size", 0, MAX_FILE_SIZE)
        inode = item.get("inode")
        entry.inode = None if inode is None else _whole(inode, at, "inode", 0, _U64_MAX)
        ctime = item.get("ctime")
        entry.ctime_ns = None if ctime is None else parse_time_ns(_text(ctime, at, "ctime"), at)
        appendonly = item.get("appendonly", False)
        if not isinstance(appendonly, bool):
            raise ManifestError(f"{at}: field 'appendonly' must be true or false")
        entry.appendonly = appendonly
        chunks = item.get("chunks") or ""
        if not isinstance(chunks, str | list):
            raise ManifestError(f"{at}: field 'chunks' must be text")
        entry.chunks = _parse_chunks(chunks, entry.size, chunk_size, at)
    return entry


_CHUNK_BLOCK_CHARS = b"0123456789abcdef -\n"  # all a block as pitreos writes it holds
_DIGESTS_LENGTH = 40 + 1 + 64  # "sha1 blake3"
# a block is checked and split into lines this many characters at a time (~9,000
# lines): a million chunks' lines split at once held 167 MiB beside the records
_SLICE_CHARS = 1 << 20


def _chunks_as_written(block: str, size: int, chunk_size: int,
                       slice_chars: int = _SLICE_CHARS) -> list[Chunk] | None:
    """The chunks of a block exactly as pitreos writes it (decimal starts without
    leading zeros, lowercase hex, one space apart), or None for anything else, which the
    line-by-line parser then accepts or rejects with the reason.

    Twice as fast as a regular expression a line (5,125 lines: 5.3 against 10.5 ms,
    tools' small set), and it is the in-place restore's largest share of the GIL: one
    check of each slice's characters (``bytes.translate``, in C), then per line only
    string comparisons and slices. Chunks are built with ``tuple.__new__``: a NamedTuple's
    own ``__new__`` is a Python call. Slices of ``slice_chars`` (cut after a newline)
    keep the copies and the split lines of a large block small: a manifest of 1,000,000
    chunks peaked at 818 MiB with the block split whole."""
    # "\n" is the only line break a block that passes the check below holds
    lines = block.count("\n") + (1 if block and not block.endswith("\n") else 0)
    if lines != -(-size // chunk_size):
        return None
    chunks: list[Chunk] = []
    append = chunks.append
    new = tuple.__new__
    start = 0
    at = 0
    while at < len(block):
        cut = block.find("\n", at + slice_chars - 1)
        cut = len(block) if cut < 0 else cut + 1
        piece, at = block[at:cut], cut
        try:
            if piece.encode("ascii").translate(None, _CHUNK_BLOCK_CHARS):
                return None
        except UnicodeEncodeError:
            return None
        for line in piece.splitlines():
            written_start, _, rest = line.partition(" ")
            if written_start != str(start):
                return None
            if rest == EMPTY_MARK:
                append(new(Chunk, (start, None)))
            elif len(rest) == _DIGESTS_LENGTH and rest[40] == " " \
                    and rest.count(" ") == 1 and EMPTY_MARK not in rest:
                append(new(Chunk, (start, new(ChunkDigest, (rest[:40], rest[41:])))))
            else:
                return None
            start += chunk_size
    return chunks


def _parse_chunks(block: str | list[str], size: int, chunk_size: int,
                  where: str) -> list[Chunk]:
    """Chunk lines, from a literal block (what pitreos writes) or a YAML list."""
    if isinstance(block, str):
        written = _chunks_as_written(block, size, chunk_size)
        if written is not None:
            return written
    # anything else, and the messages saying what is wrong: line by line
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
