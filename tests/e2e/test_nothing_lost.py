"""Nothing lost, nothing corrupt: each case of the "nothing lost" issue, on the local
store and on the GCS server, reproduced as the operator met it."""

import contextlib
import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
import tracemalloc
from datetime import timedelta
from pathlib import Path
from typing import Any

import libfaketime
import pytest
import yaml

from pitreos import locks
from pitreos.backup import BackupOptions, run_backup
from pitreos.backup.options import BackupStats
from pitreos.backup.pipeline import Pipeline
from pitreos.errors import StoreError, TransientStoreError
from pitreos.gc import GCOptions, run_gc
from pitreos.gcdecision import RetentionPolicy
from pitreos.gcprotocol import BackupGuard
from pitreos.progress import NoProgress
from pitreos.repository import Repository, blob_key, manifest_key
from pitreos.restore import RestoreOptions, execute_restore, plan_restore
from pitreos.stores import open_store
from pitreos.stores.base import Store, StoreWrapper
from pitreos.stores.retry import RetryingStore
from pitreos.verify import verify
from pitreos.workspace import Workspace

from .helpers import (
    CHUNK,
    Runner,
    assert_no_more_disk,
    assert_same_tree,
    big_source,
    dirty_byte,
    make_node,
    sparse_copy,
    stop_signals_at_default,
    write_at,
    written_long_ago,
)
from .servers import Backend, initialized


def backup(cli: Runner, src: Path, *args: str, catalog: Path | None = None,
           env: dict[str, str] | None = None) -> str:
    return cli("backup", str(src), "--chunk-size", str(CHUNK), *args, catalog=catalog,
               env=env).ok().stdout.strip()


def objects(store: Backend) -> Store:
    opened = open_store(store.url, create=True)
    opened.check()
    return opened


def blob_keys(store: Backend) -> list[str]:
    return sorted(i.key for i in objects(store).list("blobs/"))


def manifest_names(store: Backend) -> list[str]:
    return sorted(i.key for i in objects(store).list("manifests/"))


def assert_restores(cli: Runner, name: str, expected: Path, dest: Path) -> None:
    cli("restore", name, str(dest)).ok()
    assert_same_tree(expected, dest)
    assert_no_more_disk(expected, dest)


def faketime_env(offset: str) -> dict[str, str]:
    """Run a process with its clock moved by ``offset`` (libfaketime, preloaded)."""
    _, env = libfaketime.get_reload_information()
    return {**env, "FAKETIME": offset}


# 1. gc's safety must not depend on the machines' clocks agreeing

@pytest.mark.parametrize(("gc_skew", "backup_skew"), [(0, 0), (-600, 0), (600, 0),
                                                      (0, -600), (0, 600), (-1, 0)])
def test_overlapping_gc_is_seen_whatever_the_clocks(
        store: Backend, tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        gc_skew: int, backup_skew: int) -> None:
    """The hard case: gc checked for running backups before b's marker existed, then
    deletes blobs that b reuses; b waits for gc to finish, notices, and stores them
    again. With the gc host's or the backup host's clock off by up to ten minutes
    (in-process: each thread reads its own skewed clock)."""
    real_time = time.time

    def skewed() -> float:
        name = threading.current_thread().name
        return real_time() + (gc_skew if name.startswith("gc") else backup_skew)

    monkeypatch.setattr(time, "time", skewed)
    a = Workspace.open(store.url, catalog_path=tmp_path / "a.sqlite", workers=4, create=True)
    old = run_backup(tree, a.repo, a.catalog, BackupOptions(chunk_size=CHUNK)).manifest.name
    a.close()
    b = Workspace.open(store.url, catalog_path=tmp_path / "b.sqlite", workers=4)
    b.sync()
    checked, release = threading.Event(), threading.Event()
    real_markers = Repository.markers

    def gc_pauses_after_its_check(repo: Repository) -> list[locks.SeenMarker]:
        found = real_markers(repo)
        if threading.current_thread().name == "gc" and not checked.is_set():
            checked.set()
            release.wait(30)
        return found

    monkeypatch.setattr(Repository, "markers", gc_pauses_after_its_check)
    gc_result: dict[str, Any] = {}

    def machine_a_runs_gc() -> None:
        ws = Workspace.open(store.url, catalog_path=tmp_path / "a.sqlite", workers=2)
        gc_result["r"] = run_gc(ws.repo, ws.catalog, GCOptions(
            RetentionPolicy(last=0), grace=timedelta(0), allow_empty=True, workers=2))
        ws.close()

    gc_thread = threading.Thread(name="gc", target=machine_a_runs_gc)
    gc_thread.start()
    assert checked.wait(30)
    threading.Timer(0.5, release.set).start()
    result = run_backup(tree, b.repo, b.catalog, BackupOptions(
        chunk_size=CHUNK, workers=2, gc_poll_seconds=0.1))
    gc_thread.join(30)
    assert gc_result["r"].deleted_backups == [old] and gc_result["r"].blobs_deleted > 0
    assert result.stats.blobs_stored_again > 0  # the gc was seen, the blobs stored again
    b.sync(list_blobs=True)
    assert verify(b.repo, b.catalog, None, deep=True).damage == []
    dest = tmp_path / "dest"
    execute_restore(plan_restore(result.manifest, dest, RestoreOptions()), b.repo,
                    RestoreOptions())
    assert_same_tree(tree, dest)
    b.close()


