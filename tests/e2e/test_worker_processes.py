"""Worker processes (issue 15): a local store's chunk work in processes gives the same
backups and the same restored files as threads, and whatever goes wrong in a worker
reaches the user as the same one-line error."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pitreos import manifest as mf
from pitreos.backup import BackupOptions, run_backup
from pitreos.chunktasks import SourceFile, StoreTask, store_chunks
from pitreos.cores import usable_cores
from pitreos.errors import PitreosError, RestoreError, SourceChanged
from pitreos.hashing import digest
from pitreos.parallel import WorkerPool, imap_unordered
from pitreos.restore import RestoreOptions, execute_restore, plan_restore
from pitreos.restore import plan as restore_plan
from pitreos.restore.execute import RestoreStats
from pitreos.restore.plan import MAX_CHECK_CHUNKS, RestorePlan
from pitreos.sparse import punch_hole
from pitreos.workspace import Workspace

from .helpers import (
    CHUNK,
    assert_no_more_disk,
    assert_same_tree,
    dirty_byte,
    make_node,
    make_sparse,
    sparse_copy,
    write_at,
    written_long_ago,
)

ALWAYS = 0  # process_min_bytes: worker processes for any amount of work
NEVER = 1 << 62


def _source(root: Path) -> Path:
    make_node(root)
    # more chunks than one task holds (64 MiB: 1024 chunks of 64 KiB), holes between,
    # and a file of zeros
    runs = [(i * 27 * CHUNK + 17, os.urandom(CHUNK)) for i in range(40)]
    make_sparse(root / "data/big.bin", 1100 * CHUNK, runs)
    make_sparse(root / "data/zeros.bin", 5 * CHUNK, [(CHUNK, bytes(CHUNK))])
    (root / "data/small.txt").write_text("small\n")
    return written_long_ago(root)


def _workspace(tmp: Path, name: str) -> Workspace:
    return Workspace.open(str(tmp / name), catalog_path=tmp / f"{name}.sqlite",
                          create=True, workers=2)


def _backup(ws: Workspace, source: Path, process_min_bytes: int,
            incremental: bool = False) -> mf.Manifest:
    return run_backup(source, ws.repo, ws.catalog, BackupOptions(
        chunk_size=CHUNK, workers=2, incremental=incremental,
        process_min_bytes=process_min_bytes)).manifest


def _restore(ws: Workspace, manifest: mf.Manifest, dest: Path, process_min_bytes: int,
             pool: WorkerPool | None = None) -> tuple[RestorePlan, RestoreStats]:
    options = RestoreOptions(workers=2, process_min_bytes=process_min_bytes)
    plan = plan_restore(manifest, dest, options, pool=pool)
    return plan, execute_restore(plan, ws.repo, options, pool=pool)


def _blobs(store: Path) -> set[str]:
    return {p.name for p in (store / "blobs").rglob("*") if p.is_file()}


def test_processes_and_threads_make_the_same_backup_and_restore(tmp_path: Path) -> None:
    source = _source(tmp_path / "src")
    with_processes = _workspace(tmp_path, "p")
    with_threads = _workspace(tmp_path, "t")
    a = _backup(with_processes, source, ALWAYS)
    b = _backup(with_threads, source, NEVER)
    assert [(e.path, e.chunks) for e in a.entries] == [(e.path, e.chunks) for e in b.entries]
    assert _blobs(tmp_path / "p") == _blobs(tmp_path / "t")
    assert len(_blobs(tmp_path / "p")) > 40

    dest = tmp_path / "dest"
    _, stats = _restore(with_processes, a, dest, ALWAYS)
    assert_same_tree(source, dest)
    assert_no_more_disk(source, dest)
    assert stats.chunks_fetched == len(_blobs(tmp_path / "p"))  # each chunk once
    assert dirty_byte(dest / "state/shared_memory.bin") == 0  # released after the last write

    # in place: two chunks of the big file changed, one truncated file, one removed
    write_at(dest / "data/big.bin", 27 * CHUNK + 20, b"changed")
    write_at(dest / "data/big.bin", 1053 * CHUNK + 20, b"changed")
    os.truncate(dest / "data/small.txt", 2)
    (dest / "blocks/blocks.index").unlink()
    with WorkerPool(2) as pool:  # as `pitreos restore`: one pool checks, then writes
        plan, stats = _restore(with_processes, a, dest, ALWAYS, pool)
    assert_same_tree(source, dest)
    big = next(p for p in plan.files if p.entry.path == "data/big.bin")
    assert big.fetch == [27, 1053]
    assert big.kept == 78  # 40 runs of a chunk at +17: 80 chunks with data


@pytest.mark.parametrize("process_min_bytes", [ALWAYS, NEVER])
@pytest.mark.parametrize("most_chunks", [1, 3, MAX_CHECK_CHUNKS])
def test_each_local_chunk_is_judged_once_whatever_the_check_tasks_cover(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, process_min_bytes: int,
        most_chunks: int) -> None:
    """The check's tasks find the local extents over their own chunks: cut anywhere
    (one chunk a task, three, or the whole file), every chunk comes out right once."""
    monkeypatch.setattr(restore_plan, "MAX_CHECK_CHUNKS", most_chunks)
    source = tmp_path / "src"
    data = [i for i in range(12) if i not in (4, 6)]  # holes at 4 and 6
    make_sparse(source / "data/mixed.bin", 11 * CHUNK + 100,
                [(i * CHUNK, bytes([i + 1]) * CHUNK) for i in data[:-1]]
                + [(11 * CHUNK, b"\x0c" * 100)])  # a short last chunk
    make_sparse(source / "data/log.bin", 9 * CHUNK,
                [(i * CHUNK, os.urandom(CHUNK)) for i in range(9)])
    ws = _workspace(tmp_path, "s")
    manifest = run_backup(source, ws.repo, ws.catalog, BackupOptions(
        chunk_size=CHUNK, workers=2, appendonly=("data/log.bin",))).manifest
    dest = tmp_path / "dest"
    sparse_copy(source, dest)
    mixed = dest / "data/mixed.bin"
    write_at(mixed, CHUNK + 5, b"changed")
    write_at(mixed, 9 * CHUNK + 5, b"changed")
    write_at(mixed, 4 * CHUNK + 5, b"data where the backup has none")
    fd = os.open(mixed, os.O_WRONLY)
    try:
        punch_hole(fd, 2 * CHUNK, CHUNK)  # a hole where the backup has data
        os.ftruncate(fd, 11 * CHUNK + 50)  # the short chunk cut shorter still
    finally:
        os.close(fd)
    log = dest / "data/log.bin"
    fd = os.open(log, os.O_WRONLY)
    try:
        punch_hole(fd, 4 * CHUNK, CHUNK)  # inside the prefix, trusted by its ends
        os.ftruncate(fd, 7 * CHUNK)  # two chunks short
    finally:
        os.close(fd)

    plan, stats = _restore(ws, manifest, dest, process_min_bytes)
    assert_same_tree(source, dest)
    assert_no_more_disk(source, dest)
    got = {p.entry.path: p for p in plan.files}
    assert (got["data/mixed.bin"].fetch, got["data/mixed.bin"].over_data) == \
        ([1, 2, 9, 11], {1, 9, 11})
    assert (got["data/mixed.bin"].punch, got["data/mixed.bin"].kept,
            got["data/mixed.bin"].checked) == ([4], 6, 9)  # kept: 0, 3, 5, 7, 8, 10
    assert (got["data/log.bin"].trusted, got["data/log.bin"].fetch,
            got["data/log.bin"].over_data, got["data/log.bin"].kept,
            got["data/log.bin"].checked) == (7, [4, 7, 8], set(), 6, 0)
    assert plan.bytes_checked == 8 * CHUNK  # the chunks hashed: 0, 1, 3, 5, 7-10
    assert stats.chunks_fetched == 7 and stats.chunks_holed == 1


def _one_file_restored_over_a_copy(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int, data_chunks: int,
        before_the_check: Callable[[Path], None]) -> tuple[Path, Path, Callable[[], RestorePlan]]:
    """A backup of ``data/f.bin`` (``size`` bytes, data in its first ``data_chunks``
    chunks), a copy of it as the destination, and a restore over the copy during which
    another program acts on the local file (``before_the_check``) after the plan's
    lstat and before its check tasks run. Returns the source, the destination and the
    restore to run."""
    source = tmp_path / "src"
    make_sparse(source / "data/f.bin", size,
                [(i * CHUNK, os.urandom(CHUNK)) for i in range(data_chunks)])
    ws = _workspace(tmp_path, "s")
    manifest = run_backup(source, ws.repo, ws.catalog,
                          BackupOptions(chunk_size=CHUNK, workers=2)).manifest
    dest = tmp_path / "dest"
    sparse_copy(source, dest)
    check = restore_plan._check_local_chunks

    def act_then_check(*args: Any, **kwargs: Any) -> int:
        before_the_check(dest / "data/f.bin")
        return check(*args, **kwargs)

    monkeypatch.setattr(restore_plan, "_check_local_chunks", act_then_check)
    return source, dest, lambda: _restore(ws, manifest, dest, NEVER)[0]


def test_a_file_cut_shorter_between_the_plan_and_its_check_is_restored_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The chunks it lost are fetched, and the file ends at the backup's size though
    the backup ends in a hole (nothing to fetch there)."""
    source, dest, restore = _one_file_restored_over_a_copy(
        tmp_path, monkeypatch, 4 * CHUNK, 3, lambda f: os.truncate(f, CHUNK + 10))
    plan = restore()
    assert plan.files[0].local_size == 4 * CHUNK  # as the plan saw it
    assert plan.files[0].fetch == [1, 2]
    assert_same_tree(source, dest)


