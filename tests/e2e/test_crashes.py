"""kill -9 at deterministic points of backup, restore and gc (``PITREOS_CRASH_AT``, see
pitreos/crashpoints.py): nothing half done is ever listed, the next run succeeds,
``verify --all`` and ``catalog check`` pass, every listed backup restores byte-identical
and equally sparse, and a node's state file stays dirty until its restore ends.

Backup and gc are killed at every point on the local store, and on the GCS server at
the points where what the store holds changes (its markers, blobs and manifests are
objects there): a run of every point on it would take minutes of the suite's 20."""

import os
import signal
from pathlib import Path

import pytest

from .helpers import (
    CHUNK,
    Result,
    Runner,
    assert_no_more_disk,
    assert_same_tree,
    dirty_byte,
    make_node,
    sparse_copy,
    write_at,
)
from .servers import Backend

BACKUP_POINTS = [f"backup.blob_stored:{n}" for n in range(1, 17)] + [
    "backup.blobs_flushed:1", "backup.before_manifest:1", "backup.manifest_written:1",
    "backup.before_marker_removed:1"]
RESTORE_POINTS = [f"restore.chunk_written:{n}" for n in range(1, 19)] + [
    "restore.before_release:1", "restore.before_marker_removed:1"]
GC_POINTS = ["gc.backup_forgotten:1", "gc.backup_forgotten:2", "gc.manifest_deleted:1",
             "gc.manifest_deleted:2", "gc.blobs_forgotten:1"] + [
    f"gc.blob_deleted:{n}" for n in range(1, 16)]
# on an object store: blobs stored but no manifest; the manifest stored, then the
# catalog and the marker not updated; gc's manifests, its catalog and its blobs half gone
OBJECT_STORE_POINTS = {
    "backup": ["backup.blob_stored:8", "backup.before_manifest:1",
               "backup.manifest_written:1", "backup.before_marker_removed:1"],
    "gc": ["gc.manifest_deleted:1", "gc.blobs_forgotten:1", "gc.blob_deleted:8"],
}


def points_for(store: Backend, operation: str, every: list[str]) -> list[str]:
    if store.name == "file":
        return every
    assert set(OBJECT_STORE_POINTS[operation]) <= set(every)  # a renamed point fails here
    return OBJECT_STORE_POINTS[operation]


def crash(run: Runner, point: str, *args: str) -> Result:
    result = run("--parallel", "1", *args, env={"PITREOS_CRASH_AT": point})
    assert result.returncode == -signal.SIGKILL, f"{point} was not reached:\n{result.stderr}"
    return result


def listed(run: Runner) -> list[str]:
    return [line.split()[0] for line in run("list").ok().stdout.splitlines()]


def check_store(run: Runner, tmp_path: Path, expected: dict[str, Path],
                names: list[str]) -> None:
    """verify and catalog check pass; each named backup restores as it was taken."""
    run("verify", "--all").ok()
    run("catalog", "check").ok()
    for name in names:
        dest = tmp_path / f"check-{name}"
        run("restore", name, str(dest)).ok()
        assert_same_tree(expected[name], dest)
        assert_no_more_disk(expected[name], dest)


def new_data(src: Path, seed: int) -> None:
    """Sixteen new chunks (and holes around them) in a file changed in place."""
    path = src / "data.bin"
    if not path.exists():
        with open(path, "wb") as f:
            f.truncate(40 * CHUNK)
    for i in range(16):
        write_at(path, (2 * i + seed % 2) * CHUNK, os.urandom(CHUNK))


def keep(src: Path, tmp_path: Path, name: str) -> Path:
    kept = tmp_path / "expected" / name
    kept.parent.mkdir(exist_ok=True)
    sparse_copy(src, kept)
    os.sync()  # allocated, so its extent-tree blocks count as the restored file's do
    return kept


def test_backup_killed_anywhere(cli: Runner, store: Backend, tmp_path: Path) -> None:
    run = cli
    src = tmp_path / "src"
    src.mkdir()
    expected: dict[str, Path] = {}
    for seed, point in enumerate(points_for(store, "backup", BACKUP_POINTS)):
        new_data(src, seed)
        before = listed(run)
        crash(run, point, "backup", str(src), "--chunk-size", str(CHUNK))
        after = listed(run)
        published = [n for n in after if n not in before]
        # only a backup whose manifest was written is listed, and it is whole
        assert len(published) <= 1, point
        if published:
            expected[published[0]] = keep(src, tmp_path, published[0])
        name = run("backup", str(src), "--chunk-size", str(CHUNK)).ok().stdout.strip()
        expected[name] = keep(src, tmp_path, name)
        check_store(run, tmp_path, expected, [*published, name])
    assert set(listed(run)) == set(expected)


@pytest.fixture
def node_pair(tmp_path: Path, run: Runner) -> tuple[Path, str, Path, str]:
    """A node, an older backup of it, and a newer one that differs in 20 chunks."""
    node = make_node(tmp_path / "node")
    older = run("backup", str(node), "--chunk-size", str(CHUNK)).ok().stdout.strip()
    stale = tmp_path / "stale"
    sparse_copy(node, stale)
    for i in range(1, 21):
        write_at(node / "state/shared_memory.bin", i * CHUNK + 100, os.urandom(4096))
    newer = run("backup", str(node), "--chunk-size", str(CHUNK)).ok().stdout.strip()
    return stale, older, node, newer


def test_restore_killed_anywhere(run: Runner, tmp_path: Path,
                                 node_pair: tuple[Path, str, Path, str]) -> None:
    stale, _, node, newer = node_pair
    state = "state/shared_memory.bin"
    for point in RESTORE_POINTS:
        dest = tmp_path / "dest"
        if dest.exists():
            run("restore", "--force", "--delete", _older(run), str(dest)).ok()
        else:
            sparse_copy(stale, dest)
        untouched = (dest / state).read_bytes()
        crash(run, point, "restore", newer, str(dest))
        assert (dest / ".pitreos-restore").exists(), point  # it does not look restored
        if (dest / state).read_bytes() not in (untouched, (node / state).read_bytes()):
            assert dirty_byte(dest / state) == 1, point  # half restored: nodeos refuses it
        run("backup", str(dest)).fails(".pitreos-restore", code=1)
        run("restore", newer, str(dest)).ok()
        assert not (dest / ".pitreos-restore").exists()
        assert dirty_byte(dest / state) == 0
        assert_same_tree(node, dest)
        assert_no_more_disk(node, dest)


def _older(run: Runner) -> str:
    return listed(run)[-1]


def test_gc_killed_anywhere(cli: Runner, store: Backend, tmp_path: Path) -> None:
    run = cli
    src = tmp_path / "src"
    src.mkdir()
    expected: dict[str, Path] = {}
    for seed, point in enumerate(points_for(store, "gc", GC_POINTS)):
        for step in range(2):
            new_data(src, 2 * seed + step)
            name = run("backup", str(src), "--chunk-size", str(CHUNK)).ok().stdout.strip()
            expected[name] = keep(src, tmp_path, name)
        crash(run, point, "gc", "--keep-last", "1", "--grace", "0s")
        # whatever gc had done, what is listed restores
        check_store(run, tmp_path, expected, listed(run))
        run("gc", "--keep-last", "1", "--grace", "0s").ok()
        remaining = listed(run)
        assert len(remaining) == 1, point
        check_store(run, tmp_path, expected, remaining)