# 2. a failed backup, a gc elsewhere (its clock ten minutes off), then the retry

@pytest.mark.parametrize("gc_clock", ["-10m", "+10m"])
def test_failed_backup_then_gc_elsewhere_then_retry(cli: Runner, store: Backend, tree: Path,
                                                    tmp_path: Path, gc_clock: str) -> None:
    killed = cli("backup", str(tree), "--chunk-size", str(CHUNK),
                 env={"PITREOS_CRASH_AT": "backup.before_manifest:1"})
    assert killed.returncode == -signal.SIGKILL
    stored = blob_keys(store)
    assert stored and manifest_names(store) == []
    # machine G, its clock off, its own catalog: the orphans are old enough to go
    elsewhere = tmp_path / "gc-machine.sqlite"
    gc = cli("gc", "--keep-last", "1", "--grace", "0s", catalog=elsewhere,
             env=faketime_env(gc_clock)).ok()
    assert f"and {len(stored)} blobs" in gc.stderr  # the killed backup's marker is stale
    assert blob_keys(store) == []
    # the retry on machine A must not trust what its catalog recorded before
    name = backup(cli, tree)
    cli("verify", "--all", "--deep").ok()
    assert_restores(cli, name, tree, tmp_path / "dest")


def test_a_name_gc_removed_never_names_another_backup(cli: Runner, store: Backend,
                                                       tree: Path, tmp_path: Path) -> None:
    """Names have whole seconds: a backup taken in the second of one that gc removed
    (a fast cron, or a clock set back) would take its name, and the name would mean two
    backups to a script or to a catalog that saw the first. Machine B learns of the gc
    by its sync; machine C's catalog, made after the gc, never knew the name: the store
    records it."""
    frozen = faketime_env("2026-11-28 12:00:00")  # every process in the same second
    machine_b, machine_c = tmp_path / "b.sqlite", tmp_path / "c.sqlite"
    first = backup(cli, tree, env=frozen)
    second = backup(cli, tree, env=frozen)
    assert first < second
    cli("catalog", "sync", catalog=machine_b).ok()
    cli("gc", "--keep-last", "1", "--grace", "0s").ok()
    third = backup(cli, tree, env=frozen)
    cli("catalog", "sync", catalog=machine_b).ok()
    fourth = backup(cli, tree, env=frozen, catalog=machine_b)
    fifth = backup(cli, tree, env=frozen, catalog=machine_c)
    assert len({first, second, third, fourth, fifth}) == 5
    listed = {line.split()[0] for line in cli("list").ok().stdout.splitlines()}
    assert listed == {second, third, fourth, fifth}