def test_a_file_removed_between_the_plan_and_its_check_is_named(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, dest, restore = _one_file_restored_over_a_copy(
        tmp_path, monkeypatch, 2 * CHUNK, 2, Path.unlink)
    with pytest.raises(RestoreError) as raised:
        restore()
    assert str(dest / "data/f.bin") in str(raised.value)
    assert "nothing was changed" in str(raised.value)
    assert not (dest / ".pitreos-restore").exists()


def test_an_incremental_backup_in_processes_reads_only_what_changed(tmp_path: Path) -> None:
    source = _source(tmp_path / "src")
    ws = _workspace(tmp_path, "s")
    _backup(ws, source, ALWAYS)
    before = _blobs(tmp_path / "s")
    write_at(source / "data/big.bin", 27 * CHUNK + 20, b"changed")
    second = _backup(ws, source, ALWAYS, incremental=True)
    assert len(_blobs(tmp_path / "s") - before) == 1
    dest = tmp_path / "dest"
    _restore(ws, second, dest, ALWAYS)
    assert_same_tree(source, dest)


def _bytes_read_by_this_process() -> int:
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("rchar:"))


def test_a_new_chunk_is_read_once_to_hash_and_store_it(tmp_path: Path) -> None:
    """On a local store the task that hashes a new chunk stores its blob too: the chunk
    is not read (nor hashed) a second time by a store task. Threads, so that every read
    is this process's."""
    data = tmp_path / "src/data.bin"
    data.parent.mkdir()
    data.write_bytes(os.urandom(300 * CHUNK))
    ws = _workspace(tmp_path, "s")
    before = _bytes_read_by_this_process()
    manifest = _backup(ws, tmp_path / "src", NEVER)
    read = _bytes_read_by_this_process() - before
    assert len(_blobs(tmp_path / "s")) == 300
    assert 300 * CHUNK <= read < 1.3 * 300 * CHUNK
    dest = tmp_path / "dest"
    _restore(ws, manifest, dest, NEVER)
    assert (dest / "data.bin").read_bytes() == data.read_bytes()


