"""The catalog: built by backups, rebuilt by sync, reference counts right."""

import os
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pitreos.backup import BackupOptions, run_backup
from pitreos.catalog import Catalog, CopiedChunks
from pitreos.errors import CatalogError
from pitreos.hashing import ChunkDigest
from pitreos.manifest import Chunk, Entry, Manifest, backup_name, dump
from pitreos.repository import Repository
from pitreos.sync import SyncReport, sync_catalog
from pitreos.workspace import Workspace

from .helpers import CHUNK, write_at, written_long_ago


def dump_catalog(path: Path) -> dict[str, list[tuple[object, ...]]]:
    """The catalog's content, without row ids or local timestamps."""
    db = sqlite3.connect(path)
    out = {
        "backups": db.execute(
            "SELECT name, tag, created, chunk_size, tool, file_count, apparent_size, "
            "data_size FROM backups ORDER BY name").fetchall(),
        "meta": db.execute(
            "SELECT b.name, m.key, m.value FROM backup_meta m JOIN backups b "
            "ON b.id = m.backup_id ORDER BY 1, 2").fetchall(),
        "files": db.execute(
            "SELECT b.name, f.path, f.type, f.size, f.mode, f.mtime_ns, f.inode, f.target, "
            "f.data_size FROM files f JOIN backups b ON b.id = f.backup_id "
            "ORDER BY 1, 2").fetchall(),
        "chunks": db.execute(
            "SELECT b.name, f.path, c.idx, bl.sha1 FROM chunks c JOIN files f "
            "ON f.id = c.file_id JOIN backups b ON b.id = f.backup_id "
            "JOIN blobs bl ON bl.id = c.blob_id ORDER BY 1, 2, 3").fetchall(),
        "blobs": db.execute(
            "SELECT sha1, blake3, size, refcount FROM blobs WHERE refcount > 0 "
            "ORDER BY sha1").fetchall(),
    }
    db.close()
    return out


def three_backups(tree: Path, ws: Workspace) -> list[str]:
    names = []
    options = BackupOptions(tag="standard", chunk_size=CHUNK, workers=3,
                            meta={"block": "1"})
    names.append(run_backup(tree, ws.repo, ws.catalog, options).manifest.name)
    write_at(tree / "state/shared_memory.bin", 5 * CHUNK, b"changed page")
    options.meta = {"block": "2"}
    options.tag = "history"
    names.append(run_backup(tree, ws.repo, ws.catalog, options).manifest.name)
    (tree / "blocks/blocks.log").unlink()
    options.tag = "standard"
    options.incremental = True
    names.append(run_backup(tree, ws.repo, ws.catalog, options).manifest.name)
    return names


def test_sync_from_nothing_equals_catalog_built_by_backups(tree: Path, tmp_path: Path) -> None:
    url = (tmp_path / "store").as_uri()
    ws = Workspace.open(url, catalog_path=tmp_path / "built.sqlite", create=True)
    names = three_backups(tree, ws)
    assert len(set(names)) == 3
    ws.close()
    fresh = Workspace.open(url, catalog_path=tmp_path / "fresh.sqlite")
    report = fresh.sync(list_blobs=True)
    fresh.close()
    assert report.added == 3 and report.missing_blobs == 0
    built, synced = dump_catalog(tmp_path / "built.sqlite"), dump_catalog(
        tmp_path / "fresh.sqlite")
    assert built == synced
    assert len(built["backups"]) == 3 and built["chunks"]


