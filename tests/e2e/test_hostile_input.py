"""One bad manifest never locks out a store, and never costs another backup its blobs."""

import os
from pathlib import Path
from typing import Any

import yaml

from pitreos.repository import manifest_key
from pitreos.stores import open_store

from .helpers import CHUNK, Runner
from .servers import Backend


def edit(store: Backend, name: str, change: Any, new_name: str | None = None) -> None:
    objects = open_store(store.url)
    doc = yaml.safe_load(objects.get(manifest_key(name)))
    change(doc)
    if new_name is not None:
        doc["name"] = new_name
    objects.put(manifest_key(new_name or name), yaml.safe_dump(doc, sort_keys=False).encode(),
                overwrite=True)


def two_backups(cli: Runner, tmp_path: Path) -> tuple[Path, str, str]:
    src = tmp_path / "src"
    src.mkdir()
    (src / "shared").write_bytes(b"shared chunk " * 5000)
    first = cli("backup", str(src), "--chunk-size", str(CHUNK), "--tag", "a").ok()
    (src / "unique").write_bytes(b"only the second backup has this " * 3000)
    second = cli("backup", str(src), "--chunk-size", str(CHUNK), "--tag", "b").ok()
    return src, first.stdout.strip(), second.stdout.strip()


def blob_count(store: Backend) -> int:
    return len(list(open_store(store.url).list("blobs/")))


def test_a_conflicting_manifest_is_quarantined(cli: Runner, store: Backend,
                                              tmp_path: Path) -> None:
    _, first, second = two_backups(cli, tmp_path)

    def conflict(doc: dict[str, Any]) -> None:  # 'shared' listed with another blake3
        entry = next(e for e in doc["files"] if e["path"] == "shared")
        start, sha1, _ = entry["chunks"].splitlines()[0].split()
        rest = entry["chunks"].splitlines()[1:]
        entry["chunks"] = "\n".join([f"{start} {sha1} {'0' * 64}", *rest]) + "\n"

    edit(store, second, conflict)
    blobs = blob_count(store)
    fresh = tmp_path / "fresh.sqlite"  # a machine that meets both manifests
    synced = cli("catalog", "sync", "--rebuild", catalog=fresh).ok()
    assert "catalog.manifest_quarantined" in synced.stderr and second in synced.stderr
    assert cli("list", catalog=fresh).ok().stdout.split()[0] == first
    cli("restore", first, str(tmp_path / "dest"), catalog=fresh).ok()
    cli("verify", "--all", catalog=fresh).fails(second, "conflicting", code=1)
    cli("gc", "--keep-last", "5", "--grace", "0s", catalog=fresh).ok()
    assert blob_count(store) == blobs  # the quarantined manifest's blobs all stay


def test_an_unreadable_manifest_stops_gc_from_deleting_blobs(cli: Runner, store: Backend,
                                                             tmp_path: Path) -> None:
    _, first, second = two_backups(cli, tmp_path)
    newer = second.replace("--b", "--c")

    def from_a_newer_pitreos(doc: dict[str, Any]) -> None:
        doc["pitreos_manifest"] = 99

    edit(store, second, from_a_newer_pitreos, new_name=newer)
    open_store(store.url).delete(manifest_key(second))
    blobs = blob_count(store)
    gc = cli("gc", "--keep-last", "5", "--grace", "0s").ok()
    assert "no blob deleted" in gc.stderr and newer in gc.stderr
    assert blob_count(store) == blobs
    cli("restore", first, str(tmp_path / "dest")).ok()


def test_a_file_from_year_2300_backs_up_and_restores(cli: Runner, store: Backend,
                                                     tmp_path: Path) -> None:
    """Its mtime does not fit SQLite's 64-bit integers: the manifest keeps it exactly,
    the catalog stores what it can, and every command goes on working."""
    src = tmp_path / "src"
    src.mkdir()
    future = src / "future"
    future.write_bytes(b"from the future")
    far = 10_413_792_000 * 10**9 + 123  # 2300-01-01, past 2**63 ns
    os.utime(future, ns=(far, far))
    assert future.stat().st_mtime_ns == far
    name = cli("backup", str(src), "--incremental").ok().stdout.strip()
    again = cli("backup", str(src), "--incremental").ok()
    assert "read 15 B" in again.stderr  # read again rather than trusted: never wrong
    assert len(cli("list").ok().stdout.splitlines()) == 2
    cli("catalog", "sync", "--rebuild").ok()
    cli("restore", name, str(tmp_path / "dest")).ok()
    assert (tmp_path / "dest/future").stat().st_mtime_ns == far