def test_a_damaged_store_fails_a_restore_in_processes_with_its_one_line(
        tmp_path: Path) -> None:
    source = _source(tmp_path / "src")
    ws = _workspace(tmp_path, "s")
    manifest = _backup(ws, source, ALWAYS)
    victim = next(c.digest.sha1 for e in manifest.entries if e.path == "data/big.bin"
                  for c in e.chunks if c.digest is not None)
    os.unlink(tmp_path / "s/blobs" / victim[:2] / victim)
    with pytest.raises(RestoreError, match=f"object blobs/{victim[:2]}/{victim} not found"):
        _restore(ws, manifest, tmp_path / "dest", ALWAYS)
    assert (tmp_path / "dest/.pitreos-restore").exists()  # never looks restored


def test_a_chunk_that_changed_after_it_was_hashed_is_not_stored(tmp_path: Path) -> None:
    path = tmp_path / "f"
    make_sparse(path, 2 * CHUNK, [(0, os.urandom(2 * CHUNK))])
    st = os.stat(path)
    hashed = digest(path.read_bytes()[:CHUNK])
    write_at(path, 10, b"written after the hash")
    ws = _workspace(tmp_path, "s")
    source = SourceFile(str(path), st.st_dev, st.st_ino, st.st_size, CHUNK,
                        ((0, 2 * CHUNK),))
    with pytest.raises(SourceChanged, match="changed while it was backed up"):
        store_chunks(ws.repo, StoreTask(source, ((0, hashed, False),)))
    assert _blobs(tmp_path / "s") == set()


