"""The store contract, run on every backend against its real server (as restic's
internal/backend/test does): what the repository relies on, checked backend by backend
through the same wrappers the CLI uses."""

import uuid
from collections.abc import Iterator

import pytest

from pitreos.errors import BlobNotFound, StoreNotFound
from pitreos.stores import open_store
from pitreos.stores.base import Store

from .servers import Backend


@pytest.fixture
def store(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    for key, value in backend.env.items():
        monkeypatch.setenv(key, value)
    opened = open_store(backend.url, pool_size=4)
    opened.check()
    yield opened


def test_conditional_put_creates_once(store: Store) -> None:
    assert store.put("blobs/ab/one", b"first") is True
    assert store.put("blobs/ab/one", b"second") is False
    assert store.get("blobs/ab/one") == b"first"  # the loser changed nothing


def test_overwrite_replaces(store: Store) -> None:
    store.put("index/manifests.txt", b"a\n")
    assert store.put("index/manifests.txt", b"a\nb\n", overwrite=True) is True
    assert store.get("index/manifests.txt") == b"a\nb\n"


def test_missing_object(store: Store) -> None:
    with pytest.raises(BlobNotFound):
        store.get("blobs/00/absent")
    assert store.exists("blobs/00/absent") is False


def test_exists_and_empty_object(store: Store) -> None:
    store.put("locks/empty", b"")
    assert store.exists("locks/empty") is True
    assert store.get("locks/empty") == b""


def test_names_and_bytes_arrive_as_they_were_sent(store: Store) -> None:
    """A name with characters a URL must escape, and bytes that look like the framing
    of a multipart body (a blob stored uncompressed is a user's bytes), over 8 MiB (the
    GCS SDK switched to another upload kind there): each arrives as it was sent."""
    name = "manifests/2026-11-27T00-00-00Z--a b+c%41&d=é.yaml"
    framing = b"\r\n--" + uuid.uuid4().hex.encode() + b"--\r\ncontent-type: x\r\n\r\n"
    data = framing + bytes(range(256)) * (9 * 4096) + framing
    assert store.put(name, data) is True
    assert store.exists(name) is True
    assert store.get(name) == data
    assert {i.key: i.size for i in store.list("manifests/2026-11-27")} == {name: len(data)}
    store.delete(name)
    assert store.exists(name) is False


def test_delete_is_idempotent(store: Store) -> None:
    store.put("blobs/cd/two", b"x")
    store.delete("blobs/cd/two")
    store.delete("blobs/cd/two")
    store.delete("blobs/cd/never-there")
    assert store.exists("blobs/cd/two") is False


def test_listing_by_prefix(store: Store) -> None:
    keys = {"blobs/aa/1": b"1", "blobs/aa/2": b"22", "blobs/bb/3": b"333",
            "manifests/m.yaml": b"m", "blobsx/not-a-blob": b"x"}
    for key, data in keys.items():
        store.put(key, data)
    listed = {info.key: info.size for info in store.list("blobs/")}
    assert listed == {"blobs/aa/1": 1, "blobs/aa/2": 2, "blobs/bb/3": 3}
    assert {i.key for i in store.list("blobs/aa/")} == {"blobs/aa/1", "blobs/aa/2"}
    assert list(store.list("nothing/")) == []
    assert all(info.modified.tzinfo is not None for info in store.list("manifests/"))


def test_flush_and_properties(store: Store) -> None:
    store.put("blobs/ee/5", b"5")
    store.flush()
    store.put("blobs/ee/6", b"6")
    store.flush(["blobs/ee/6", "blobs/ee/absent"])  # a named object that is gone: no error
    assert store.get("blobs/ee/6") == b"6"
    assert store.properties.listable and not store.properties.read_only
    assert store.properties.conditional_put
    assert store.properties.remote is (not store.url.startswith("file:"))


def test_store_not_found(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in backend.env.items():
        monkeypatch.setenv(key, value)
    if backend.name == "file":
        url = backend.url + "-" + uuid.uuid4().hex
    else:
        scheme, _, rest = backend.url.partition("://")
        path = rest.partition("/")[2]
        url = f"{scheme}://missing-{uuid.uuid4().hex[:12]}/{path}"
    with pytest.raises(StoreNotFound):
        open_store(url).check()
