"""Hand-made manifests (tests/data/manifests/): every bad value is refused when loading,
in one error naming the manifest and the field, fast, whatever the YAML tries."""

import contextlib
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pitreos import manifest as mf
from pitreos.errors import ManifestError

MANIFESTS = Path(__file__).resolve().parents[1] / "data" / "manifests"

BAD = {
    "size-inf": "field 'size' must be a whole number",
    "size-negative": "field 'size' is -5",
    "size-huge": "field 'chunk_size' is 4611686018427387904",
    "mode-negative": "field 'mode' must be octal",
    "created-month-13": "field 'created' is not a time",
    "timestamp-tag": "field 'created' is not a time",
    "int-tag": "does not parse",
    "inode-huge": "field 'inode' is 100000000000000000000000000",
    "mtime-year-9999": "beyond what a file system can hold",
    "ctime-a-number": "field 'ctime' must be text",
    "meta-nested": "field 'meta' must map names to plain values",
    "files-not-a-list": "field 'files' must be a list",
    "marker-entry": "reserved for the marker",
    "path-escapes": "unsafe path",
    "yaml-bomb": "anchors or aliases",
}


def test_the_good_one_loads() -> None:
    manifest = mf.load((MANIFESTS / "good.yaml").read_bytes(), "good")
    assert manifest.files()[0].size == 100


@pytest.mark.parametrize("name", sorted(BAD))
def test_each_bad_value_is_refused_naming_manifest_and_field(name: str) -> None:
    started = time.monotonic()
    with pytest.raises(ManifestError) as caught:
        mf.load((MANIFESTS / f"{name}.yaml").read_bytes(), name)
    # refused before anything walks what its aliases name (a billion nodes: minutes).
    # The bound only tells the two apart; a load takes a few ms, and 1.0 s failed once
    # on a stalled VM (1.2 s)
    assert time.monotonic() - started < 10.0
    message = str(caught.value)
    assert message.startswith(f"manifest {name}") and BAD[name] in message
    assert "\n" not in message and len(message) < 400


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
def test_anchors_are_refused_in_utf16_too(encoding: str) -> None:
    """The anchor check runs only where a '&' or '*' byte is: in UTF-16 (which PyYAML
    reads after a byte-order mark) those characters still hold that byte."""
    text = (MANIFESTS / "yaml-bomb.yaml").read_text()
    data = "\ufeff".encode(encoding) + text.encode(encoding)
    with pytest.raises(ManifestError, match="anchors or aliases"):
        mf.load(data, "bomb16")


def test_a_manifest_over_the_size_limit_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mf, "MAX_MANIFEST_BYTES", 100)
    with pytest.raises(ManifestError, match="over the limit of 100"):
        mf.load((MANIFESTS / "good.yaml").read_bytes(), "good")


GOOD = (MANIFESTS / "good.yaml").read_bytes()


@settings(max_examples=1500, deadline=2000, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_fuzzed_manifests_give_a_manifest_error_or_a_manifest(data: st.DataObject) -> None:
    """Mutations of a valid manifest (bytes flipped, cut, spliced) and YAML scalars of
    every kind in its fields: a Manifest or a ManifestError, never another exception."""
    kind = data.draw(st.sampled_from(["bytes", "field"]))
    if kind == "bytes":
        raw = bytearray(GOOD)
        for _ in range(data.draw(st.integers(1, 8))):
            at = data.draw(st.integers(0, len(raw) - 1))
            raw[at] = data.draw(st.integers(0, 255))
        raw = raw[:data.draw(st.integers(0, len(raw)))] if data.draw(st.booleans()) else raw
        candidate = bytes(raw)
    else:
        lines = GOOD.decode().splitlines()
        at = data.draw(st.integers(0, len(lines) - 1))
        key = lines[at].split(":", 1)[0]
        value = data.draw(st.sampled_from([
            "", "~", "-1", "1e400", ".nan", "!!binary aGk=", "[1, [2, [3]]]", "{a: 1}",
            "2026-02-30", "!!float x", "'0o777'", "true", "99999999999999999999999999",
            "&a [*a]", "!!python/object:os.system ls", "'\\0'", "\"\\ud800\"",
        ]))
        lines[at] = f"{key}: {value}"
        candidate = "\n".join(lines).encode()
    with contextlib.suppress(ManifestError):  # any other exception fails the test
        mf.load(candidate, "fuzzed")


_HEX = "0123456789abcdef"


@settings(max_examples=800, deadline=2000, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_the_fast_chunk_parser_agrees_with_the_line_parser(data: st.DataObject) -> None:
    """The block as pitreos writes it takes the fast path; any change to it either
    still parses to exactly what the line-by-line parser gives, or falls to that parser
    (which accepts it, or names what is wrong), however the fast path slices it."""
    step = data.draw(st.sampled_from([1024, 4096, 1 << 20]))
    count = data.draw(st.integers(1, 12))
    size = (count - 1) * step + data.draw(st.integers(1, step))
    lines = []
    for index in range(count):
        if data.draw(st.booleans()):
            lines.append(f"{index * step} -")
        else:
            sha1 = "".join(data.draw(st.lists(st.sampled_from(_HEX), min_size=40, max_size=40)))
            b3 = "".join(data.draw(st.lists(st.sampled_from(_HEX), min_size=64, max_size=64)))
            lines.append(f"{index * step} {sha1} {b3}")
    block = "".join(f"{line}\n" for line in lines)
    whole = mf._chunks_as_written(block, size, step)
    assert whole is not None and mf._chunks_as_written(block, size, step, 1) == whole
    for _ in range(data.draw(st.integers(0, 3))):
        at = data.draw(st.integers(0, len(block)))
        edit = data.draw(st.sampled_from(["insert", "replace", "delete"]))
        char = data.draw(st.sampled_from(
            ["0", "9", "a", "f", "A", "F", "g", " ", "-", "\n", "\r", "\x85", "\u0663",
             "\u2028", "+", "_", "\t", "é"]))
        if edit == "insert":
            block = block[:at] + char + block[at:]
        elif edit == "replace":
            block = block[:at] + char + block[at + 1:]
        else:
            block = block[:at] + block[at + 1:]
    # slices of a few characters to a few lines, and the default (the block whole)
    slice_chars = data.draw(st.sampled_from([1, 2, 30, 105, 250, mf._SLICE_CHARS]))
    fast = mf._chunks_as_written(block, size, step, slice_chars)
    try:
        slow = mf._parse_chunks(block.splitlines(), size, step, "f")  # a list: line by line
    except ManifestError:
        assert fast is None
        return
    assert fast is None or fast == slow
    assert mf._parse_chunks(block, size, step, "f") == slow