def test_a_file_replaced_under_a_task_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "f"
    make_sparse(path, CHUNK, [(0, os.urandom(CHUNK))])
    st = os.stat(path)
    source = SourceFile(str(path), st.st_dev, st.st_ino, st.st_size, CHUNK, ((0, CHUNK),))
    sparse_copy(path, tmp_path / "g")
    os.replace(tmp_path / "g", path)  # same bytes, another file
    ws = _workspace(tmp_path, "s")
    with pytest.raises(SourceChanged, match="was replaced"):
        store_chunks(ws.repo, StoreTask(source, ((0, digest(path.read_bytes()), False),)))


def _die(_: int) -> int:
    os.kill(os.getpid(), signal.SIGKILL)
    return 0


def _pid(_: int) -> int:
    return os.getpid()


def test_a_worker_process_that_dies_is_an_error_not_a_hang() -> None:
    with pytest.raises(PitreosError, match="a worker process died"):
        list(imap_unordered(_die, range(4), workers=2, processes=True))


def test_work_runs_in_other_processes_and_no_more_than_the_cores() -> None:
    pids = set(imap_unordered(_pid, range(64), workers=64, processes=True))
    assert os.getpid() not in pids
    assert 1 <= len(pids) <= usable_cores()


def test_a_shared_pool_serves_its_maps_with_the_same_processes_and_ends_them() -> None:
    """Separate pools start new processes for each map; one pool keeps its own."""
    with WorkerPool(2) as pool:
        first = set(pool.imap_unordered(_pid, range(32), processes=True))
        second = set(pool.imap_unordered(_pid, range(32), processes=True))
    assert os.getpid() not in first | second
    assert 1 <= len(first | second) <= min(2, usable_cores())
    for pid in first | second:  # ended and reaped when the pool closed
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def _nothing(_: int) -> int:
    return 0


class _Unpicklable(Exception):
    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("cannot pickle this error")


def _raise_unpicklable(_: int) -> int:
    raise _Unpicklable("no way back")


def _raise_source_changed(i: int) -> int:
    raise SourceChanged(f"task {i} saw its file change")


def test_a_process_map_adds_no_thread_to_the_coordinator() -> None:
    """The calling thread feeds and reads the workers itself: the threads a
    ProcessPoolExecutor adds (and wakes for every task) held the GIL in the coordinator."""
    before = set(threading.enumerate())  # other tests' idle threads may end meanwhile
    added = []
    with WorkerPool(2) as pool:
        for _ in pool.imap_unordered(_nothing, range(40), processes=True):
            added.append(set(threading.enumerate()) - before)
    assert len(added) == 40 and not any(added), added


def test_errors_in_worker_processes_come_back_as_themselves_or_as_one_line() -> None:
    with WorkerPool(2) as pool:
        with pytest.raises(SourceChanged, match=r"task \d+ saw its file change"):
            list(pool.imap_unordered(_raise_source_changed, range(8), processes=True))
        with pytest.raises(PitreosError, match="_Unpicklable in a worker process"):
            list(pool.imap_unordered(_raise_unpicklable, range(8), processes=True))
        # the pool still serves after errors raised by tasks
        assert len(set(pool.imap_unordered(_pid, range(8), processes=True))) >= 1