def test_a_file_written_again_in_the_tick_it_was_read_is_read_again(
        cli: Runner, store: Backend, tmp_path: Path) -> None:
    """A file system keeps a file's mtime for a tick (a few ms here; a second or two on
    some): a write in the tick in which a backup read the file leaves its size and mtime
    as the backup saw them, and the next incremental backup kept the old chunks. A file
    modified within 2 s before the scan is read again by the next backup; so is one that
    a tool wrote in place and gave its old mtime back (its ctime moved); an older file
    left alone is still trusted."""
    src = tmp_path / "src"
    src.mkdir()
    busy, quiet, rewritten = src / "busy.db", src / "quiet.db", src / "rewritten.img"
    for path in (busy, quiet, rewritten):
        path.write_bytes(os.urandom(3 * CHUNK))
    for path in (quiet, rewritten):
        written_long_ago(path)
    first = json.loads(cli("backup", str(src), "--chunk-size", str(CHUNK), "--incremental",
                           "--json").ok().stdout)
    assert first["files_read_again_next_time"] == 1  # busy.db
    for path in (busy, rewritten):
        seen = path.stat().st_mtime_ns
        write_at(path, CHUNK, os.urandom(CHUNK))
        # busy.db: the mtime the tick kept (set here to be certain); rewritten.img: the
        # tool's doing (rsync --inplace --times, a restore of another tool)
        os.utime(path, ns=(seen, seen))
    second = cli("backup", str(src), "--chunk-size", str(CHUNK), "--incremental").ok()
    assert "(1 unchanged" in second.stderr  # quiet.db alone
    assert_restores(cli, second.stdout.strip(), src, tmp_path / "dest")


# 3. the store wiped (or the bucket recreated), the catalog kept

def test_store_wiped_catalog_kept(cli: Runner, store: Backend, tree: Path,
                                  tmp_path: Path) -> None:
    backup(cli, tree)
    wiped = objects(store)
    for info in list(wiped.list("")):
        wiped.delete(info.key)
    if store.name == "file":
        shutil.rmtree(Path(store.url.removeprefix("file://")))
    # a wiped store is no store: nothing is backed up into it until it is made again
    cli("backup", str(tree), "--chunk-size", str(CHUNK)).fails("pitreos init", code=10)
    cli("init").ok()
    again = cli("backup", str(tree), "--chunk-size", str(CHUNK)).ok()
    assert "catalog.store_replaced" in again.stderr
    assert "stored 0 new blobs" not in again.stderr
    cli("verify", "--all", "--deep").ok()
    cli("catalog", "check").ok()
    assert_restores(cli, again.stdout.strip(), tree, tmp_path / "dest")


# 4. a damaged blob is repaired by the next backup of the same data

@pytest.mark.parametrize("repair", [False, True])
def test_damaged_blob_is_stored_again(cli: Runner, store: Backend, tree: Path,
                                      tmp_path: Path, repair: bool) -> None:
    first = backup(cli, tree)
    victim = blob_keys(store)[0]
    blobs = objects(store)
    damaged = bytearray(blobs.get(victim))
    damaged[-1] ^= 0xFF
    blobs.put(victim, bytes(damaged), overwrite=True)
    flags = ["--repair"] if repair else []
    cli("verify", "--all", "--deep", *flags).fails("1 blobs damaged", code=1)
    if repair:
        assert victim not in blob_keys(store)  # every machine's listing sees it gone
        other = tmp_path / "other.sqlite"  # another machine: its listing tells it
        cli("catalog", "sync", catalog=other).ok()
        backup(cli, tree, "--incremental", catalog=other)
    else:
        for _ in range(2):  # incremental or not, the next backup stores it again
            backup(cli, tree, "--incremental")
    cli("verify", "--all", "--deep").ok()
    assert_restores(cli, first, tree, tmp_path / "dest")


# 5. a retried conditional write is not a collision; copy is idempotent and clean

class DropsFirstAnswer(StoreWrapper):
    """The put reaches the store, its answer is lost once (for keys under ``prefix``)."""

    def __init__(self, inner: Store, prefix: str) -> None:
        super().__init__(inner)
        self.prefix = prefix
        self.dropped = 0

    def put(self, key: str, data: bytes, *, overwrite: bool = False) -> bool:
        written = self.inner.put(key, data, overwrite=overwrite)
        if key.startswith(self.prefix) and not self.dropped:
            self.dropped += 1
            raise TransientStoreError(f"cannot write {key}: connection reset (injected)")
        return written


def test_retried_manifest_write_is_our_own(store: Backend, tree: Path,
                                          tmp_path: Path) -> None:
    dropping = DropsFirstAnswer(open_store(store.url, create=True), "manifests/")
    dropping.check()
    repo = Repository(RetryingStore(dropping, sleep=lambda _: None))
    ws = Workspace(repo, _catalog(tmp_path, repo), workers=2)
    result = run_backup(tree, ws.repo, ws.catalog, BackupOptions(chunk_size=CHUNK))
    assert dropping.dropped == 1
    assert manifest_names(store) == [manifest_key(result.manifest.name)]
    ws.close()


