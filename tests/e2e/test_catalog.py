"""The catalog: built by backups, rebuilt by sync, reference counts right."""

import sqlite3
from collections import Counter
from pathlib import Path

from pitreos.backup import BackupOptions, run_backup
from pitreos.workspace import Workspace

from .helpers import CHUNK, write_at


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
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    Workspace.open(url, catalog_path=tmp_path / "c.sqlite").close()
    db = sqlite3.connect(tmp_path / "c.sqlite")
    assert db.execute("PRAGMA user_version").fetchone()[0] == 3
    assert db.execute("SELECT name FROM sqlite_master WHERE name = 'blobs_missing'").fetchone()
    db.close()
    assert dump_catalog(tmp_path / "c.sqlite") == before