def _fail_deep_inside(_: int) -> int:
    raise ValueError("a bug in a task")


def test_a_bug_in_a_worker_process_keeps_the_traceback_of_where_it_arose() -> None:
    """What PITREOS_TRACEBACK=1 shows for a bug in a task reaches into the worker."""
    with WorkerPool(2) as pool, pytest.raises(ValueError, match="a bug in a task") as raised:
        list(pool.imap_unordered(_fail_deep_inside, range(4), processes=True))
    notes = "\n".join(getattr(raised.value, "__notes__", []))
    assert "in a worker process" in notes and "_fail_deep_inside" in notes


def test_a_worker_killed_while_idle_fails_the_next_map_in_one_line() -> None:
    with WorkerPool(2) as pool:
        pids = set(pool.imap_unordered(_pid, range(16), processes=True))
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
        with pytest.raises(PitreosError, match="a worker process died"):
            list(pool.imap_unordered(_pid, range(16), processes=True))


def test_a_task_carries_the_extents_of_its_chunks_in_any_order(tmp_path: Path) -> None:
    # a batch of chunks to store comes in the order their hashes came back; a task made
    # from [5, 1] once carried no extents and read zeros (the bench's full backup
    # failed with "changed while it was backed up")
    path = tmp_path / "f"
    data = os.urandom(CHUNK)
    make_sparse(path, 6 * CHUNK, [(CHUNK, data), (5 * CHUNK, data)])
    st = os.stat(path)
    whole = SourceFile(str(path), st.st_dev, st.st_ino, st.st_size, CHUNK,
                       ((CHUNK, 2 * CHUNK), (5 * CHUNK, 6 * CHUNK)))
    part = whole.part([5, 1])
    assert part.extents == whole.extents
    ws = _workspace(tmp_path, "s")
    result = store_chunks(ws.repo, StoreTask(part, ((5, digest(data), False),
                                                    (1, digest(data), False))))
    assert [b.written for b in result.blobs] == [True, False]


def test_a_program_read_from_stdin_keeps_the_work_on_threads(tmp_path: Path) -> None:
    # worker processes import the main module; one read from stdin cannot be: the work
    # stays on threads instead of failing with "a worker process died"
    source = _source(tmp_path / "src")
    program = f"""
from pathlib import Path
from pitreos.backup import BackupOptions, run_backup
from pitreos.workspace import Workspace
ws = Workspace.open({str(tmp_path / "s")!r}, catalog_path=Path({str(tmp_path / "c")!r}),
                    create=True, workers=2)
result = run_backup(Path({str(source)!r}), ws.repo, ws.catalog,
                    BackupOptions(chunk_size={CHUNK}, workers=2, process_min_bytes=0))
print(result.stats.blobs_stored)
"""
    done = subprocess.run([sys.executable, "-"], input=program, capture_output=True,
                          text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) == len(_blobs(tmp_path / "s")) > 40


# A program's children that are multiprocessing's fork server (its command line names
# the module; spelt in two parts so that this program's own command line does not).
_FIND_SERVERS = """
import os, time

def servers(wait=0.0):
    deadline = time.monotonic() + wait
    while True:
        found = []
        for entry in os.scandir("/proc"):
            try:
                with open(f"/proc/{entry.name}/stat") as f:
                    parent = int(f.read().rpartition(")")[2].split()[1])
                with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                    cmdline = f.read()
            except (OSError, ValueError):
                continue
            if parent == os.getpid() and b"multiprocessing.fork" b"server" in cmdline:
                found.append(int(entry.name))
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.01)
"""


def test_a_server_started_early_is_the_one_the_workers_come_from(tmp_path: Path) -> None:
    program = _FIND_SERVERS + """
import json
from pitreos import parallel
before = servers()
parallel.start_process_server()
started = servers(wait=10)
with parallel.WorkerPool(2) as pool:
    parents = set(pool.imap_unordered(parallel.call, [os.getppid] * 8, processes=True))
print(json.dumps([before, started, sorted(parents), servers()]))
"""
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    before, started, parents, after = json.loads(done.stdout)
    assert before == [] and len(started) == 1
    assert parents == started == after  # the pool started no server of its own


