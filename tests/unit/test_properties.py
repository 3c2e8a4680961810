"""Property tests: the manifest round-trips, and is written as PyYAML would write it;
zero-block detection matches a plain scan; the chunks found to hold data are those an
extent meets; a plan sums chunk sizes right, and an entry its data."""

from datetime import UTC, datetime
from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from pitreos import manifest as mf
from pitreos.defaults import MIN_CHUNK_SIZE
from pitreos.hashing import ChunkDigest
from pitreos.restore.plan import FilePlan
from pitreos.sparse import BLOCK_SIZE, chunks_with_data, nonzero_runs

hexes = st.text("0123456789abcdef", min_size=1, max_size=1)
sha1s = st.text("0123456789abcdef", min_size=40, max_size=40)
blake3s = st.text("0123456789abcdef", min_size=64, max_size=64)
names = st.text(st.characters(blacklist_characters="/\0", blacklist_categories=["Cs"]),
                min_size=1, max_size=20).filter(
                    # the restore marker's name is reserved: a manifest naming it is refused
                    lambda s: s not in (".", "..", mf.RESTORE_MARKER))


@st.composite
def entries(draw: st.DrawFn) -> list[mf.Entry]:
    chunk_size = MIN_CHUNK_SIZE
    out: list[mf.Entry] = []
    for name in sorted(draw(st.sets(names, max_size=5))):
        kind = draw(st.sampled_from(mf.ENTRY_TYPES))
        entry = mf.Entry(path=name, type=kind, mode=draw(st.integers(0, 0o7777)),
                         mtime_ns=draw(st.integers(-(2**63), 2**64 - 1)))
        if kind == "symlink":
            entry.target = draw(st.text(min_size=1, max_size=30).filter(
                lambda t: "\0" not in t and t.isprintable()))
        if kind == "file":
            entry.size = draw(st.integers(0, 5 * chunk_size))
            entry.inode = draw(st.none() | st.integers(0, 2**63))
            entry.ctime_ns = draw(st.none() | st.integers(-(2**63), 2**64 - 1))
            count = -(-entry.size // chunk_size)
            entry.chunks = [
                mf.Chunk(i * chunk_size, draw(st.none() | st.builds(ChunkDigest, sha1s, blake3s)))
                for i in range(count)
            ]
        out.append(entry)
    return out


@settings(max_examples=150, deadline=None)
@given(entries(), st.dictionaries(st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True),
                                  st.text(max_size=20), max_size=4))
