"""The local store's flush: a few objects, while the machine has much else to write
back, are fsynced one by one with the folders that hold them; many (or all), or with
little else dirty, by one syncfs of the store's file system. A failure names the object.
An incremental backup of a few new blobs must not make the whole file system write out
what other programs (a running node) left dirty there.

How much is dirty is the machine's (/proc/meminfo), so the tests set it."""

import errno
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from pitreos import libc
from pitreos.backup import BackupOptions, BackupResult, run_backup
from pitreos.catalog import Catalog
from pitreos.errors import StoreError
from pitreos.repository import Repository, blob_key, manifest_key
from pitreos.stores import local, open_store
from pitreos.stores.local import FSYNC_EACH_MAX, OTHERS_DIRTY_MAX, LocalStore
from pitreos.workspace import Workspace

from .helpers import CHUNK, write_at

Synced = dict[str, list[str]]


@pytest.fixture
def synced(monkeypatch: pytest.MonkeyPatch) -> Synced:
    """What each fsync and each syncfs of this process synced (both still run), by the
    path of the descriptor."""
    calls: Synced = {"fsync": [], "syncfs": []}
    real_fsync = os.fsync
    real_function = libc.function

    def fsync(fd: int) -> None:
        calls["fsync"].append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    def function(name: str, *argtypes: type) -> Callable[..., None] | None:
        real = real_function(name, *argtypes)
        if name != "syncfs" or real is None:
            return real
        found = real

        def syncfs(fd: int) -> None:
            calls["syncfs"].append(os.readlink(f"/proc/self/fd/{fd}"))
            found(fd)

        return syncfs

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(libc, "function", function)
    return calls


@pytest.fixture
def busy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The machine has much to write back besides the store's objects (a node's writes)."""
    monkeypatch.setattr(local, "_dirty_bytes", lambda: 4 * OTHERS_DIRTY_MAX)


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    opened = LocalStore(tmp_path / "store", create=True)
    opened.check()
    return opened


@pytest.mark.usefixtures("busy")
def test_a_few_objects_are_synced_with_their_folders(store: LocalStore,
                                                      synced: Synced) -> None:
    keys = [blob_key("ab" * 20), blob_key("cd" * 20), "manifests/one.yaml"]
    for key in keys:
        store.put(key, b"data")
    store.put(blob_key("ef" * 20), b"not asked for")
    store.flush(keys)
    root = store.root
    objects = {str(root / key) for key in keys}
    folders = {str(root / f) for f in ("blobs/ab", "blobs/cd", "blobs", "manifests")}
    assert sorted(synced["fsync"]) == sorted(objects | folders | {str(root)})
    # the objects before the folders that name them
    assert set(synced["fsync"][:len(objects)]) == objects
    assert synced["syncfs"] == []


@pytest.mark.usefixtures("busy")
def test_many_objects_or_all_sync_the_file_system(store: LocalStore,
                                                 synced: Synced) -> None:
    store.flush()
    store.flush([blob_key(f"{i:040x}") for i in range(FSYNC_EACH_MAX + 1)])
    assert synced["syncfs"] == [str(store.root)] * 2
    assert synced["fsync"] == []


def test_with_little_else_dirty_a_few_objects_sync_the_file_system(
        store: LocalStore, synced: Synced, monkeypatch: pytest.MonkeyPatch) -> None:
    """Little besides the objects themselves waits to be written: syncfs is cheaper."""
    key = blob_key("ab" * 20)
    store.put(key, os.urandom(1 << 20))
    monkeypatch.setattr(local, "_dirty_bytes", lambda: OTHERS_DIRTY_MAX + (1 << 20))
    store.flush([key])
    assert synced["syncfs"] == [str(store.root)]
    assert synced["fsync"] == []


def test_the_machine_s_dirty_bytes_are_read() -> None:
    with open("/proc/meminfo") as meminfo:
        total = int(next(line for line in meminfo if line.startswith("MemTotal:")).split()[1])
    assert 0 <= local._dirty_bytes() <= total * 1024


@pytest.mark.usefixtures("busy")
def test_an_object_deleted_since_is_skipped_and_a_failure_names_the_object(
        store: LocalStore, monkeypatch: pytest.MonkeyPatch) -> None:
    store.put(blob_key("ab" * 20), b"1")
    store.put(blob_key("ab" * 19 + "cd"), b"2")
    store.delete(blob_key("ab" * 19 + "cd"))
    store.flush([blob_key("ab" * 20), blob_key("ab" * 19 + "cd")])

    def failing(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "fsync", failing)
    with pytest.raises(StoreError, match=rf"^cannot sync {blob_key('ab' * 20)} in store "
                       rf"{store.url}: Input/output error$"):
        store.flush([blob_key("ab" * 20), blob_key("ab" * 19 + "cd")])


def _sha1s(backup: BackupResult) -> set[str]:
    return {c.digest.sha1 for e in backup.manifest.entries for c in e.chunks
            if c.digest is not None}


def _backup(ws: Workspace, src: Path, incremental: bool) -> BackupResult:
    return run_backup(src, ws.repo, ws.catalog,
                      BackupOptions(chunk_size=CHUNK, workers=2, incremental=incremental))


@pytest.mark.usefixtures("busy")
def test_a_small_incremental_backup_syncs_only_what_it_wrote(
        tmp_path: Path, synced: Synced) -> None:
    """The full backup (more blobs than FSYNC_EACH_MAX) syncs the file system; the
    incremental after three chunks changed, while the machine has much else to write
    back, fsyncs its three blobs and its manifest, and never the file system."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "data.bin").write_bytes(os.urandom((FSYNC_EACH_MAX + 10) * CHUNK))
    repo = Repository(open_store((tmp_path / "store").as_uri(), create=True))
    ws = Workspace(repo, Catalog(tmp_path / "c.sqlite", repo.url), workers=2)
    try:
        full = _backup(ws, src, incremental=False)
        assert full.stats.blobs_stored == FSYNC_EACH_MAX + 10
        assert synced["syncfs"]
        synced["syncfs"].clear()
        synced["fsync"].clear()
        for i in (3, 50, 100):
            write_at(src / "data.bin", i * CHUNK, os.urandom(100))
        incremental = _backup(ws, src, incremental=True)
    finally:
        ws.close()
    assert incremental.stats.blobs_stored == 3
    assert synced["syncfs"] == []
    new = _sha1s(incremental) - _sha1s(full)
    store = tmp_path / "store"
    expected = {str(store / blob_key(sha1)) for sha1 in new}
    expected.add(str(store / manifest_key(incremental.manifest.name)))
    assert len(new) == 3 and expected <= set(synced["fsync"])