def test_reference_counts_match_the_manifests(tree: Path, tmp_path: Path) -> None:
    url = (tmp_path / "store").as_uri()
    ws = Workspace.open(url, catalog_path=tmp_path / "c.sqlite", create=True)
    names = three_backups(tree, ws)
    expected: Counter[str] = Counter()
    for name in names:
        for entry in ws.repo.read_manifest(name).entries:
            expected.update(c.digest.sha1 for c in entry.chunks if c.digest is not None)
    assert ws.catalog.reference_counts() == dict(expected)
    assert max(expected.values()) >= 3  # shared between the backups
    # a manifest that left the store (deleted elsewhere) drops its references
    ws.repo.delete_manifest(names[0])
    report = ws.sync()
    assert report.removed == 1
    expected_after: Counter[str] = Counter()
    for name in names[1:]:
        for entry in ws.repo.read_manifest(name).entries:
            expected_after.update(c.digest.sha1 for c in entry.chunks if c.digest is not None)
    assert ws.catalog.reference_counts() == dict(expected_after)
    ws.close()


def test_incremental_backup_skips_unchanged_files_without_reading(tree: Path,
                                                                  tmp_path: Path) -> None:
    ws = Workspace.open((tmp_path / "store").as_uri(), catalog_path=tmp_path / "c.sqlite",
                        create=True)
    options = BackupOptions(chunk_size=CHUNK, workers=2, incremental=True)
    first = run_backup(tree, ws.repo, ws.catalog, options)
    assert first.stats.files_unchanged == 0
    write_at(tree / "small.txt", 0, b"S")
    second = run_backup(tree, ws.repo, ws.catalog, options)
    assert second.stats.files_unchanged == first.stats.files - 1
    assert second.stats.bytes_read == len((tree / "small.txt").read_bytes())
    assert second.stats.blobs_stored == 1
    ws.close()


def test_files_of_a_backup_are_its_manifests_chunks_and_a_hand_changed_row_is_refused(
        tree: Path, tmp_path: Path) -> None:
    """What an incremental backup starts from: each file's chunks as its manifest lists
    them (holes as None); a chunk row past a file's end is a catalog changed by hand,
    refused in one line, not read past or dropped."""
    ws = Workspace.open((tmp_path / "store").as_uri(), catalog_path=tmp_path / "c.sqlite",
                        create=True)
    manifest = run_backup(tree, ws.repo, ws.catalog,
                          BackupOptions(chunk_size=CHUNK, workers=2)).manifest
    files = ws.catalog.files_of(manifest.name)
    assert {path: record.chunks for path, record in files.items()} == \
        {e.path: e.chunks for e in manifest.files()}
    assert any(c.digest is None for r in files.values() for c in r.chunks)  # holes too
    ws.close()
    db = sqlite3.connect(tmp_path / "c.sqlite")
    with db:
        db.execute("UPDATE chunks SET idx = 100000 WHERE idx = (SELECT max(idx) FROM chunks)")
    db.close()
    ws = Workspace.open((tmp_path / "store").as_uri(), catalog_path=tmp_path / "c.sqlite")
    with pytest.raises(CatalogError, match=r"lists chunk 100000 of a file of backup .* "
                                           r"beyond the file's end.*--rebuild"):
        ws.catalog.files_of(manifest.name)
    ws.close()


def test_a_version_1_catalog_is_upgraded_in_place(tree: Path, tmp_path: Path) -> None:
    """A catalog of pitreos 0.1 at schema 1 (user_version 1, no migrations recorded):
    migration 0002 only adds an index, so it keeps its rows and gains it."""
    url = (tmp_path / "store").as_uri()
    ws = Workspace.open(url, catalog_path=tmp_path / "c.sqlite", create=True)
    run_backup(tree, ws.repo, ws.catalog, BackupOptions(chunk_size=CHUNK, workers=2))
    ws.close()
    before = dump_catalog(tmp_path / "c.sqlite")
    db = sqlite3.connect(tmp_path / "c.sqlite")
    db.execute("DROP INDEX blobs_missing")
    db.execute("DROP TABLE _sqlite_migrations")
    db.execute("ALTER TABLE blobs DROP COLUMN damaged")  # added by migration 0003
    db.execute("DROP TABLE retired_names")  # added by migration 0004
    db.execute("ALTER TABLE files DROP COLUMN ctime_ns")  # added by migration 0005
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    Workspace.open(url, catalog_path=tmp_path / "c.sqlite").close()
    db = sqlite3.connect(tmp_path / "c.sqlite")
    assert db.execute("PRAGMA user_version").fetchone()[0] == 5
    assert db.execute("SELECT name FROM sqlite_master WHERE name = 'blobs_missing'").fetchone()
    db.close()
    assert dump_catalog(tmp_path / "c.sqlite") == before