def test_manifest_round_trip(items: list[mf.Entry], meta: dict[str, str]) -> None:
    created = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)
    m = mf.Manifest(name=mf.backup_name(created, "standard"), tag="standard",
                    created=created, chunk_size=MIN_CHUNK_SIZE, entries=items,
                    meta=meta)
    loaded = mf.load(mf.dump(m), "test")
    assert loaded == m


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(1, 3 * BLOCK_SIZE)), max_size=12))
def test_nonzero_runs_cover_exactly_the_nonzero_blocks(parts: list[tuple[bool, int]]) -> None:
    data = b"".join((b"\x01" if filled else b"\0") * n for filled, n in parts)
    runs = list(nonzero_runs(data))
    covered = bytearray(len(data))
    for start, end in runs:
        assert start % BLOCK_SIZE == 0 and (end % BLOCK_SIZE == 0 or end == len(data))
        covered[start:end] = b"\x01" * (end - start)
    for block in range(0, len(data), BLOCK_SIZE):
        nonzero = any(data[block:block + BLOCK_SIZE])
        assert bool(covered[block]) == nonzero


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 40), max_size=12), st.integers(0, 60), st.integers(1, 7))
def test_chunks_with_data_are_the_chunks_an_extent_meets(bounds: list[int], size: int,
                                                         step: int) -> None:
    points = sorted(set(bounds))
    extents = [(a, b) for a, b in zip(points[::2], points[1::2], strict=False)]
    expected = {i for i in range(-(-size // step))
                for a, b in extents if a < min((i + 1) * step, size) and b > i * step}
    assert chunks_with_data(extents, size, step) == expected


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 70), st.integers(0, 600), st.data())
def test_the_bytes_of_chunks_are_the_sum_of_their_lengths(step: int, size: int,
                                                          data: st.DataObject) -> None:
    count = -(-size // step)
    chunks = data.draw(st.lists(st.integers(0, max(0, count - 1)), unique=True,
                                max_size=count))
    entry = mf.Entry(path="f", type="file", mode=0o644, mtime_ns=0, size=size)
    assert FilePlan(entry, None).bytes_of(chunks, step) == sum(
        mf.chunk_length(size, step, i) for i in chunks)


# names that hold the line dump() puts a chunk list in place of, in the ways a scalar
# can carry a line of its own
_MARK = "chunks: pitreos-chunks"
hostile = st.sampled_from([f"x\n  {_MARK}\ny", f"x\n{_MARK}", f"  {_MARK}", _MARK,
                           f"a\n\n  {_MARK}\n", f"'\n  {_MARK}\n'", "pitreos-chunks"])


class _Literal(str):
    """The reference below writes these as literal blocks."""


def _reference_dump(m: mf.Manifest) -> bytes:
    """The manifest as PyYAML itself writes it, chunk lists as literal blocks: what
    :func:`pitreos.manifest.dump` writes faster."""
    class Dumper(yaml.CSafeDumper):
        pass

    Dumper.add_representer(_Literal, lambda d, text: d.represent_scalar(
        "tag:yaml.org,2002:str", str(text), style="|"))
    files: list[dict[str, Any]] = []
    for e in m.entries:
        # the fields of schema/manifest.md, in its order (the names here are all UTF-8)
        row: dict[str, Any] = {"path": e.path, "type": e.type,
                               "mode": f"{e.mode:04o}", "mtime": mf.format_time_ns(e.mtime_ns)}
        if e.type == "symlink":
            assert e.target is not None
            row["target"] = e.target
        if e.type == "file":
            row["size"] = e.size
            if e.inode is not None:
                row["inode"] = e.inode
            if e.ctime_ns is not None:
                row["ctime"] = mf.format_time_ns(e.ctime_ns)
            if e.appendonly:
                row["appendonly"] = True
            if e.chunks:
                row["chunks"] = _Literal("".join(
                    f"{c.start} -\n" if c.digest is None
                    else f"{c.start} {c.digest.sha1} {c.digest.blake3}\n" for c in e.chunks))
        files.append(row)
    doc = {"pitreos_manifest": m.version, "name": m.name, "tool": m.tool,
           "created": m.created.isoformat().replace("+00:00", "Z"), "tag": m.tag,
           "chunk_size": m.chunk_size, "meta": m.meta, "files": files}
    text: str = yaml.dump(doc, Dumper=Dumper, sort_keys=False, default_flow_style=False,
                          width=1 << 16)
    return text.encode()


@settings(max_examples=200, deadline=None)
@given(entries(), st.lists(hostile, unique=True, max_size=3), st.booleans(),
       st.dictionaries(st.sampled_from(["chunks", "files", "a"]), hostile | st.text(max_size=9),
                       max_size=3))
def test_a_manifest_is_written_as_pyyaml_writes_it(items: list[mf.Entry], odd: list[str],
                                                   appended: bool,
                                                   meta: dict[str, str]) -> None:
    for name in odd:
        if all(e.path != name for e in items):
            items.append(mf.Entry(path=name, type="file", mode=0o644, mtime_ns=0,
                                  size=10, appendonly=appended,
                                  chunks=[mf.Chunk(0, ChunkDigest("a" * 40, "b" * 64))]))
    created = datetime(2026, 11, 26, 2, 0, 0, 123456, tzinfo=UTC)
    m = mf.Manifest(name=mf.backup_name(created, "t"), tag="t", created=created,
                    chunk_size=MIN_CHUNK_SIZE, entries=items, meta=meta)
    assert mf.dump(m) == _reference_dump(m)
    assert mf.load(mf.dump(m), "test") == m


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 70), st.integers(0, 600), st.data())
def test_the_data_of_an_entry_is_the_sum_of_its_data_spans(step: int, size: int,
                                                          data: st.DataObject) -> None:
    count = -(-size // step)
    digest = ChunkDigest("a" * 40, "b" * 64)
    entry = mf.Entry(path="f", type="file", mode=0o644, mtime_ns=0, size=size,
                     chunks=[mf.Chunk(i * step, data.draw(st.sampled_from([None, digest])))
                             for i in range(count)])
    assert entry.data_size == sum(length for c, length in entry.spans()
                                  if c.digest is not None)
