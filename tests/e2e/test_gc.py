"""Retention, gc, verify, stats and catalog check; gc racing backups from other machines."""

import json
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from pitreos.backup import BackupOptions, run_backup
from pitreos.gc import GCOptions, run_gc
from pitreos.gcdecision import RetentionPolicy
from pitreos.manifest import load as load_manifest
from pitreos.progress import Unit
from pitreos.restore import RestoreOptions, execute_restore, plan_restore
from pitreos.verify import verify
from pitreos.workspace import Workspace

from .helpers import CHUNK, Runner, assert_same_tree, write_at
from .servers import Backend, create_gcs_bucket, initialized
from .test_core import backup


def blob_names(tmp_path: Path) -> set[str]:
    return {p.name for p in (tmp_path / "store/blobs").rglob("*") if p.is_file()}


def three_versions(run: Runner, tree: Path) -> list[str]:
    names = []
    for i in range(3):
        write_at(tree / "state/shared_memory.bin", 5 * CHUNK, f"version {i}".encode())
        (tree / "small.txt").write_text(f"version {i}\n")
        names.append(backup(run, tree))
    return names


def test_gc_keep_last_frees_unreferenced_blobs(run: Runner, tree: Path, tmp_path: Path) -> None:
    names = three_versions(run, tree)
    before = blob_names(tmp_path)
    dry = run("gc", "--keep-last", "1", "--grace", "0s", "--dry-run").ok()
    assert f"would delete backup {names[0]}" in dry.stdout
    assert f"keep {names[2]}  (last 1)" in dry.stdout
    assert "would delete 2 backups and 4 blobs" in dry.stderr
    freed = int(dry.stderr.split("(")[1].split(" bytes")[0])
    assert blob_names(tmp_path) == before  # a dry run deletes nothing
    assert len(run("list").ok().stdout.splitlines()) == 3
    real = run("gc", "--keep-last", "1", "--grace", "0s").ok()
    assert "deleted 2 backups and 4 blobs" in real.stderr and f"({freed} bytes)" in real.stderr
    assert run("list").ok().stdout.split()[0] == names[2]
    assert len(blob_names(tmp_path)) == len(before) - 4
    run("verify", "--all").ok()
    dest = tmp_path / "dest"
    run("restore", names[2], str(dest)).ok()
    assert_same_tree(tree, dest)


def test_grace_keeps_young_blobs(run: Runner, tree: Path, tmp_path: Path) -> None:
    three_versions(run, tree)
    before = blob_names(tmp_path)
    result = run("gc", "--keep-last", "1").ok()  # default grace: 24h
    assert "deleted 2 backups and 0 blobs" in result.stderr
    assert "4 unreferenced blobs younger than --grace kept" in result.stderr
    assert blob_names(tmp_path) == before


@pytest.mark.parametrize("flags", [[], ["--keep-last", "0"], ["--keep-daily", "0"]])
def test_policy_keeping_nothing_is_refused(run: Runner, tree: Path, tmp_path: Path,
                                          flags: list[str]) -> None:
    three_versions(run, tree)
    run("gc", *flags).fails("keeps no backup of tag 'default'", "--allow-empty", code=2)
    assert len(run("list").ok().stdout.splitlines()) == 3
    run("gc", *flags, "--allow-empty", "--grace", "0s").ok()
    assert run("list").ok().stdout == "" and blob_names(tmp_path) == set()


def test_gc_per_tag(run: Runner, tree: Path) -> None:
    for tag in ("standard", "standard", "history", "history"):
        (tree / "small.txt").write_text(tag + str(time.time()))
        backup(run, tree, "--tag", tag)
    run("gc", "--keep-last", "1", "--tag", "history", "--grace", "0s").ok()
    tags = [line.split()[1] for line in run("list").ok().stdout.splitlines()]
    assert sorted(tags) == ["history", "standard", "standard"]