@pytest.mark.parametrize(("command", "cores", "parallel", "servers"), [
    ("backup", 16, None, 1),
    ("restore", 16, None, 1),
    ("backup", 4, None, 1),
    ("backup", 3, None, 0),  # no core to spare for a server that small jobs never use
    ("restore", 2, None, 0),
    ("backup", 16, 1, 0),  # no worker processes to start
])
def test_backup_and_restore_start_the_worker_server_early_with_cores_to_spare(
        tmp_path: Path, command: str, cores: int, parallel: int | None, servers: int) -> None:
    """The data is too small for worker processes (it stays on threads): a server that
    runs at the end was started as the command started, for the cores it saw."""
    source = tmp_path / "src"
    make_node(source)
    flags = ["--store", (tmp_path / "store").as_uri(), "--catalog", str(tmp_path / "cat")]
    pitreos = [sys.executable, "-m", "pitreos", *flags]
    subprocess.run([*pitreos, "init", "-q"], check=True, cwd=tmp_path, timeout=60)
    if command == "backup":
        args = ["backup", "-q", str(source)]
    else:
        subprocess.run([*pitreos, "backup", "-q", str(source)], check=True, cwd=tmp_path,
                       capture_output=True, timeout=60)
        args = ["restore", "-q", "latest", str(tmp_path / "dest")]
    if parallel is not None:
        args += ["--parallel", str(parallel)]
    program = _FIND_SERVERS + f"""
import sys
import pitreos.cores
pitreos.cores.usable_cores = lambda *args, **kwargs: {cores}
from pitreos.cli import main
sys.argv = ["pitreos", *{flags + args!r}]
try:
    main()
except SystemExit as exc:
    assert not exc.code, exc.code
print(len(servers()))
"""
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.split()[-1]) == servers
    if command == "restore":
        assert_same_tree(source, tmp_path / "dest")


@pytest.mark.parametrize(("cores", "incremental", "servers"), [
    (2, True, 0),  # a rescan of a file changed in place: threads, below 4 cores
    (3, True, 0),
    (4, True, 1),  # from 4 cores, every byte to read counts
    (16, True, 1),
    (2, False, 1),  # a full backup: every chunk is new
])
def test_a_rescan_goes_to_processes_only_with_cores_to_spare(
        tmp_path: Path, cores: int, incremental: bool, servers: int) -> None:
    """Between the backups, one chunk of a 5 MiB file changes in place; the threshold is
    1 MiB. An incremental backup then has 5 MiB to read but nothing new (each chunk has
    a previous digest): below 4 cores it stays on threads, and no worker server runs."""
    source = _source(tmp_path / "src")
    program = _FIND_SERVERS + f"""
import json
from pathlib import Path
import pitreos.cores
pitreos.cores.usable_cores = lambda *args, **kwargs: {cores}
from pitreos.backup import BackupOptions, run_backup
from pitreos.workspace import Workspace

def backup(incremental, process_min_bytes):
    return run_backup(Path({str(source)!r}), ws.repo, ws.catalog, BackupOptions(
        chunk_size={CHUNK}, workers=2, incremental=incremental,
        process_min_bytes=process_min_bytes))

ws = Workspace.open({str(tmp_path / "s")!r}, catalog_path=Path({str(tmp_path / "c")!r}),
                    create=True, workers=2)
backup(False, {NEVER})
assert servers() == []
with open({str(source / "data/big.bin")!r}, "r+b") as f:
    f.seek({27 * CHUNK + 20})
    f.write(b"changed")
second = backup({incremental}, 1 << 20)
print(json.dumps([len(servers()), second.stats.bytes_read, second.stats.blobs_stored]))
"""
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    found, read, stored = json.loads(done.stdout.split("\n")[-2])
    assert found == servers
    if incremental:  # every chunk of the changed file with data (40 runs, two chunks each)
        assert read == 80 * CHUNK
    else:
        assert read > 80 * CHUNK
    assert stored == 1