def _catalog(tmp_path: Path, repo: Repository) -> Any:
    from pitreos.catalog import Catalog

    return Catalog(tmp_path / "c.sqlite", repo.url)


def test_copy_twice_sends_nothing_and_a_refused_copy_leaves_no_manifest(
        cli: Runner, store: Backend, tree: Path, tmp_path: Path) -> None:
    name = backup(cli, tree)
    dest = (tmp_path / "dest-store").as_uri()
    cli("init", env={"PITREOS_STORE": dest}).ok()
    dest_catalog = tmp_path / "dest.sqlite"
    cli("copy", name, "--to", dest, "--to-catalog", str(dest_catalog)).ok()
    again = cli("copy", name, "--to", dest, "--to-catalog", str(dest_catalog)).ok()
    assert "identical: nothing sent" in again.stderr
    # a second destination already holding one of the sha1s with other data
    other = tmp_path / "other-store"
    first_blob = blob_keys(store)[0]
    fake = Repository(open_store(other.as_uri(), create=True))
    fake.initialize(CHUNK)
    from pitreos.hashing import ChunkDigest

    sha1 = first_blob.rpartition("/")[2]
    stranger = b"other bytes entirely" * 100
    fake.put_blob(sha1, fake.encode_blob(stranger, ChunkDigest(sha1, "ab" * 32)))
    cli("copy", name, "--to", other.as_uri(), "--to-catalog",
        str(tmp_path / "other.sqlite")).fails("sha1 collision", code=1)
    assert not (other / "manifests").exists() or not list((other / "manifests").iterdir())
    cli("list", env={"PITREOS_STORE": other.as_uri()},
        catalog=tmp_path / "other.sqlite").ok()


# 6. once its manifest is published, a backup has succeeded

class IndexWritesFail(StoreWrapper):
    def put(self, key: str, data: bytes, *, overwrite: bool = False) -> bool:
        if key.startswith("index/"):
            raise StoreError(f"cannot write {key}: No space left on device (injected)")
        return self.inner.put(key, data, overwrite=overwrite)


def test_backup_published_despite_a_failed_index_write(store: Backend, tree: Path,
                                                       tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture
                                                       ) -> None:
    inner = IndexWritesFail(open_store(store.url, create=True))
    inner.check()
    repo = Repository(inner)
    ws = Workspace(repo, _catalog(tmp_path, repo), workers=2)
    with caplog.at_level("WARNING", logger="pitreos"):
        result = run_backup(tree, ws.repo, ws.catalog, BackupOptions(chunk_size=CHUNK))
    assert "manifest.index_not_updated" in caplog.text
    assert manifest_names(store) == [manifest_key(result.manifest.name)]
    assert verify(ws.repo, ws.catalog, None, deep=True).damage == []
    ws.close()


def test_a_store_that_fills_up_fails_cleanly(run: Runner, tree: Path, tmp_path: Path) -> None:
    """A real tmpfs of 256 KiB: the backup fails with one line and nothing is listed."""
    mount = tmp_path / "small-fs"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
                   check=True)
    try:
        big = tmp_path / "big"
        big.mkdir()
        (big / "data").write_bytes(os.urandom(2 << 20))
        store_url = (mount / "store").as_uri()
        run("init", store=store_url).ok()
        run("backup", str(big), store=store_url).fails("No space left on device", code=1)
        assert not list((mount / "store").glob("manifests/*.yaml"))
        assert run("list", store=store_url).ok().stdout == ""
    finally:
        subprocess.run(["umount", str(mount)], check=True)


# 7. an interrupted restore leaves a state file that nodeos refuses

def test_interrupted_restore_keeps_the_state_dirty(cli: Runner, store: Backend,
                                                   tmp_path: Path) -> None:
    node = make_node(tmp_path / "node")
    name = backup(cli, node)
    stale = tmp_path / "stale"
    sparse_copy(node, stale)
    write_at(node / "state/shared_memory.bin", 3 * CHUNK, b"newer state" * 1000)
    newer = backup(cli, node)
    killed = cli("--parallel", "1", "restore", newer, str(stale),
                 env={"PITREOS_CRASH_AT": "restore.before_release:1"})
    assert killed.returncode == -signal.SIGKILL
    assert dirty_byte(stale / "state/shared_memory.bin") == 1  # nodeos would refuse it
    assert (stale / ".pitreos-restore").exists()
    cli("backup", str(stale)).fails(".pitreos-restore", code=1)  # not a state to keep
    cli("restore", newer, str(stale)).ok()  # resuming its own restore: allowed
    assert dirty_byte(stale / "state/shared_memory.bin") == 0
    assert_same_tree(node, stale)
    cli("restore", name, str(stale)).ok()  # and back to the older one, as cleanly
    assert dirty_byte(stale / "state/shared_memory.bin") == 0