def test_gc_interrupted_then_rerun(tree: Path, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    ws = Workspace.open((tmp_path / "store").as_uri(), catalog_path=tmp_path / "c.sqlite",
                        create=True)
    names = []
    for i in range(3):
        for chunk in range(3):  # three changed chunks a version
            write_at(tree / "blocks/blocks.index", chunk * CHUNK, f"v{i}".encode() * 5000)
        names.append(run_backup(tree, ws.repo, ws.catalog,
                                BackupOptions(chunk_size=CHUNK)).manifest.name)
    real_delete = ws.repo.delete_blob
    calls = []

    def dying_delete(sha1: str) -> None:
        calls.append(sha1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        real_delete(sha1)

    monkeypatch.setattr(ws.repo, "delete_blob", dying_delete)
    options = GCOptions(RetentionPolicy(last=1), grace=timedelta(0), workers=1)
    with pytest.raises(KeyboardInterrupt):
        run_gc(ws.repo, ws.catalog, options)
    monkeypatch.setattr(ws.repo, "delete_blob", real_delete)
    report = run_gc(ws.repo, ws.catalog, options)  # the rerun finishes the job
    assert report.blobs_deleted > 0
    assert verify(ws.repo, ws.catalog, None).damage == []
    listing = {b.sha1 for b in ws.repo.list_blobs()}
    assert listing == ws.catalog.referenced_sha1s()  # nothing unreferenced left, nothing more
    dest = tmp_path / "dest"
    manifest = ws.repo.read_manifest(names[-1])
    execute_restore(plan_restore(manifest, dest, RestoreOptions()), ws.repo, RestoreOptions())
    assert_same_tree(tree, dest)
    ws.close()


def test_stale_or_missing_catalog_never_deletes_on_a_guess(run: Runner, tree: Path,
                                                           tmp_path: Path) -> None:
    other = tmp_path / "other-machine.sqlite"
    first = backup(run, tree)
    (tree / "small.txt").write_text("made on another machine\n")
    elsewhere = run("backup", str(tree), "--chunk-size", str(CHUNK),
                    catalog=other).ok().stdout.strip()
    # this machine's catalog has not seen 'elsewhere'; gc keeps it (keep-last 1)
    run("gc", "--keep-last", "1", "--grace", "0s").ok()
    assert run("list").ok().stdout.split()[0] == elsewhere
    run("verify", "--all").ok()
    # a missing catalog is rebuilt before anything is decided
    (tmp_path / "catalog.sqlite").unlink()
    run("gc", "--keep-last", "1", "--grace", "0s").ok()
    run("verify", "--all").ok()
    dest = tmp_path / "dest"
    run("restore", "latest", str(dest)).ok()
    assert (dest / "small.txt").read_text() == "made on another machine\n"
    assert first not in run("list").ok().stdout


def test_verify_names_missing_and_corrupt_blobs(run: Runner, tree: Path, tmp_path: Path) -> None:
    name = backup(run, tree)
    run("verify", name).ok()
    manifest = load_manifest((tmp_path / f"store/manifests/{name}.yaml").read_bytes(), name)
    files = {e.path: e for e in manifest.files()}
    index_sha1 = files["blocks/blocks.index"].chunks[0].digest.sha1  # type: ignore[union-attr]
    small_sha1 = files["small.txt"].chunks[0].digest.sha1  # type: ignore[union-attr]
    log_sha1 = files["blocks/blocks.log"].chunks[0].digest.sha1  # type: ignore[union-attr]
    truncated = tmp_path / "store/blobs" / log_sha1[:2] / log_sha1
    truncated.write_bytes(truncated.read_bytes()[:100])
    blob = tmp_path / "store/blobs" / index_sha1[:2] / index_sha1
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    (tmp_path / "store/blobs" / small_sha1[:2] / small_sha1).unlink()
    quick = run("verify", "--all").fails("1 blobs damaged", name)
    assert f"blob {small_sha1}: missing" in quick.stdout
    assert f"breaks {name}: small.txt" in quick.stdout
    assert index_sha1 not in quick.stdout  # quick verify downloads nothing
    deep = run("verify", "--all", "--deep").fails("3 blobs damaged")
    assert f"blob {index_sha1}: corrupt" in deep.stdout
    assert f"breaks {name}: blocks/blocks.index" in deep.stdout
    assert f"blob {log_sha1}: corrupt" in deep.stdout  # truncated
    assert f"breaks {name}: blocks/blocks.log" in deep.stdout
    assert "(deep, " in deep.stderr and " fetched at " in deep.stderr


def test_verify_quick_makes_no_download(tree: Path, tmp_path: Path) -> None:
    ws = Workspace.open((tmp_path / "store").as_uri(), catalog_path=tmp_path / "c.sqlite",
                        create=True, count_requests=True)
    run_backup(tree, ws.repo, ws.catalog, BackupOptions(chunk_size=CHUNK))
    assert ws.requests is not None
    gets_before = ws.requests.requests().get("get", 0)
    report = verify(ws.repo, ws.catalog, None)
    assert report.damage == [] and report.blobs_checked > 0 and report.bytes_downloaded == 0
    assert ws.requests.requests().get("get", 0) == gets_before  # not one download
    ws.close()


def test_stats_and_catalog_check(run: Runner, tree: Path, tmp_path: Path) -> None:
    backup(run, tree, "--tag", "standard")
    backup(run, tree, "--tag", "standard")  # the same data again: dedup 2x
    stats = json.loads(run("stats", "--json").ok().stdout)
    assert stats["tags"]["standard"]["backups"] == 2
    assert stats["total"]["dedup_ratio"] == pytest.approx(2.0, rel=0.01)
    assert stats["total"]["compression_ratio"] > 1
    assert stats["total"]["unique_blobs"] == len(blob_names(tmp_path))
    assert "standard" in run("stats").ok().stdout
    run("catalog", "check").ok()
    other = tmp_path / "other.sqlite"
    (tree / "small.txt").write_text("elsewhere\n")
    run("backup", str(tree), catalog=other).ok()
    result = run("catalog", "check").fails("differs from the store")
    assert "backup in the store, not in the catalog" in result.stdout
    run("catalog", "sync").ok()
    run("catalog", "check").ok()


# Racing a backup on another machine ------------------------------------------------


@pytest.fixture(params=["file", "gcs"])
def shared_store(request: pytest.FixtureRequest, servers: dict[str, Any],
                 tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Backend:
    if request.param == "file":
        return initialized(Backend("file", (tmp_path / "shared").as_uri(), {}))
    backend = create_gcs_bucket(servers["gcs"])
    for key, value in backend.env.items():
        monkeypatch.setenv(key, value)
    return backend


def machine(backend: Backend, tmp_path: Path, name: str) -> Workspace:
    ws = Workspace.open(backend.url, catalog_path=tmp_path / f"{name}.sqlite", workers=4)
    ws.sync()
    return ws


def test_gc_skips_blob_deletion_while_a_backup_runs(shared_store: Backend, tree: Path,
                                                    tmp_path: Path) -> None:
    """gc sees the running backup's marker and deletes manifests only."""
    a, b = machine(shared_store, tmp_path, "a"), machine(shared_store, tmp_path, "b")
    old = run_backup(tree, a.repo, a.catalog, BackupOptions(chunk_size=CHUNK)).manifest.name
    write_at(tree / "small.txt", 0, b"NEW")
    b.sync()
    gc_report: dict[str, Any] = {}

    class GcDuringBackup:
        """b's progress: runs gc on machine a once b has read its first chunk."""

        def start(self, phase: str, total: int, unit: Unit = "bytes") -> None:
            pass

        def advance(self, n: int) -> None:
            if not gc_report:
                gc_report["r"] = run_gc(a.repo, a.catalog, GCOptions(
                    RetentionPolicy(last=0), grace=timedelta(0), allow_empty=True))

        def finish(self) -> None:
            pass

    result = run_backup(tree, b.repo, b.catalog, BackupOptions(chunk_size=CHUNK, workers=2),
                        GcDuringBackup())
    report = gc_report["r"]
    assert report.deleted_backups == [old]
    assert report.blob_deletion_skipped and "backup is running" in report.blob_deletion_skipped
    assert result.stats.chunks_known > 0  # b reused blobs of the backup gc deleted
    b.sync(list_blobs=True)
    assert verify(b.repo, b.catalog, None).damage == []
    dest = tmp_path / "dest"
    execute_restore(plan_restore(result.manifest, dest, RestoreOptions()), b.repo,
                    RestoreOptions())
    assert_same_tree(tree, dest)