def _chunk_lookups(ws: Workspace, run: Callable[[], object]) -> int:
    """How many chunk rows ``run`` had the catalog look up by their hashes rather than
    copy: each goes through the temporary table ``incoming_chunks`` (statements traced
    on the catalog's connection: executemany runs one per row)."""
    lookups = 0

    def trace(statement: str) -> None:
        nonlocal lookups
        lookups += statement.startswith("INSERT INTO incoming_chunks VALUES")

    ws.catalog._conn.set_trace_callback(trace)
    try:
        run()
    finally:
        ws.catalog._conn.set_trace_callback(None)
    return lookups


def test_incremental_backups_copy_unchanged_chunk_rows_and_equal_a_sync(
        tree: Path, tmp_path: Path) -> None:
    url = (tmp_path / "store").as_uri()
    ws = Workspace.open(url, catalog_path=tmp_path / "built.sqlite", create=True)
    options = BackupOptions(chunk_size=CHUNK, workers=2, incremental=True)
    first = run_backup(tree, ws.repo, ws.catalog, options).manifest
    early = Workspace.open(url, catalog_path=tmp_path / "early.sqlite")
    assert early.sync().added == 1  # a machine that synced before the later backups
    early.close()
    log = tree / "blocks/blocks.log"
    size = log.stat().st_size
    with open(log, "ab") as f:  # an append-only log grows by two chunks and a bit
        f.write(os.urandom(2 * CHUNK + 99))
    write_at(tree / "state/shared_memory.bin", 5 * CHUNK, b"changed page")
    for changed in (log, tree / "state/shared_memory.bin"):  # not read again as racy
        written_long_ago(changed)
    second: list[Manifest] = []
    lookups = _chunk_lookups(ws, lambda: second.append(
        run_backup(tree, ws.repo, ws.catalog, options).manifest))
    # looked up: the log's chunks from its last full one on (its prefix's rows are
    # copied), and the changed state's data chunks (a file changed in place is read and
    # recorded whole); every other file's rows are copied from the first backup's
    state = next(e for e in second[0].entries if e.path == "state/shared_memory.bin")
    log_read = -(-log.stat().st_size // CHUNK) - size // CHUNK
    assert lookups == log_read + sum(c.digest is not None for c in state.chunks) == 3 + 4
    unchanged = _chunk_lookups(ws, lambda: run_backup(tree, ws.repo, ws.catalog, options))
    assert unchanged == 0
    ws.close()
    # a sync into a new catalog copies the same rows from the backup before: it looks
    # up the first backup's chunks and the second's 3 + 4, no more
    fresh = Workspace.open(url, catalog_path=tmp_path / "fresh.sqlite")
    reports: list[SyncReport] = []
    synced = _chunk_lookups(fresh, lambda: reports.append(fresh.sync()))
    fresh.close()
    first_chunks = sum(c.digest is not None for e in first.files() for c in e.chunks)
    assert reports[0].added == 3 and synced == first_chunks + 3 + 4
    built = dump_catalog(tmp_path / "built.sqlite")
    assert built == dump_catalog(tmp_path / "fresh.sqlite")
    assert reports[0].chunks_copied == len(built["chunks"]) - synced
    counts = Counter(name for name, _path, _idx, _sha1 in built["chunks"])
    assert len(counts) == 3 and min(counts.values()) > 10
    # the machine that synced the first backup before: its rows are read back and
    # printed, and the second backup copies them as it did in the sync from nothing
    early = Workspace.open(url, catalog_path=tmp_path / "early.sqlite")
    later = _chunk_lookups(early, lambda: reports.append(early.sync()))
    early.close()
    assert reports[1].added == 2 and later == 3 + 4
    assert dump_catalog(tmp_path / "early.sqlite") == built


def test_a_sync_copies_no_row_of_a_repeated_list_with_another_blake3(
        tmp_path: Path) -> None:
    """A later backup of a tag whose list repeats the earlier one's sha1s, one of them
    with another blake3 (a collision, or a manifest made by hand): its rows are not
    copied from the earlier backup, and it is quarantined as a sync always did."""
    ws = Workspace.open((tmp_path / "store").as_uri(), catalog_path=tmp_path / "c.sqlite",
                        create=True)
    sizes = _store_manifests(ws, [5])
    earlier = ws.repo.read_manifest(next(iter(sizes)))
    chunks = list(earlier.entries[0].chunks)
    repeated = chunks[2].digest
    assert repeated is not None
    chunks[2] = Chunk(chunks[2].start, ChunkDigest(repeated.sha1, "e" * 64))
    chunks.append(Chunk(5 * CHUNK, ChunkDigest("f" * 40, "f" * 64)))
    created = earlier.created + timedelta(hours=1)
    later = Manifest(name=backup_name(created, "t"), tag="t", created=created,
                     chunk_size=CHUNK, entries=[Entry(path="f", type="file", mode=0o644,
                                                      mtime_ns=0, size=6 * CHUNK,
                                                      chunks=chunks)])
    assert ws.repo.write_manifest(later)
    report = ws.sync()
    assert report.added == 1 and list(report.quarantined) == [later.name]
    assert report.chunks_copied == 0
    assert ws.catalog.backup_names() == {earlier.name}
    ws.close()


def test_chunk_rows_whose_backup_left_the_catalog_are_looked_up_one_by_one(
        tree: Path, tmp_path: Path) -> None:
    """The rows an incremental backup copies belong to the backup it followed: when a gc
    in another process removed that backup meanwhile, its chunks are recorded anyway."""
    ws = Workspace.open((tmp_path / "store").as_uri(), catalog_path=tmp_path / "c.sqlite",
                        create=True)
    options = BackupOptions(chunk_size=CHUNK, workers=2, incremental=True)
    first = run_backup(tree, ws.repo, ws.catalog, options).manifest
    second = run_backup(tree, ws.repo, ws.catalog, options).manifest
    path = "state/shared_memory.bin"
    entry = next(e for e in second.entries if e.path == path)
    copied = {path: CopiedChunks(first.name, path, range(len(entry.chunks)))}
    ws.catalog.remove_backup(second.name)
    ws.catalog.remove_backup(first.name)
    lookups = _chunk_lookups(ws, lambda: ws.catalog.add_backup(second, copied=copied))
    data_chunks = sum(1 for e in second.entries for c in e.chunks if c.digest is not None)
    assert lookups == data_chunks  # the state's too: its rows were gone
    expected = Counter(c.digest.sha1 for e in second.entries for c in e.chunks
                       if c.digest is not None)
    assert ws.catalog.reference_counts() == dict(expected)
    assert {p: r.chunks for p, r in ws.catalog.files_of(second.name).items()} == {
        e.path: e.chunks for e in second.entries if e.type == "file"}
    ws.close()


def _store_manifests(ws: Workspace, chunk_counts: list[int]) -> dict[str, int]:
    """Manifests an hour apart, oldest first, one file each of that many chunks (digests
    unique to each), written to the store; returns their names and sizes in bytes."""
    created = datetime(2026, 1, 1, tzinfo=UTC)
    sizes: dict[str, int] = {}
    for i, count in enumerate(chunk_counts):
        chunks = [Chunk(c * CHUNK, ChunkDigest(f"{i:08x}{c:032x}", f"{i:08x}{c:056x}"))
                  for c in range(count)]
        manifest = Manifest(name=backup_name(created + timedelta(hours=i), "t"), tag="t",
                            created=created + timedelta(hours=i), chunk_size=CHUNK,
                            entries=[Entry(path="f", type="file", mode=0o644, mtime_ns=0,
                                           size=count * CHUNK, chunks=chunks)])
        assert ws.repo.write_manifest(manifest)
        sizes[manifest.name] = len(dump(manifest))
    return sizes


def test_a_slow_manifest_holds_back_the_sync_not_memory(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Manifests are inserted oldest first. While the oldest one's fetch hangs, the
    others are not all fetched and held: at most twice the workers run ahead of it."""
    ws = Workspace.open((tmp_path / "store").as_uri(), catalog_path=tmp_path / "c.sqlite",
                        create=True)
    names = list(_store_manifests(ws, [1] * 40))
    fetched_while_held: list[int] = []
    fetched: list[str] = []
    lock = threading.Lock()
    real = Repository.manifest_bytes

    def manifest_bytes(repo: Repository, name: str) -> bytes | None:
        if name == names[0]:
            time.sleep(1.0)  # the others have a second to run ahead
            with lock:
                fetched_while_held.append(len(fetched))
        else:
            with lock:
                fetched.append(name)
        return real(repo, name)

    monkeypatch.setattr(Repository, "manifest_bytes", manifest_bytes)
    report = sync_catalog(ws.catalog, ws.repo, workers=4)
    assert report.added == 40
    assert ws.catalog.backup_names() == set(names)
    assert fetched_while_held and fetched_while_held[0] <= 2 * 4
    ws.close()


def test_manifests_fetched_ahead_stay_within_a_byte_budget(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A window of twice the workers is 256 manifests on an object store: with a node's
    large manifests that is gigabytes. The manifests fetched and not yet inserted stay
    within ``ahead_bytes`` by their listed sizes, and one larger than that alone still
    goes through."""
    ws = Workspace.open((tmp_path / "store").as_uri(), catalog_path=tmp_path / "c.sqlite",
                        create=True)
    # ~240 kB each, but one of ~1.2 MB, over the budget
    sizes = _store_manifests(ws, [10_000 if i == 12 else 2_000 for i in range(24)])
    budget = 1 << 20
    held: list[int] = [0]
    highest: list[int] = [0]
    lock = threading.Lock()
    real_fetch, real_insert = Repository.manifest_bytes, Catalog.add_backup
    first = min(sizes)

    def manifest_bytes(repo: Repository, name: str) -> bytes | None:
        with lock:
            held[0] += sizes[name]
            highest[0] = max(highest[0], held[0])
        if name == first:
            time.sleep(0.5)  # the others have time to run ahead as far as they may
        return real_fetch(repo, name)

    def add_backup(catalog: Catalog, manifest: Manifest, **kwargs: bool) -> int:
        copied = real_insert(catalog, manifest, **kwargs)  # type: ignore[arg-type]
        with lock:
            held[0] -= sizes[manifest.name]
        return copied

    monkeypatch.setattr(Repository, "manifest_bytes", manifest_bytes)
    monkeypatch.setattr(Catalog, "add_backup", add_backup)
    report = sync_catalog(ws.catalog, ws.repo, workers=8, ahead_bytes=budget)
    assert report.added == 24 and ws.catalog.backup_names() == set(sizes)
    largest = max(sizes.values())
    assert largest > budget
    assert 2 * 240_000 < highest[0] <= largest  # it did run ahead, within the budget
    assert highest[0] <= budget or highest[0] == largest
    ws.close()


def _conflicting(earlier: Manifest, after: timedelta) -> Manifest:
    """A manifest ``after`` ``earlier`` listing its first blob with another blake3, and a
    blob of its own."""
    first = earlier.entries[0].chunks[0].digest
    assert first is not None
    chunks = [Chunk(0, ChunkDigest(first.sha1, "e" * 64)),
              Chunk(CHUNK, ChunkDigest("d" * 40, "d" * 64))]
    created = earlier.created + after
    return Manifest(name=backup_name(created, "t"), tag="t", created=created,
                    chunk_size=CHUNK, entries=[Entry(path="g", type="file", mode=0o644,
                                                     mtime_ns=0, size=2 * CHUNK,
                                                     chunks=chunks)])


def test_a_sync_in_batches_holds_what_one_manifest_at_a_time_did(tmp_path: Path) -> None:
    """Manifests are committed a batch at a time; a conflicting one inside a batch
    leaves none of its rows (its own blob neither), and the ones after it are added."""
    ws = Workspace.open((tmp_path / "store").as_uri(), catalog_path=tmp_path / "c.sqlite",
                        create=True)
    names = sorted(_store_manifests(ws, [3] * 6))
    bad = _conflicting(ws.repo.read_manifest(names[0]), timedelta(minutes=150))
    assert ws.repo.write_manifest(bad)  # between the third and the fourth
    dumps = []
    for rows_per_commit in (1, 7, 1_000):  # each manifest alone; ~3 a batch; all in one
        catalog = Catalog(tmp_path / f"by-{rows_per_commit}.sqlite", ws.repo.url)
        report = sync_catalog(catalog, ws.repo, rows_per_commit=rows_per_commit)
        assert report.added == 6 and list(report.quarantined) == [bad.name]
        assert catalog.backup_names() == set(names)
        assert catalog.known_blobs(["d" * 40]) == {}  # rolled back with its manifest
        catalog.close()
        dumps.append(dump_catalog(tmp_path / f"by-{rows_per_commit}.sqlite"))
    assert dumps[0] == dumps[1] == dumps[2]
    ws.close()


def test_an_interrupted_sync_keeps_the_batches_it_committed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ws = Workspace.open((tmp_path / "store").as_uri(), catalog_path=tmp_path / "c.sqlite",
                        create=True)
    names = sorted(_store_manifests(ws, [3] * 6))
    real_insert = Catalog.add_backup

    def add_backup(catalog: Catalog, manifest: Manifest, **kwargs: bool) -> int:
        if manifest.name == names[4]:
            raise KeyboardInterrupt  # as a SIGINT would, half way through a batch
        return real_insert(catalog, manifest, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Catalog, "add_backup", add_backup)
    with pytest.raises(KeyboardInterrupt):
        sync_catalog(ws.catalog, ws.repo, rows_per_commit=6)
    # what another process sees: fewer than 6 rows were pending (the batch also commits
    # whenever the next fetch has not come yet), so at most one manifest of 3 is lost
    other = Catalog(tmp_path / "c.sqlite", ws.repo.url)
    kept = other.backup_names()
    assert set(names[:3]) <= kept <= set(names[:4])
    other.close()
    monkeypatch.setattr(Catalog, "add_backup", real_insert)
    assert sync_catalog(ws.catalog, ws.repo).added == len(names) - len(kept)
    assert ws.catalog.wrong_reference_counts() == 0
    ws.close()


def test_a_sync_lets_go_of_the_catalog_while_it_waits_for_a_fetch(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another pitreos on the machine (a backup publishing) can write to the catalog
    while a sync waits for the store, however large its batches."""
    ws = Workspace.open((tmp_path / "store").as_uri(), catalog_path=tmp_path / "c.sqlite",
                        create=True)
    names = sorted(_store_manifests(ws, [3] * 4))
    real_fetch = Repository.manifest_bytes
    writable: list[bool] = []

    def manifest_bytes(repo: Repository, name: str) -> bytes | None:
        if name == names[2]:
            time.sleep(0.5)  # the sync has added the first two and waits for this one
            other = sqlite3.connect(tmp_path / "c.sqlite", timeout=0.2)
            try:
                other.execute("BEGIN IMMEDIATE")
                other.execute("ROLLBACK")
                writable.append(True)
            except sqlite3.OperationalError:  # "database is locked"
                writable.append(False)
            other.close()
        return real_fetch(repo, name)

    monkeypatch.setattr(Repository, "manifest_bytes", manifest_bytes)
    report = sync_catalog(ws.catalog, ws.repo, workers=4, rows_per_commit=1_000_000)
    assert report.added == 4 and writable == [True]
    ws.close()