# 8. never restore into a running node

def test_restore_refuses_a_locked_or_dirty_state(cli: Runner, tmp_path: Path,
                                                 store: Backend) -> None:
    node = make_node(tmp_path / "node")
    name = backup(cli, node)
    live = tmp_path / "live"
    sparse_copy(node, live)
    state = live / "state/shared_memory.bin"
    write_at(state, 8, b"\x01")  # dirty, as a running nodeos keeps it
    write_at(state, 3 * CHUNK, b"the running node's own pages")
    before = state.read_bytes()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys, time\n"
         "f = open(sys.argv[1], 'r+b'); fcntl.lockf(f, fcntl.LOCK_EX)\n"
         "print('locked', flush=True); time.sleep(60)", str(state)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        cli("restore", name, str(live)).fails("locked by another process", code=11)
        assert state.read_bytes() == before
    finally:
        holder.kill()
        holder.wait()
    cli("restore", name, str(live)).fails("dirty flag set", code=11)
    assert state.read_bytes() == before
    cli("restore", name, str(live), "--force").ok()
    assert_same_tree(node, live)


# 9. --delete says what it removes, and refuses to remove much

def test_restore_delete_prints_each_path_and_refuses_many(cli: Runner, store: Backend,
                                                          tree: Path, tmp_path: Path) -> None:
    name = backup(cli, tree)
    dest = tmp_path / "dest"
    cli("restore", name, str(dest)).ok()
    (dest / "extra-1").write_text("x")
    (dest / "extra-dir").mkdir()
    (dest / "extra-dir/inner").write_text("y")
    removed = cli("restore", name, str(dest), "--delete").ok()
    for rel in ("extra-1", "extra-dir"):
        assert f"deleted {rel} (not in the backup)" in removed.stderr
    sibling = dest / "sibling-app"
    sibling.mkdir()
    for i in range(12):
        (sibling / f"config-{i}").write_text("keep me")
    cli("restore", name, str(dest), "--delete").fails("would remove 13 local paths",
                                                      "--force", code=2)
    assert len(list(sibling.iterdir())) == 12
    dry = cli("restore", name, str(dest), "--delete", "--dry-run").ok()
    assert "not in backup (deleted with --delete): sibling-app" in dry.stdout
    cli("restore", name, str(dest), "--delete", "--force").ok()
    assert not sibling.exists()
    assert_same_tree(tree, dest)


# 10. nothing is written outside the destination

def test_marker_symlink_and_hard_links_are_not_followed(cli: Runner, store: Backend,
                                                        tree: Path, tmp_path: Path) -> None:
    name = backup(cli, tree)
    dest = tmp_path / "dest"
    cli("restore", name, str(dest)).ok()
    outside = tmp_path / "outside-secret"
    outside.write_text("secret content")
    (dest / ".pitreos-restore").symlink_to(outside)
    linked_outside = tmp_path / "outside-linked"
    os.unlink(dest / "small.txt")
    linked_outside.write_text("a file elsewhere")
    os.link(linked_outside, dest / "small.txt")
    result = cli("restore", name, str(dest)).ok()
    assert outside.read_text() == "secret content"
    assert "secret content" not in result.stderr + result.stdout
    assert linked_outside.read_text() == "a file elsewhere"
    assert not (dest / ".pitreos-restore").exists()
    assert_same_tree(tree, dest)


# 11. a manifest that disagrees with its blobs never restores to a wrong file

def _edit_manifest(store: Backend, name: str, edit: Any) -> None:
    objs = objects(store)
    doc = yaml.safe_load(objs.get(manifest_key(name)))
    edit(doc)
    objs.put(manifest_key(name), yaml.safe_dump(doc, sort_keys=False).encode(),
             overwrite=True)


