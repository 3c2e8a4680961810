"""Prints of chunk lists (pitreos.chunkprints): equal prints exactly when the prefixes
are equal, however the pass is cut; and what a sync may copy from the backup before."""

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pitreos import chunkprints
from pitreos.catalog import CopiedChunks
from pitreos.chunkprints import RepeatedChunks, prefix_prints
from pitreos.hashing import ChunkDigest
from pitreos.manifest import Chunk, Entry, Manifest, backup_name

CHUNK = 1 << 20
# few distinct values, so that equal and nearly equal lists are common
_SHA1S = ["a" * 40, "b" * 40, "0" * 39 + "1"]
_BLAKE3S = ["c" * 64, "d" * 64]
digests = st.one_of(st.none(), st.builds(ChunkDigest, st.sampled_from(_SHA1S),
                                         st.sampled_from(_BLAKE3S)))


def chunks_of(listed: Sequence[ChunkDigest | None]) -> list[Chunk]:
    return [Chunk(i * CHUNK, d) for i, d in enumerate(listed)]


@settings(max_examples=400, deadline=2000, suppress_health_check=list(HealthCheck))
@given(st.lists(digests, min_size=1, max_size=12), st.lists(digests, min_size=1, max_size=12),
       st.data())
def test_prints_are_equal_exactly_when_the_prefixes_are(
        first: list[ChunkDigest | None], second: list[ChunkDigest | None],
        data: st.DataObject) -> None:
    step = data.draw(st.integers(1, 4), label="chunks hashed at once")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(chunkprints, "_CHUNKS_A_STEP", step)
        a = prefix_prints(chunks_of(first), range(1, len(first) + 1))
        # the other list's pass stops elsewhere: a print must not depend on where
        stops = data.draw(st.sets(st.integers(1, len(second)), min_size=1), label="stops")
        b = prefix_prints(chunks_of(second), stops)
    assert set(b) == stops
    for n in stops:
        if n in a:
            assert (a[n] == b[n]) == (first[:n] == second[:n]), n


def test_a_list_whose_sha1s_repeat_with_another_blake3_prints_otherwise() -> None:
    one = [ChunkDigest("a" * 40, "c" * 64), None]
    other = [ChunkDigest("a" * 40, "d" * 64), None]
    assert prefix_prints(chunks_of(one), [1, 2]) != prefix_prints(chunks_of(other), [1, 2])


def test_no_prefix_outside_the_list() -> None:
    with pytest.raises(ValueError, match="no prefix of 3 chunks in a list of 2"):
        prefix_prints(chunks_of([None, None]), [3])


def _backup(hour: int, tag: str, files: Mapping[str, Sequence[ChunkDigest | None]],
            chunk_size: int = CHUNK) -> Manifest:
    created = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(hours=hour)
    return Manifest(name=backup_name(created, tag), tag=tag, created=created,
                    chunk_size=chunk_size, entries=[
                        Entry(path=path, type="file", mode=0o644, mtime_ns=0,
                              size=len(listed) * chunk_size,
                              chunks=[Chunk(i * chunk_size, d) for i, d in enumerate(listed)])
                        for path, listed in files.items()])


def _digest(n: int) -> ChunkDigest:
    return ChunkDigest(f"{n:040x}", f"{n:064x}")


def test_a_sync_copies_what_the_backup_before_it_repeats() -> None:
    log = [_digest(n) for n in range(6)]
    state = [_digest(100), None, _digest(101), None]
    first = _backup(0, "node", {"blocks.log": log, "state.bin": state, "same.bin": [None]})
    repeated = RepeatedChunks()
    copied, prints = repeated.compare(first, keep=True)
    assert copied == {}  # nothing before it
    assert {key[1] for key in prints} == {"blocks.log", "state.bin", "same.bin"}
    repeated.remember(prints)
    # the log grew (its last chunk, partial, changed), the state changed inside, and
    # the third file did not change
    grown = [*log[:-1], _digest(6), _digest(7)]
    changed = [_digest(100), _digest(102), _digest(101), None]
    second = _backup(1, "node", {"blocks.log": grown, "state.bin": changed,
                                 "same.bin": [None]})
    copied, _ = repeated.compare(second, keep=False)
    assert copied == {"blocks.log": CopiedChunks(first.name, "blocks.log", range(5)),
                      "same.bin": CopiedChunks(first.name, "same.bin", range(1))}
    # another tag, or another chunk size, builds on nothing of this one
    other_tag = _backup(1, "other", {"blocks.log": log})
    other_size = _backup(1, "node", {"blocks.log": log}, chunk_size=2 * CHUNK)
    for manifest in (other_tag, other_size):
        assert repeated.compare(manifest, keep=False) == ({}, {})


def test_only_a_backup_that_a_later_one_may_build_on_is_printed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    passes: list[set[int]] = []
    real = chunkprints.prefix_prints

    def counted(chunks: list[Chunk], lengths: set[int]) -> dict[int, bytes]:
        passes.append(set(lengths))
        return real(chunks, lengths)

    monkeypatch.setattr(chunkprints, "prefix_prints", counted)
    repeated = RepeatedChunks()
    assert repeated.compare(_backup(0, "node", {"f": [_digest(1)] * 3}), keep=False) == ({}, {})
    assert passes == []  # nothing before it, nothing after it of its tag
    copied, prints = repeated.compare(_backup(0, "node", {"f": [_digest(1)] * 3}), keep=True)
    assert passes == [{2, 3}] and len(prints) == 1 and copied == {}