def test_chunk_lengths_are_checked(cli: Runner, store: Backend, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(os.urandom(4 * CHUNK))
    name = backup(cli, src)

    def double_chunk_size(doc: dict[str, Any]) -> None:
        doc["chunk_size"] = 2 * CHUNK
        entry = doc["files"][-1]
        lines = entry["chunks"].splitlines()[:2]
        entry["chunks"] = "".join(f"{i * 2 * CHUNK} {line.split(' ', 1)[1]}\n"
                                  for i, line in enumerate(lines))

    _edit_manifest(store, name, double_chunk_size)
    dest = tmp_path / "dest"
    cli("restore", name, str(dest)).fails("holds 65536 bytes", "disagrees", code=1)
    assert (dest / ".pitreos-restore").exists()  # nothing looks restored

    def lie_about_size(doc: dict[str, Any]) -> None:
        doc["files"][-1]["size"] = 9 * CHUNK

    _edit_manifest(store, name, lie_about_size)
    cli("restore", name, str(tmp_path / "dest2")).fails("chunks listed, size needs", code=1)


# 12. setuid and setgid only when asked for

def test_setuid_is_not_restored_unless_asked(cli: Runner, store: Backend,
                                             tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "tool").write_bytes(b"#!/bin/sh\n")
    os.chmod(src / "tool", 0o6755)
    name = backup(cli, src)
    plain = cli("restore", name, str(tmp_path / "plain")).ok()
    assert stat.S_IMODE((tmp_path / "plain/tool").stat().st_mode) == 0o755
    assert "setuid/setgid bits not restored on 1 paths" in plain.stderr
    cli("restore", name, str(tmp_path / "kept"), "--keep-setuid").ok()
    assert stat.S_IMODE((tmp_path / "kept/tool").stat().st_mode) == 0o6755


# 13. the marker's name is never a backed-up entry

def test_manifest_entry_named_like_the_marker_is_refused(cli: Runner, store: Backend,
                                                         tree: Path, tmp_path: Path) -> None:
    name = backup(cli, tree)

    def add_marker_entry(doc: dict[str, Any]) -> None:
        doc["files"].append({"path": ".pitreos-restore", "type": "file", "mode": "0644",
                             "mtime": "2026-01-01T00:00:00.000000000Z", "size": 0})

    _edit_manifest(store, name, add_marker_entry)
    cli("restore", name, str(tmp_path / "dest")).fails("reserved", code=1)


# 14. SIGTERM and SIGHUP stop like Ctrl-C; markers of gone processes hold nothing up

def _start(store: Backend, tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, **store.env, "PITREOS_STORE": store.url,
           "PITREOS_CATALOG": str(tmp_path / "c.sqlite")}
    return subprocess.Popen([sys.executable, "-m", "pitreos", *args], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=stop_signals_at_default)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_stop_signals_clean_up(store: Backend, tmp_path: Path, signum: int, code: int) -> None:
    src = big_source(tmp_path, 320)
    proc = _start(store, tmp_path, "--parallel", "1", "backup", str(src), "--chunk-size",
                  "1MiB")
    deadline = time.monotonic() + 60
    while len(blob_keys(store)) < 3:
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert out == "" and "Traceback" not in err
    assert [line for line in err.splitlines() if line.startswith("pitreos: ")] == [
        f"pitreos: stopped by {signal.Signals(signum).name}; nothing incomplete looks "
        "complete: run the command again"]
    assert manifest_names(store) == []
    assert list(objects(store).list("locks/")) == []  # its marker went with it


def _in_session(sid: int) -> list[int]:
    """The processes still alive in session ``sid`` (their stat's sixth field)."""
    alive = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            alive.append(int(entry))
    return alive


@pytest.mark.parametrize("how", ["SIGTERM to the group", "SIGKILL to the coordinator"])
def test_a_backup_in_worker_processes_stopped_leaves_no_process(tmp_path: Path,
                                                                how: str) -> None:
    """320 MiB on a local store with 2 workers: the chunk work runs in worker processes.
    systemd (KillMode=control-group) and a terminal signal every process of the group:
    the workers leave the signal to the coordinator, which stops as it does alone. A
    coordinator killed outright takes its workers with it. Either way no manifest, and
    no process of the backup is left behind (a worker left waiting for work once held
    the caller's pipes open: the caller hung)."""
    src = big_source(tmp_path, 320)
    store = initialized(Backend("file", (tmp_path / "store").as_uri(), {}))
    env = {**os.environ, "PITREOS_STORE": store.url,
           "PITREOS_CATALOG": str(tmp_path / "c.sqlite")}
    proc = subprocess.Popen([sys.executable, "-m", "pitreos", "--parallel", "2", "backup",
                             str(src), "--chunk-size", "1MiB"], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=stop_signals_at_default)
    try:
        deadline = time.monotonic() + 60
        while len(blob_keys(store)) < 3 or len(_in_session(proc.pid)) < 3:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        assert set(_in_session(proc.pid)) - {proc.pid}  # the forkserver and its workers
        if how == "SIGTERM to the group":
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            proc.kill()
        out, err = proc.communicate(timeout=60)  # hung while a worker held the pipes
        assert manifest_names(store) == []
        if how == "SIGTERM to the group":
            assert proc.returncode == 143, err
            assert "Traceback" not in err and out == ""
            assert [line for line in err.splitlines() if line.startswith("pitreos: ")] == [
                "pitreos: stopped by SIGTERM; nothing incomplete looks complete: run the "
                "command again"]
            assert list(objects(store).list("locks/")) == []
        else:
            assert proc.returncode == -signal.SIGKILL
        while _in_session(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _in_session(proc.pid) == []
    finally:  # a failed check leaves no backup running on after the test
        for pid in _in_session(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_a_killed_gc_holds_nothing_up_and_unlock_lists_markers(
        cli: Runner, store: Backend, tree: Path, tmp_path: Path) -> None:
    backup(cli, tree)
    write_at(tree / "small.txt", 0, b"changed")
    backup(cli, tree)
    killed = cli("gc", "--keep-last", "1", "--grace", "0s",
                 env={"PITREOS_CRASH_AT": "gc.blobs_forgotten:1"})
    assert killed.returncode == -signal.SIGKILL
    started = time.monotonic()
    name = backup(cli, tree)  # no 6-hour wait: the gc's process is gone
    assert time.monotonic() - started < 30
    listing = cli("unlock").ok()
    assert "released gc" in listing.stdout and "process gone" in listing.stdout
    assert "1 markers released" in listing.stderr
    markers = Repository(objects(store)).markers()
    assert [m.marker.finished is not None for m in markers] == [True]  # a record now
    cli("gc", "--keep-last", "1", "--grace", "0s").ok()
    cli("verify", "--all", "--deep").ok()
    assert_restores(cli, name, tree, tmp_path / "dest")


def test_a_backup_waiting_for_gc_says_so(store: Backend, tree: Path, tmp_path: Path,
                                         run: Runner) -> None:
    """A gc marker of another machine, live: the backup waits, and says so at the
    default verbosity."""
    repo = Repository(objects(store))
    marker = locks.new_marker("gc")
    marker.deleting_blobs = True
    marker.host_id = "another-machine"
    repo.write_marker(marker)
    started = time.monotonic()
    proc = _start(store, tmp_path, "backup", str(tree))
    time.sleep(4)
    marker.finished = time.time()
    repo.write_marker(marker)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "backup.waiting_for_gc" in err
    assert time.monotonic() - started >= 4  # it really waited for the gc to finish
    assert len(manifest_names(store)) == 1  # and then published


def test_storing_again_after_a_gc_streams_the_store_listing(tree: Path, tmp_path: Path) -> None:
    """After a gc overlapped a backup, the blobs it references are checked against one
    listing of the store. The listing is streamed against the backup's own blobs: what
    the check holds follows the backup, not the store (a million other blobs)."""
    ws = Workspace.open((tmp_path / "store").as_uri(), catalog_path=tmp_path / "c.sqlite",
                        create=True)
    result = run_backup(tree, ws.repo, ws.catalog, BackupOptions(chunk_size=CHUNK))
    referenced = {c.digest.sha1 for e in result.manifest.entries for c in e.chunks
                  if c.digest is not None}
    taken = sorted(referenced)[0]
    ws.repo.delete_blob(taken)  # as a gc that overlapped the backup would have
    for i in range(5000):  # other backups' blobs, spread as sha1s are
        path = tmp_path / "store" / blob_key(hashlib.sha1(str(i).encode()).hexdigest())
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    stats = BackupStats()
    pipeline = Pipeline(ws.repo, ws.catalog, BackupGuard(ws.repo), set(), workers=2,
                        stats=stats, progress=NoProgress())
    tracemalloc.start()
    try:
        pipeline.store_again(tree, result.manifest.entries, CHUNK)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert stats.blobs_stored_again == 1
    assert ws.repo.blob_exists(taken)
    # with a set of every name in the store, the peak was 1.1 MB; 133 kB without
    assert peak < 300_000, peak
    ws.close()
