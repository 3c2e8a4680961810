#!/usr/bin/env python3
"""The performance record: run every case on a node-like data set, print one table.

    python3 tools/bench.py [--scale tiny|small|large] [--repeat 3] [--cases a,b] [--servers]

Each case runs in a child process (``--child SPEC``), so its peak RSS and I/O counters
are its own. Every case is compared with a *limit* measured in the same run: a minimal
pipeline written here, with no store, manifest or catalog, doing only the unavoidable
work on all cores (see docs/performance.md). Results go to stdout and to
tools/bench-results/<UTC date>-<scale>.txt.
"""

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import blake3
import zstandard

TOOLS = Path(__file__).resolve().parent
ROOT = TOOLS.parent
sys.path.insert(0, str(TOOLS))
sys.path.insert(0, str(ROOT))

import gen_data  # noqa: E402

from pitreos.cores import usable_cores  # noqa: E402
from pitreos.sparse import (  # noqa: E402
    data_extents,
    extents_within,
    nonzero_runs,
    pread_exact,
    pwrite_all,
    read_nonzero,
    read_range,
)
from pitreos.workspace import default_workers  # noqa: E402

CORES = usable_cores()
PEERS = ("restic", "borg", "casync")


# Child side: run one measured thing and report ------------------------------------


def _io_counters() -> dict[str, int]:
    counters = {}
    with open("/proc/self/io") as f:
        for line in f:
            key, _, value = line.partition(":")
            counters[key] = int(value)
    return counters


def _extents_of(path: Path) -> list[tuple[int, int]]:
    fd = os.open(path, os.O_RDONLY)
    try:
        return data_extents(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)


def _chunks_with_data(files: list[Path], chunk: int) -> Iterator[tuple[Path, int, int]]:
    for path in files:
        size = path.stat().st_size
        extents = _extents_of(path)
        seen: set[int] = set()
        for start, end in extents:
            for index in range(start // chunk, -(-end // chunk)):
                if index not in seen:
                    seen.add(index)
                    yield path, index * chunk, min(chunk, size - index * chunk)


def _hash(data: bytes | bytearray) -> None:
    hashlib.sha1(data, usedforsecurity=False).digest()
    blake3.blake3(data).digest()


# The limit pipelines hand out tasks of BATCH chunks (16 MiB at the default chunk size;
# pitreos's tasks hold up to 64 MiB), to threads on a few cores and to processes on
# more. On 16 cores the limit on threads, one task a chunk, took 2.35 s for the full
# backup that pitreos (on processes) did in 1.70 s (2026-11-27T04-00-19Z-small-16-cores):
# the Python around each chunk held it to what one GIL allows, so it was no limit. On 2
# cores threads stay: the GIL is not the bound there, and worker processes would cost
# their start.
BATCH = 16
PROCESS_CORES = 4

Extents = list[tuple[int, int]]


def _run_batches(fn: Callable[[Any], Any], tasks: list[Any], workers: int) -> list[Any]:
    executor: Executor
    if CORES > PROCESS_CORES:
        import multiprocessing

        # fork: the measured child has no threads when it starts them, and its workers
        # then start in milliseconds, the imports already done
        executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
    else:
        executor = ThreadPoolExecutor(workers)
    with executor:
        return list(executor.map(fn, tasks))


def _batches(items: list[Any]) -> list[list[Any]]:
    return [items[i:i + BATCH] for i in range(0, len(items), BATCH)]


def _extents_for(batch: list[tuple[str, int, int, int]], extents: dict[str, Extents]
                 ) -> dict[str, Extents]:
    """Each file's extents within the span the batch reads: a task carries a few
    extents, not a whole file's."""
    spans: dict[str, tuple[int, int]] = {}
    for path, offset, length, *_ in batch:
        low, high = spans.get(path, (offset, offset + length))
        spans[path] = min(low, offset), max(high, offset + length)
    return {path: extents_within(extents[path], *span) for path, span in spans.items()}


def _open_all(paths: Iterable[str], flags: int) -> dict[str, int]:
    return {path: os.open(path, flags) for path in set(paths)}


def _close_all(fds: Iterable[int]) -> None:
    for fd in fds:
        os.close(fd)


def _backup_task(task: tuple[str, int, list[tuple[str, int, int, int]], dict[str, Extents]]
                 ) -> list[tuple[str, int, int, int]]:
    """Read, skip zeros, sha1 + blake3, zstd each chunk; write it at its slot."""
    out, level, items, extents = task
    comp = zstandard.ZstdCompressor(level=level)
    fds = _open_all((item[0] for item in items), os.O_RDONLY)
    out_fd = os.open(out, os.O_WRONLY)
    index = []
    try:
        for path, offset, length, slot in items:
            data = read_nonzero(fds[path], offset, length, extents[path])
            if data is None:
                continue
            _hash(data)
            packed = comp.compress(data)
            pwrite_all(out_fd, packed, slot)
            index.append((path, offset, slot, len(packed)))
    finally:
        _close_all([*fds.values(), out_fd])
    return index


def limit_backup(files: list[Path], out: Path, chunk: int, workers: int, level: int,
                 ranges: list[tuple[Path, int, int]] | None = None) -> dict[str, Any]:
    """Read the data extents (holes are zeros: not read), skip chunks of zeros, sha1 +
    blake3, zstd at the same level, write to one file. Each chunk has a slot of its own
    in the file (its number times zstd's bound), so tasks write with no coordination;
    the slots' unused ends are holes."""
    todo = ranges if ranges is not None else list(_chunks_with_data(files, chunk))
    slot = chunk + chunk // 128 + 4096  # >= zstd's compressed size bound for a chunk
    items = [(str(path), offset, length, i * slot)
             for i, (path, offset, length) in enumerate(todo)]
    extents = {str(p): _extents_of(p) for p in {t[0] for t in todo}}
    os.close(os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644))
    tasks = [(str(out), level, batch, _extents_for(batch, extents))
             for batch in _batches(items)]
    index = [entry for part in _run_batches(_backup_task, tasks, workers) for entry in part]
    fd = os.open(out, os.O_WRONLY)
    os.fsync(fd)  # a backup is not done until it is durable
    os.close(fd)
    (out.with_suffix(".index")).write_text(json.dumps(index))
    return {"bytes": sum(t[2] for t in todo), "stored": sum(e[3] for e in index)}


def _restore_task(task: tuple[str, list[tuple[str, int, int, int]]]) -> int:
    """Read each chunk from the output, decompress, blake3 (what a restore checks: the
    blob's name is not derived again), write its non-zero runs."""
    out, items = task
    dec = zstandard.ZstdDecompressor()
    in_fd = os.open(out, os.O_RDONLY)
    fds = _open_all((item[0] for item in items), os.O_WRONLY)
    total = 0
    try:
        for dest, offset, at, length in items:
            data = dec.decompress(pread_exact(in_fd, length, at))
            blake3.blake3(data).digest()
            for start, end in nonzero_runs(data):
                pwrite_all(fds[dest], memoryview(data)[start:end], offset + start)
            total += len(data)
    finally:
        _close_all([*fds.values(), in_fd])
    return total


def limit_restore(out: Path, source_root: Path, dest_root: Path, workers: int,
                  only: set[tuple[str, int]] | None = None) -> dict[str, Any]:
    """Read that output, decompress, hash, write the data at its offsets (``only``: the
    chunks, as source path and offset, to write; the others are left alone)."""
    index = [entry for entry in json.loads(out.with_suffix(".index").read_text())
             if only is None or (entry[0], entry[1]) in only]
    dests: dict[str, str] = {}
    for src, *_ in index:
        if src not in dests:
            target = dest_root / Path(src).relative_to(source_root)
            target.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT, 0o644)
            os.ftruncate(fd, Path(src).stat().st_size)
            os.close(fd)
            dests[src] = str(target)
    items = [(dests[src], offset, at, length) for src, offset, at, length in index]
    total = sum(_run_batches(_restore_task, [(str(out), batch) for batch in _batches(items)],
                             workers))
    for path in dests.values():
        fd = os.open(path, os.O_WRONLY)
        os.fsync(fd)
        os.close(fd)
    return {"bytes": total}


def _read_blake3_task(task: tuple[list[tuple[str, int, int]], dict[str, Extents]]) -> None:
    items, extents = task
    fds = _open_all((item[0] for item in items), os.O_RDONLY)
    try:
        for path, offset, length in items:
            blake3.blake3(read_range(fds[path], offset, length, extents[path])).digest()
    finally:
        _close_all(fds.values())


def limit_read_blake3(files: list[Path], chunk: int, workers: int) -> dict[str, Any]:
    """Read the data of ``files`` and blake3 it (equal blake3, equal bytes): what an
    in-place restore cannot avoid, and what finding the changed chunks of a file changed
    in place costs at the least."""
    todo = [(str(path), offset, length) for path, offset, length
            in _chunks_with_data(files, chunk)]
    extents = {p: _extents_of(Path(p)) for p in {t[0] for t in todo}}
    _run_batches(_read_blake3_task, [(batch, _extents_for(batch, extents))
                                     for batch in _batches(todo)], workers)
    return {"bytes": sum(t[2] for t in todo)}


def limit_in_place(files: list[Path], chunk: int, workers: int, out: Path,
                   source_root: Path, dest_root: Path, changed: set[tuple[str, int]]
                   ) -> dict[str, Any]:
    """What an in-place restore cannot avoid: read and blake3 the local data, then
    write the chunks that differ from the backup (decompressed from the limit backup's
    output, sha1 and blake3 computed, synced)."""
    scan = limit_read_blake3(files, chunk, workers)
    written = limit_restore(out, source_root, dest_root, workers, only=changed)
    return {"bytes": scan["bytes"], "written": written["bytes"]}


def _workspace(spec: dict[str, Any]) -> Any:
    from pitreos.workspace import Workspace

    ws = Workspace.open(spec["store"], catalog_path=Path(spec["catalog"]),
                        create=True, workers=spec.get("workers"),
                        compression_level=spec.get("level", 3))
    ws.sync()
    return ws


def _import_what_the_engine_imports_on_first_use() -> None:
    """The engine imports PyYAML, multiprocessing, zstandard, ctypes (a local store's
    syncfs), the gc markers, the object-store wrappers and its thread helpers when it
    first needs them (so that ``pitreos list`` starts fast): ~45 ms that the limit
    pipelines, whose imports are all at the top of this file, never pay inside their
    clock. Imported here (zstandard at the top of this file), before the clock starts,
    so that engine and limit are timed on the same terms."""
    import multiprocessing  # noqa: F401

    import yaml  # noqa: F401

    import pitreos.libc
    import pitreos.locks
    import pitreos.parallel
    import pitreos.processpool
    import pitreos.stores.deadline
    import pitreos.stores.limit
    import pitreos.stores.retry  # noqa: F401


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one measured operation; returns its figures."""
    kind = spec["kind"]
    if kind in ("backup", "restore"):
        _import_what_the_engine_imports_on_first_use()
    workers = spec.get("workers") or default_workers()  # as the engine
    started = time.perf_counter()
    cpu_started = time.process_time()  # every thread of this process (not its children)
    extra: dict[str, Any] = {}
    gil = GilSampler.start(spec.get("gil", False) and kind in ("raw_put", "raw_get"))
    if kind == "limit_backup":
        ranges = [(Path(p), o, n) for p, o, n in spec["ranges"]] if "ranges" in spec else None
        extra = limit_backup([Path(f) for f in spec["files"]], Path(spec["out"]),
                             spec["chunk"], workers, spec.get("level", 3), ranges)
    elif kind == "limit_restore":
        extra = limit_restore(Path(spec["out"]), Path(spec["source"]), Path(spec["dest"]),
                              workers)
    elif kind == "limit_incremental":
        scan = limit_read_blake3([Path(f) for f in spec["scan"]], spec["chunk"], workers)
        ranges = [(Path(f), o, n) for f, o, n in spec["ranges"]]
        extra = limit_backup([], Path(spec["out"]), spec["chunk"], workers,
                             spec.get("level", 3), ranges)
        extra["scanned"] = scan["bytes"]
    elif kind == "limit_in_place":
        extra = limit_in_place([Path(f) for f in spec["files"]], spec["chunk"], workers,
                               Path(spec["out"]), Path(spec["source"]), Path(spec["dest"]),
                               {(p, o) for p, o in spec["changed"]})
    elif kind == "limit_read_hash":
        extra = limit_read_blake3([Path(f) for f in spec["files"]], spec["chunk"], workers)
    elif kind == "backup":
        from pitreos.backup import BackupOptions, run_backup

        ws = _workspace(spec)
        gil = GilSampler.start(spec.get("gil", False))
        started = time.perf_counter()
        result = run_backup(Path(spec["source"]), ws.repo, ws.catalog, BackupOptions(
            chunk_size=spec["chunk"], workers=ws.workers, incremental=spec.get("incremental",
                                                                              False),
            tag=spec.get("tag", "bench")))
        s = result.stats
        extra = {"name": result.manifest.name, "stored": s.bytes_stored, "read": s.bytes_read,
                 "blobs": s.blobs_stored, **_in_flight(ws)}
    elif kind == "restore":
        from pitreos.parallel import WorkerPool
        from pitreos.restore import RestoreOptions, execute_restore, plan_restore

        ws = _workspace(spec)
        gil = GilSampler.start(spec.get("gil", False))
        started = time.perf_counter()
        manifest = ws.repo.read_manifest(spec["name"])
        options = RestoreOptions(workers=ws.workers)
        with WorkerPool(options.workers) as pool:  # shared, as `pitreos restore` does
            plan = plan_restore(manifest, Path(spec["dest"]), options, pool=pool)
            stats = execute_restore(plan, ws.repo, options, pool=pool)
        extra = {"fetched_bytes": stats.stored_bytes_fetched,
                 "chunks_fetched": stats.chunks_fetched, "written": stats.bytes_written,
                 "kept": stats.chunks_kept, **_in_flight(ws)}
    elif kind in ("raw_put", "raw_get"):
        extra = raw_transfer(kind, spec["store"], Path(spec["blobs"]),
                             Path(spec["keys"]).read_text().split(), spec["threads"])
    elif kind == "sync":
        from pitreos.workspace import Workspace

        ws = Workspace.open(spec["store"], catalog_path=Path(spec["catalog"]))
        started = time.perf_counter()
        report = ws.sync(list_blobs=spec.get("list_blobs", False))
        extra = {"added": report.added}
    elif kind == "stats":
        from pitreos.workspace import Workspace

        ws = Workspace.open(spec["store"], catalog_path=Path(spec["catalog"]))
        started = time.perf_counter()
        extra = {"backups": ws.catalog.tag_stats()["*"]["backups"]}
    elif kind in ("gc", "verify"):
        from pitreos.gc import GCOptions, run_gc
        from pitreos.gcdecision import RetentionPolicy
        from pitreos.verify import verify
        from pitreos.workspace import Workspace

        ws = Workspace.open(spec["store"], catalog_path=Path(spec["catalog"]),
                            count_requests=True)
        counter = ws.requests
        assert counter is not None
        started = time.perf_counter()
        if kind == "gc":
            gc_report = run_gc(ws.repo, ws.catalog, GCOptions(
                RetentionPolicy(last=spec["keep"]), grace=timedelta(0), workers=ws.workers))
            extra = {"blobs_deleted": gc_report.blobs_deleted,
                     "backups_deleted": len(gc_report.deleted_backups)}
        else:
            ws.sync()
            v = verify(ws.repo, ws.catalog, None, workers=ws.workers)
            extra = {"blobs_checked": v.blobs_checked, "damage": len(v.damage),
                     "downloaded": v.bytes_downloaded}
        extra["requests"] = counter.requests()
    else:
        raise SystemExit(f"unknown child kind {kind}")
    seconds = time.perf_counter() - started
    io = _io_counters()
    return {"seconds": seconds, "cpu": time.process_time() - cpu_started,
            "maxrss": _peak_rss(), "rchar": io["rchar"], "wchar": io["wchar"],
            **gil.stop(seconds), **extra}


def _in_flight(ws: Any) -> dict[str, int]:
    limit = getattr(ws.repo, "limit", None)  # none before the adaptive limit (693bb59)
    return {} if limit is None else {"in_flight": limit.current,
                                     "in_flight_highest": limit.highest}


def raw_transfer(kind: str, url: str, blobs: Path, keys: list[str], threads: int
                 ) -> dict[str, Any]:
    """The limit of target 3: PUT (or GET) the blob objects ``keys`` of a local store
    (whose blobs are under ``blobs``), as they are, through the store's own client on
    ``threads`` threads, with nothing else: no reading of the source, hashing,
    compression, catalog or manifest."""
    from pitreos.stores import open_store
    from pitreos.stores.limit import ConcurrencyLimit

    store = open_store(url, pool_size=threads, limit=ConcurrencyLimit.fixed(threads))

    def put(key: str) -> int:
        data = (blobs.parent / key).read_bytes()
        store.put(key, data)
        return len(data)

    def get(key: str) -> int:
        return len(store.get(key))

    with ThreadPoolExecutor(threads) as pool:
        moved = sum(pool.map(put if kind == "raw_put" else get, keys))
    return {"moved": moved, "objects": len(keys)}


class GilSampler:
    """The share of wall time during which a thread of this process holds the GIL
    (issue 15, target 1), sampled by py-spy attached to this process: ``--gil`` records a
    sample only when some thread holds the GIL, so samples / (rate x seconds) is the
    share. Started after the imports and the workspace are ready, so neither counts;
    the imports the engine makes on first use (PyYAML, multiprocessing: lazy, for a fast
    start) are left out too, as the issue asks, by dropping the samples taken inside
    ``importlib``; their share is reported apart as ``gil_imports``.
    Only this process is sampled: the engine's worker processes each have a GIL of their
    own, which serializes nothing but their own work (py-spy's --subprocesses labels
    their samples with this process's id, so they cannot be told apart)."""

    RATE = 200

    def __init__(self, proc: subprocess.Popen[bytes] | None, out: Path | None) -> None:
        self.proc = proc
        self.out = out

    @classmethod
    def start(cls, enabled: bool) -> "GilSampler":
        if not enabled:
            return cls(None, None)
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if not os.access(spy, os.X_OK):
            raise SystemExit("--gil needs py-spy (pip install py-spy)")
        out = Path(f"/tmp/pitreos-bench-gil-{os.getpid()}.raw")
        proc = subprocess.Popen([spy, "record", "--pid", str(os.getpid()), "--gil", "--nonblocking",
                                 "--rate", str(cls.RATE), "--format", "raw", "--output",
                                 str(out)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)  # attached before the measured work starts
        return cls(proc, out)

    def stop(self, seconds: float) -> dict[str, float]:
        if self.proc is None or self.out is None:
            return {}
        self.proc.send_signal(2)  # SIGINT: py-spy writes what it sampled and exits
        self.proc.wait()
        work = imports = 0
        for line in self.out.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if "importlib._bootstrap" in stack:
                imports += int(count)
            elif stack:
                work += int(count)
        self.out.unlink()
        return {"gil": work / (self.RATE * seconds),
                "gil_imports": imports / (self.RATE * seconds)}


def _peak_rss() -> int:
    """VmHWM: this process's own peak. (getrusage's ru_maxrss survives execve, so a
    child would report its parent's peak.)"""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


# Parent side -------------------------------------------------------------------------


@dataclass
class Row:
    case: str
    runs: list[dict[str, Any]]
    data_bytes: int
    limit: float | None = None
    note: str = ""
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return float(statistics.median(r["seconds"] for r in self.runs))

    def median(self, key: str) -> float:
        return float(statistics.median(r.get(key, 0) for r in self.runs))

    def gil(self) -> str:
        if not all("gil" in r for r in self.runs):
            return ""
        return f"{100 * self.median('gil'):.1f}"


# A measured child's __main__ is this one-line program, not this file: the forkserver
# makes every worker process import its parent's __main__ when that is a file, and this
# file's imports cost each worker ~55 ms that `python -m pitreos` never pays. A pool of 2
# workers gave its first results 0.27-0.33 s after its creation with this file as
# __main__, 0.18-0.23 s with this program (2 cores, four alternating pairs).
CHILD_PROGRAM = f"import sys; sys.path.insert(0, {str(TOOLS)!r}); import bench; bench.main()"


def child(spec: dict[str, Any], env: dict[str, str] | None = None) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-c", CHILD_PROGRAM, "--child", json.dumps(spec)],
                          capture_output=True, text=True, env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        raise SystemExit(f"child {spec['kind']} failed:\n{proc.stderr[-3000:]}")
    figures: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return figures


def drop_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _cpu_jiffies() -> tuple[int, int]:
    """The whole machine's (busy, total) CPU time so far, from /proc/stat's first line."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle and iowait
    return sum(fields) - idle, sum(fields)


def settle(warm: list[Path], cold: bool) -> None:
    """Put the machine in the same state before every measured run, engine and limit
    alike: earlier writes flushed (their writeback must not land in the next run), and
    either the inputs' data in the page cache (the default: the figures then measure
    CPU work, which is what differs between engine and limit) or nothing cached at all
    (--cold, root only: disk speed included)."""
    os.sync()
    if cold:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return
    for root in warm:
        for path in [root] if root.is_file() else sorted(p for p in root.rglob("*")
                                                          if p.is_file()):
            fd = os.open(path, os.O_RDONLY)
            try:
                for start, end in data_extents(fd, os.fstat(fd).st_size):
                    for offset in range(start, end, 8 << 20):
                        pread_exact(fd, min(8 << 20, end - offset), offset)
            finally:
                os.close(fd)


def sparse_copy(src: Path, dst: Path) -> None:
    drop_dir(dst)
    subprocess.run(["cp", "-a", "--sparse=always", str(src), str(dst)], check=True)


def data_bytes(root: Path) -> int:
    total = 0
    for path in root.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                total += sum(e - s for s, e in data_extents(fd, path.stat().st_size))
            finally:
                os.close(fd)
    return total


def files_of(root: Path) -> list[str]:
    return sorted(str(p) for p in root.rglob("*") if p.is_file())


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = Path(args.workdir) / args.scale
        self.node = self.work / "node"
        self.rows: list[Row] = []
        self.notes: list[str] = []
        self.chunk = args.chunk_size

    def prepare(self) -> None:
        marker = self.work / "generated"
        if not marker.exists():
            drop_dir(self.work)
            self.work.mkdir(parents=True)
            print(f"generating the {self.args.scale} data set in {self.node} ...", flush=True)
            gen_data.generate(self.node, gen_data.SCALES[self.args.scale])
            marker.write_text("ok")
        self.data = data_bytes(self.node)

    def measure(self, spec: dict[str, Any], warm: list[Path],
                env: dict[str, str] | None = None) -> dict[str, Any]:
        """Run one measured child after :func:`settle`. Its result gains ``busy``: the
        share of all the machine's cores at work while it ran (every process: the child,
        and the servers and proxy it talks to)."""
        settle(warm, self.args.cold)
        busy0, total0 = _cpu_jiffies()
        result = child(spec, env)
        busy1, total1 = _cpu_jiffies()
        return {**result, "busy": (busy1 - busy0) / max(1, total1 - total0)}

    def repeat(self, make_spec: Callable[[int], dict[str, Any]], warm: list[Path],
               before: Callable[[int], None] | None = None,
               env: dict[str, str] | None = None) -> list[dict[str, Any]]:
        runs = []
        for i in range(self.args.repeat):
            if before:
                before(i)
            runs.append(self.measure(make_spec(i), warm, env))
        return runs

    def store(self, tag: str) -> tuple[str, str]:
        path = self.work / f"store-{tag}"
        return path.as_uri(), str(self.work / f"catalog-{tag}.sqlite")

    def fresh_store(self, tag: str) -> tuple[str, str]:
        url, catalog = self.store(tag)
        drop_dir(self.work / f"store-{tag}")
        Path(catalog).unlink(missing_ok=True)
        return url, catalog

    # cases: each run of the engine is paired with a run of its limit, one after the
    # other, so that both see the machine in the same mood
    def full_backup_and_restore(self) -> str:
        files = files_of(self.node)
        out = self.work / "limit.out"
        store_dir = self.work / "store-full"

        def backup_spec(i: int) -> dict[str, Any]:
            url, catalog = self.fresh_store("full")
            return {"kind": "backup", "store": url, "catalog": catalog, "chunk": self.chunk,
                    "source": str(self.node), "gil": self.args.gil}

        limit_b, runs = [], []
        for i in range(self.args.repeat):
            limit_b.append(self.measure({"kind": "limit_backup", "files": files,
                                         "out": str(out), "chunk": self.chunk}, [self.node]))
            runs.append(self.measure(backup_spec(i), [self.node]))
        name = runs[-1]["name"]  # restored below
        self.rows.append(Row("full backup", runs, self.data, _median_seconds(limit_b)))
        url, catalog = self.store("full")
        dest = self.work / "restored"
        limit_r, runs = [], []
        for _ in range(self.args.repeat):
            drop_dir(self.work / "limit-dest")
            limit_r.append(self.measure(
                {"kind": "limit_restore", "out": str(out), "source": str(self.node),
                 "dest": str(self.work / "limit-dest")}, [out]))
            drop_dir(dest)
            runs.append(self.measure({"kind": "restore", "store": url, "catalog": catalog,
                                      "name": name, "dest": str(dest), "gil": self.args.gil},
                                     [store_dir, Path(catalog)]))
        drop_dir(self.work / "limit-dest")
        self.rows.append(Row("full restore", runs, self.data, _median_seconds(limit_r)))
        self.backup_to_ram(_median_seconds(limit_b))
        return str(name)  # the base backup, left in store-full

    def backup_to_ram(self, limit: float) -> None:
        """The full backup to a store in RAM (tmpfs) by ``--parallel``: 1, 2, 4, ... up to
        the cores, and the default: how much of the gap to the limit is the file system's
        cost per stored object, and how far the work scales across cores when it is
        CPU-bound (the GIL must not be the bottleneck; issue 15's sweep)."""
        ram = Path("/dev/shm")
        if not ram.is_dir() or shutil.disk_usage(ram).free < 2 * self.data:
            self.notes.append("full backup to a store in RAM: not run (/dev/shm is missing "
                              "or too small)")
            return
        store = ram / "pitreos-bench-store"
        catalog = self.work / "catalog-ram.sqlite"

        def spec(workers: int | None) -> dict[str, Any]:
            drop_dir(store)
            catalog.unlink(missing_ok=True)
            return {"kind": "backup", "store": store.as_uri(), "catalog": str(catalog),
                    "chunk": self.chunk, "source": str(self.node), "workers": workers}

        default = default_workers()
        sweep = {default} | {2**k for k in range(CORES.bit_length()) if 2**k <= CORES} | {2}
        try:
            runs = {w: self.repeat(partial(_spec_for, spec, w), [self.node])
                    for w in sorted(sweep)}
        finally:
            drop_dir(store)
        one = _median_seconds(runs[1])
        self.rows.append(Row(f"full backup to a store in RAM, {default} workers", runs[default],
                             self.data, limit,
                             note="limit: the full backup's (output file on disk); "
                             f"{one / _median_seconds(runs[default]):.2f}x faster than 1 worker"))
        for workers in sorted(sweep - {default}, reverse=True):
            speedup = one / _median_seconds(runs[workers])
            self.rows.append(Row(f"  the same, {workers} worker{'s' * (workers > 1)}",
                                 runs[workers], self.data, values={"speedup": speedup},
                                 note=f"{speedup:.2f}x faster than 1 worker"
                                 if workers > 1 else ""))

    def object_cost(self, count: int = 2000, size: int = 320_000) -> None:
        """CPU time to create one stored object (as the local store does: O_TMPFILE,
        write, link) on the bench's file system and in RAM: the part of a full backup's
        gap to the limit (which writes one file) that comes from the file system."""
        costs = []
        for root in (self.work / "object-cost", Path("/dev/shm/pitreos-object-cost")):
            if not root.parent.is_dir():
                continue
            drop_dir(root)
            root.mkdir()
            os.sync()
            body = os.urandom(size)
            started = time.thread_time()
            for i in range(count):
                fd = os.open(root, os.O_TMPFILE | os.O_WRONLY, 0o644)
                try:
                    os.write(fd, body)
                    os.link(f"/proc/self/fd/{fd}", root / str(i), src_dir_fd=fd,
                            follow_symlinks=True)
                finally:
                    os.close(fd)
            costs.append(f"{(time.thread_time() - started) / count * 1e6:.0f} us in {root.parent}")
            drop_dir(root)
        self.notes.append(f"CPU time to store one {size // 1000} kB object: " + ", ".join(costs))

    def incremental(self, base: str) -> None:
        url, catalog = self.store("full")
        changed = self.work / "changed"

        def prepare(i: int) -> None:
            sparse_copy(self.node, changed)
            gen_data.change_pages(changed / "state/shared_memory.bin", 0.01, seed=100 + i)
            log_size = (changed / "blocks/blocks.log").stat().st_size
            gen_data.append_blocks(changed / "blocks", log_size // 20, seed=i)

        runs: list[dict[str, Any]] = []
        scan_limits: list[dict[str, Any]] = []
        chunk_limits: list[dict[str, Any]] = []
        changed_bytes: list[int] = []
        warm = [changed, Path(catalog)]
        for i in range(self.args.repeat):
            prepare(i)
            ranges = self._changed_ranges(changed)
            changed_bytes.append(sum(r[2] for r in ranges))
            # the base backup's view of `changed`: a backup of it from the same catalog
            runs.append(self.measure({"kind": "backup", "store": url, "catalog": catalog,
                                      "chunk": self.chunk, "source": str(changed),
                                      "incremental": True, "tag": "bench"}, warm))
            # the next run must build on the base backup again: drop this one
            (self.work / "store-full/manifests" / f"{runs[-1]['name']}.yaml").unlink()
            scan_limits.append(self.measure(
                {"kind": "limit_incremental", "ranges": ranges,
                 "scan": [str(changed / "state/shared_memory.bin")],
                 "out": str(self.work / "limit-inc.out"), "chunk": self.chunk}, warm))
            chunk_limits.append(self.measure(
                {"kind": "limit_backup", "files": [], "ranges": ranges,
                 "out": str(self.work / "limit-inc.out"), "chunk": self.chunk}, warm))
        engine = _median_seconds(runs)
        chunks_only = _median_seconds(chunk_limits)
        self.rows.append(Row(
            "incremental backup (1% pages, log +5%)", runs, int(statistics.median(changed_bytes)),
            _median_seconds(scan_limits),
            note=f"limit: blake3 scan of the state file changed in place + the changed "
            f"chunks; the changed chunks alone: {chunks_only:.2f} s, ratio "
            f"{engine / chunks_only:.2f}"))

    def _changed_ranges(self, changed: Path) -> list[tuple[str, int, int]]:
        """Chunks of `changed` whose bytes differ from the base node (or are new)."""
        out = []
        for path in (changed / "state/shared_memory.bin", changed / "blocks/blocks.log",
                     changed / "blocks/blocks.index"):
            base = self.node / path.relative_to(changed)
            size, base_size = path.stat().st_size, base.stat().st_size
            with open(path, "rb") as a, open(base, "rb") as b:
                for start, end in self._data_chunks(path):
                    a.seek(start)
                    b.seek(start)
                    if end > base_size or a.read(end - start) != b.read(end - start):
                        out.append((str(path), start, end - start))
            del size
        return out

    def _data_chunks(self, path: Path) -> list[tuple[int, int]]:
        return [(o, o + n) for _, o, n in _chunks_with_data([path], self.chunk)]

    def in_place_restore(self, base: str) -> None:
        url, catalog = self.store("full")
        copy = self.work / "stale"
        files: list[str] = []
        changed: list[tuple[str, int]] = []  # the base node's chunks the copy lacks

        def prepare(i: int) -> None:
            sparse_copy(self.node, copy)
            gen_data.change_pages(copy / "state/shared_memory.bin", 0.01, seed=200 + i)
            files[:] = files_of(copy)
            changed[:] = [(str(self.node / Path(path).relative_to(copy)), offset)
                          for path, offset, _ in self._changed_ranges(copy)]

        runs, limits = [], []
        warm = [copy, self.work / "store-full", Path(catalog)]
        for i in range(self.args.repeat):
            prepare(i)
            limits.append(self.measure({"kind": "limit_in_place", "files": files,
                                        "chunk": self.chunk, "changed": changed,
                                        "out": str(self.work / "limit.out"),
                                        "source": str(self.node), "dest": str(copy)},
                                       warm))
            prepare(i)  # the limit wrote the changed chunks back: change them again
            runs.append(self.measure({"kind": "restore", "store": url, "catalog": catalog,
                                      "name": base, "dest": str(copy), "gil": self.args.gil},
                                     warm))
        self.rows.append(Row("in-place restore (1% pages changed)", runs, self.data,
                             _median_seconds(limits),
                             note="limit: read + blake3 of the local data, then "
                             "decompress, hash and write the chunks that differ"))

    def catalog_sync(self, manifests: int = 100, chunks_each: int = 10_000) -> None:
        """100 manifests holding 1,000,000 chunk references, synced into a new catalog;
        then a node's series: 20 backups of one tag whose log grows, as many
        references, each list repeating the last one's but for its partial last chunk
        (the rows a sync copies: pitreos.chunkprints)."""
        from pitreos.hashing import ChunkDigest

        rng = __import__("random").Random(7)
        pool = [ChunkDigest(f"{rng.getrandbits(160):040x}", f"{rng.getrandbits(256):064x}")
                for _ in range(chunks_each * 3)]
        # each shares 98% with the last, shifted: no list repeats the one before
        self._sync_row("sync", "state/shared_memory.bin",
                       [(f"t{m}", pool[m * 200: m * 200 + chunks_each])
                        for m in range(manifests)], "target: under 10 s")
        grown = 64
        series = 20
        first = manifests * chunks_each // series - grown * (series - 1) // 2
        log = pool * -(-(first + grown * series) // len(pool))
        self._sync_row("sync-series", "blocks/blocks.log",
                       [("node", [*log[:first + grown * m - 1], ChunkDigest(
                           f"{m:040x}", f"{m:064x}")]) for m in range(series)],
                       "a node's series: each backup copies the one before's rows")

    def _sync_row(self, name: str, path: str,
                  backups: list[tuple[str, list[Any]]], note: str) -> None:
        """Manifests of one file each (tag, chunk digests), an hour apart, synced into
        a new catalog."""
        from pitreos import manifest as mf

        url, catalog = self.fresh_store(name)
        store = self.work / f"store-{name}"
        (store / "manifests").mkdir(parents=True)
        for m, (tag, digests) in enumerate(backups):
            entry = mf.Entry(path=path, type="file", mode=0o644, mtime_ns=0,
                             size=len(digests) << 20,
                             chunks=[mf.Chunk(i << 20, d) for i, d in enumerate(digests)])
            created = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(hours=m)
            manifest = mf.Manifest(name=mf.backup_name(created, tag), tag=tag,
                                   created=created, chunk_size=1 << 20, entries=[entry])
            (store / "manifests" / f"{manifest.name}.yaml").write_bytes(mf.dump(manifest))
        runs = self.repeat(lambda i: {"kind": "sync", "store": url, "catalog": catalog},
                           [store], before=lambda i: Path(catalog).unlink(missing_ok=True))
        refs = sum(len(digests) for _, digests in backups)
        self.rows.append(Row(f"catalog sync: {len(backups)} manifests, {refs:,} chunk refs",
                             runs, 0, note=note))

    def appendonly(self) -> None:
        """Incremental backup after appending 64 MiB to a 1 GiB and a 4 GiB log; restore
        over a copy that lacks the last 64 MiB."""
        appended = 64 << 20
        for gib in (1, 4):
            root = self.work.parent / f"log-{gib}g"
            marker = root / "generated"
            if not marker.exists():
                drop_dir(root)
                print(f"generating a {gib} GiB blocks log ...", flush=True)
                gen_data.write_blocks(root / "node/blocks", gib << 30,
                                      __import__("random").Random(gib))
                marker.write_text("ok")
            node = root / "node"
            work = root / "work"
            url, catalog = (root / "store").as_uri(), str(root / "catalog.sqlite")
            runs, fetched, limits = [], [], []
            for i in range(self.args.repeat):
                drop_dir(root / "store")
                Path(catalog).unlink(missing_ok=True)
                sparse_copy(node, work)
                child({"kind": "backup", "store": url, "catalog": catalog,
                       "chunk": self.chunk, "source": str(work), "tag": "log"})
                stale = root / "stale"
                sparse_copy(work, stale)
                before = {p: p.stat().st_size for p in (work / "blocks").iterdir()}
                gen_data.append_blocks(work / "blocks", appended, seed=i)
                # the limit: reading and storing only what was appended (from the chunk
                # it starts in), as the issue's target 6 defines it
                ranges = [(str(p), start, min(self.chunk, p.stat().st_size - start))
                          for p, old in before.items()
                          for start in range(old // self.chunk * self.chunk,
                                             p.stat().st_size, self.chunk)]
                limits.append(self.measure({"kind": "limit_backup", "files": [],
                                            "ranges": ranges, "out": str(root / "limit.out"),
                                            "chunk": self.chunk}, [work])["seconds"])
                runs.append(self.measure({"kind": "backup", "store": url, "catalog": catalog,
                                          "chunk": self.chunk, "source": str(work),
                                          "incremental": True, "tag": "log"}, [work]))
                restored = child({"kind": "restore", "store": url, "catalog": catalog,
                                  "name": runs[-1]["name"], "dest": str(stale)})
                fetched.append(restored["fetched_bytes"])
            self.rows.append(Row(f"incremental after +64 MiB on a {gib} GiB log", runs,
                                 appended, statistics.median(limits),
                                 note="limit: reading and storing the appended bytes "
                                 "(target: ratio <= 1.2); restore over the old copy "
                                 f"fetched {statistics.median(fetched) / 2**20:.1f} MiB"))

    def servers(self) -> None:
        """Backup and restore of the data set through the local GCS and S3 servers."""
        servers = _load_servers()
        local = next(r for r in self.rows if r.case == "full backup")
        local_restore = next(r for r in self.rows if r.case == "full restore")
        for name in ("gcs", "s3"):
            server = servers.start(name)
            try:
                url = _make_bucket(name, server)
                catalog = str(self.work / f"catalog-{name}.sqlite")
                Path(catalog).unlink(missing_ok=True)
                b = self.measure({"kind": "backup", "store": url, "catalog": catalog,
                                  "chunk": self.chunk, "source": str(self.node)}, [self.node],
                                 server.env)
                dest = self.work / f"restored-{name}"
                drop_dir(dest)
                r = child({"kind": "restore", "store": url, "catalog": catalog,
                           "name": b["name"], "dest": str(dest)}, server.env)
                drop_dir(dest)
                self.rows.append(Row(f"full backup to {name} server", [b], self.data,
                                     local.seconds, note="limit: the same to a local dir"))
                self.rows.append(Row(f"full restore from {name} server", [r], self.data,
                                     local_restore.seconds,
                                     note="limit: the same from a local dir"))
            finally:
                server.stop()

    def latency(self, base: str, delay: float = 0.02, rate: str = "100MB") -> None:
        """Target 3: full backup and restore through a latency proxy (20 ms each way,
        all connections together capped at ``rate`` a second each way) in front of the GCS
        and S3 servers, against a raw parallel PUT and GET of the same objects (the blobs
        the full backup stored) through the same proxy, at 32 and at 128 requests in
        flight (the better counts). pitreos chooses its own concurrency."""
        from pitreos import manifest as mf
        from pitreos.repository import blob_key

        servers = _load_servers()
        proxy_module = _load_tool("latency_proxy")
        blobs = self.work / "store-full" / "blobs"
        # the full backup's blobs, not every blob of its store (the incremental cases
        # add theirs: the raw loop would move more than pitreos)
        manifest = mf.load((self.work / "store-full" / "manifests" / f"{base}.yaml")
                           .read_bytes(), base)
        keys = self.work / "latency-keys.txt"
        keys.write_text("\n".join(sorted(blob_key(d.sha1) for d in manifest.digests())))
        for name in ("gcs", "s3"):
            server = servers.start(name)
            proxy = proxy_module.start(server.endpoint, delay, rate)
            try:
                direct = _make_bucket(name, server)
                url = direct.replace(server.endpoint, proxy.endpoint)
                env = {**server.env, "STORAGE_EMULATOR_HOST": proxy.endpoint} \
                    if name == "gcs" else server.env
                raw_put = min((self.measure({"kind": "raw_put", "store": url,
                                             "blobs": str(blobs), "keys": str(keys),
                                             "threads": t, "gil": self.args.gil}, [blobs], env)
                               for t in (32, 128)), key=lambda r: float(r["seconds"]))
                catalog = str(self.work / f"catalog-far-{name}.sqlite")
                Path(catalog).unlink(missing_ok=True)
                fresh = _make_bucket(name, server).replace(server.endpoint, proxy.endpoint)
                b = self.measure({"kind": "backup", "store": fresh, "catalog": catalog,
                                  "chunk": self.chunk, "source": str(self.node),
                                  "gil": self.args.gil}, [self.node], env)
                raw_get = min((self.measure({"kind": "raw_get", "store": url,
                                             "blobs": str(blobs), "keys": str(keys),
                                             "threads": t, "gil": self.args.gil}, [], env)
                               for t in (32, 128)), key=lambda r: float(r["seconds"]))
                dest = self.work / f"restored-far-{name}"
                drop_dir(dest)
                r = self.measure({"kind": "restore", "store": fresh, "catalog": catalog,
                                  "name": b["name"], "dest": str(dest),
                                  "gil": self.args.gil}, [], env)
                drop_dir(dest)
            finally:
                proxy.stop()
                server.stop()
            for case, run, raw in (("backup", b, raw_put), ("restore", r, raw_get)):
                self.rows.append(Row(
                    f"{case} via {int(delay * 1000)} ms proxy, {name}", [run], self.data,
                    float(raw["seconds"]),
                    note=f"limit: raw {'PUT' if case == 'backup' else 'GET'} of the "
                    f"{raw['objects']} blobs ({raw['moved'] / 2**20:.0f} MiB) at the better "
                    f"of 32 and 128 in flight; pitreos's limit ended at {run.get('in_flight')} "
                    f"(highest {run.get('in_flight_highest')}); CPU busy (all cores, every "
                    f"process): raw {raw['busy']:.0%}, pitreos {run['busy']:.0%}; CPU of the "
                    f"process itself: raw {raw['cpu']:.1f} s, pitreos {run['cpu']:.1f} s"
                    + (f"; GIL held: raw {raw['gil']:.0%}, pitreos {run['gil']:.0%}"
                       if "gil" in raw and "gil" in run else "")
                    + "; target ratio <= 1.25, RSS <= 256 MiB"))

    def gc_and_verify(self, backups: int = 100, blobs: int = 100_000) -> None:
        """A store of 100 backups and 100,000 blobs: gc (--keep-last 50) and quick verify,
        on the local store and on the GCS server, with the requests each makes."""
        servers = _load_servers()
        gcs = servers.start("gcs")
        try:
            for name in ("local", "gcs"):
                url = (self.work / "store-gc").as_uri() if name == "local" else \
                    _make_bucket("gcs", gcs)
                env = {} if name == "local" else gcs.env
                catalog = str(self.work / f"catalog-gc-{name}.sqlite")
                drop_dir(self.work / "store-gc")
                Path(catalog).unlink(missing_ok=True)
                _fill_store(url, catalog, backups, blobs, env)
                v = child({"kind": "verify", "store": url, "catalog": catalog}, env)
                g = child({"kind": "gc", "store": url, "catalog": catalog, "keep": 50}, env)
                self.rows.append(Row(f"quick verify, {backups} backups, {blobs:,} blobs, "
                                     f"{name}", [v], 0, note=f"requests {v['requests']}"))
                self.rows.append(Row(f"gc keep-last 50, {name}", [g], 0,
                                     note=f"deleted {g['backups_deleted']} backups, "
                                     f"{g['blobs_deleted']} blobs; requests {g['requests']}"))
        finally:
            gcs.stop()

    def million(self, sizes: tuple[tuple[int, int], ...] = ((100, 100_000), (1_000, 1_000_000))
                ) -> None:
        """A store of 1,000 manifests and 1,000,000 blobs (and a tenth of that, to show
        time growing linearly): catalog sync with the blob listing into a new catalog,
        stats, quick verify of every backup, and gc keeping half; peak RSS of each
        (issue 15's target: 256 MiB at most). A local store."""
        for backups, blobs in sizes:
            url = (self.work / "store-million").as_uri()
            catalog = str(self.work / "catalog-million.sqlite")
            drop_dir(self.work / "store-million")
            Path(catalog).unlink(missing_ok=True)
            print(f"filling a store with {blobs:,} blobs and {backups} manifests ...",
                  flush=True)
            _fill_store(url, catalog, backups, blobs, {})
            label = f"{backups} backups, {blobs:,} blobs"
            for case, spec in (
                    ("catalog sync --rebuild", {"kind": "sync", "list_blobs": True}),
                    ("stats", {"kind": "stats"}),
                    ("verify --all (quick)", {"kind": "verify"}),
                    ("gc keep-last half", {"kind": "gc", "keep": backups // 2})):
                run = child({**spec, "store": url, "catalog": catalog})
                self.rows.append(Row(f"{case}, {label}", [run], 0,
                                     note="target: RSS <= 256 MiB, linear time"))

    def startup(self, runs: int = 11) -> None:
        """Wall time of `pitreos --version` and of `pitreos list` on an empty catalog
        (issue 15's target: 150 ms each), beside `python -c pass` and `python -S -c
        pass` (the interpreter without its site-packages' start-up files: in a checkout
        installed for development, `python -c pass` also runs the editable install's
        finder, which imports pathlib and more, ~25 ms that `pitreos` needs anyway);
        medians of ``runs`` rounds, warm. Each round runs the four once, so that a slow
        spell of the machine falls on all alike: run back to back, one command's eleven
        runs could meet a moment the others did not."""
        url, catalog = self.fresh_store("startup")
        env = {**os.environ, "PITREOS_STORE": url, "PITREOS_CATALOG": catalog}
        subprocess.run([sys.executable, "-m", "pitreos", "init", "-q"], env=env, check=True)
        commands = {"python": ("-c", "pass"), "bare": ("-S", "-c", "pass"),
                    "version": ("-m", "pitreos", "--version"),
                    "list": ("-m", "pitreos", "list")}
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(runs):
            for name, argv in commands.items():
                started = time.monotonic()
                subprocess.run([sys.executable, *argv], env=env, check=True,
                               stdout=subprocess.DEVNULL)
                times[name].append(time.monotonic() - started)
        python, bare, version, listing = (statistics.median(times[name])
                                          for name in commands)
        self.notes.append(f"start-up (target 0.150 s): pitreos --version {version:.3f} s, "
                          f"pitreos list on an empty catalog {listing:.3f} s; python -c pass "
                          f"{python:.3f} s, python -S -c pass {bare:.3f} s")

    def peers(self) -> None:
        """pitreos and every peer installed (restic, borg, casync) through the same steps
        on the same data: a full backup of a copy of the data set, the copy changed in
        place (1% of state pages, log +5%), an incremental backup, a full restore into an
        empty directory, and a restore over that restore with 1% of its state pages
        changed. Peers write in this order too, so each meets the same page cache."""
        work = self.work / "peers"
        asked = self.args.peers.split(",")
        unknown = sorted(set(asked) - set(PEERS))
        if unknown:
            raise SystemExit(f"--peers: no such peer: {', '.join(unknown)} (known: "
                             f"{', '.join(PEERS)})")
        tools = ["pitreos"] + [p for p in PEERS if p in asked and shutil.which(p)]
        missing = sorted(set(asked) - set(tools))
        table: dict[str, dict[str, float]] = {}
        for tool in tools:
            drop_dir(work)
            work.mkdir(parents=True)
            src, dest, repo = work / "src", work / "dest", work / "repo"
            sparse_copy(self.node, src)
            dest.mkdir()
            times = table[tool] = {}
            step = self._peer_steps(Peer(tool, self._peer_env(work, repo)), src, dest, repo)
            times["full backup"] = next(step)
            gen_data.change_pages(src / "state/shared_memory.bin", 0.01, seed=300)
            gen_data.append_blocks(src / "blocks",
                                   (src / "blocks/blocks.log").stat().st_size // 20, seed=300)
            times["incremental backup"] = next(step)
            times["full restore"] = next(step)
            times["in-place restore"] = next(step)
        drop_dir(work)
        cases = list(table["pitreos"])
        head = f"{'peers: same data, same steps':<32}" + "".join(f"{t:>9}" for t in tools)
        lines = ["", head + "  fastest peer / pitreos (target: >= 3)"]
        for case in cases:
            peers = [table[t][case] for t in tools[1:]]
            ratio = f"{min(peers) / table['pitreos'][case]:.2f}" if peers else "-"
            lines.append(f"{case:<32}" + "".join(f"{table[t][case]:>9.2f}" for t in tools)
                         + f"  {ratio}")
        if missing:
            lines.append(f"not installed, not run: {', '.join(missing)}")
        self.notes.extend(lines)

    def _peer_env(self, work: Path, repo: Path) -> dict[str, str]:
        return {"PITREOS_STORE": repo.as_uri(), "PITREOS_CATALOG": str(work / "catalog"),
                "PITREOS_CHUNK_SIZE": str(self.chunk), "RESTIC_PASSWORD": "bench",
                "RESTIC_CACHE_DIR": str(work / "cache"),
                "BORG_BASE_DIR": str(work / "borg-home"), "BORG_PASSPHRASE": "",
                "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes",
                "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes"}

    def _peer_steps(self, peer: "Peer", src: Path, dest: Path, repo: Path) -> Iterator[float]:
        cold = self.args.cold
        init = peer.init(repo)
        if init is None:
            repo.mkdir()
        else:
            subprocess.run(init, env={**os.environ, "PYTHONPATH": _with_root(), **peer.env},
                           check=True, capture_output=True)
        for name in ("first", "second"):
            argv, cwd = peer.backup(repo, src, name)
            yield _run_peer(argv, cwd, peer.env, [src], cold)
        argv, cwd = peer.restore(repo, dest, "second")
        yield _run_peer(argv, cwd, peer.env, [repo], cold)
        gen_data.change_pages(peer.data_in(dest) / "state/shared_memory.bin", 0.01,
                              seed=301)
        yield _run_peer(argv, cwd, peer.env, [repo, dest], cold)

    def report(self) -> str:
        lines = [f"pitreos benchmark, scale {self.args.scale}, chunk {self.chunk >> 10} KiB, "
                 f"{CORES} cores, median of {self.args.repeat}, "
                 f"{datetime.now(UTC).isoformat(timespec='seconds')}",
                 f"data set: {self.data / 2**20:.0f} MiB of data",
                 "",
                 f"{'case':<44} {'s':>7} {'MB/s':>8} {'RSS MiB':>8} {'read MiB':>9} "
                 f"{'wrote MiB':>9} {'stored MiB':>10} {'limit s':>8} {'ratio':>6} "
                 f"{'GIL %':>11}"]
        for row in self.rows:
            ratio = f"{row.seconds / row.limit:.2f}" if row.limit else ""
            if "speedup" in row.values:
                ratio = f"{row.values['speedup']:.2f}x"
            lines.append(
                f"{row.case:<44} {row.seconds:>7.2f} "
                f"{row.data_bytes / row.seconds / 1e6:>8.0f} "
                f"{row.median('maxrss') / 2**20:>8.0f} {row.median('rchar') / 2**20:>9.0f} "
                f"{row.median('wchar') / 2**20:>9.0f} {row.median('stored') / 2**20:>10.1f} "
                f"{row.limit or 0:>8.2f} {ratio:>6} {row.gil():>11}  {row.note}")
        if self.args.gil:
            lines.append("GIL %: the share of wall time a thread of the engine's process held "
                         "the GIL (py-spy --gil, 200 Hz, imports excluded; target: 5)")
        return "\n".join(lines + self.notes)


@dataclass(frozen=True)
class Peer:
    """A backup tool run by its command line on the same data in the same steps (target 2
    of issue 15), pitreos included, so that every figure counts its start-up alike. Each
    uses its own best settings for this data: restic with repository format 2
    (compressed) and --ignore-inode, borg unencrypted with zstd level 3 and sparse
    extraction, casync with zstd, pitreos its defaults with --incremental."""

    name: str
    env: dict[str, str]

    def init(self, repo: Path) -> list[str] | None:
        return {"restic": ["restic", "-r", str(repo), "init", "--repository-version", "2"],
                "borg": ["borg", "init", "-e", "none", str(repo)],
                "pitreos": [sys.executable, "-m", "pitreos", "init", "-q"]}.get(self.name)

    def backup(self, repo: Path, src: Path, name: str) -> tuple[list[str], Path]:
        """The command and the directory to run it in."""
        if self.name == "pitreos":
            more = ["--incremental"] if name != "first" else []
            return [sys.executable, "-m", "pitreos", "backup", "-q", *more, str(src)], src
        if self.name == "restic":
            return ["restic", "-r", str(repo), "backup", "--ignore-inode", "."], src
        if self.name == "borg":
            return ["borg", "create", "-C", "zstd,3", f"{repo}::{name}", "."], src
        return ["casync", "make", "--compression=zstd", f"--store={repo}/store",
                f"{repo}/{name}.caidx", str(src)], src

    def restore(self, repo: Path, dest: Path, name: str) -> tuple[list[str], Path]:
        if self.name == "pitreos":
            return [sys.executable, "-m", "pitreos", "restore", "-q", "latest", str(dest)], dest
        if self.name == "restic":
            return ["restic", "-r", str(repo), "restore", "latest", "--target", "."], dest
        if self.name == "borg":
            return ["borg", "extract", "--sparse", f"{repo}::{name}"], dest
        return ["casync", "extract", f"--store={repo}/store", f"{repo}/{name}.caidx",
                str(dest)], dest

    def data_in(self, dest: Path) -> Path:
        """Where a restore into ``dest`` put the data set (a tool may keep the path it
        backed up under the target)."""
        found = sorted(dest.rglob("state/shared_memory.bin"), key=lambda p: len(p.parts))
        if not found:
            raise SystemExit(f"{self.name} restored no state/shared_memory.bin in {dest}")
        return found[0].parent.parent


def _run_peer(argv: list[str], cwd: Path, env: dict[str, str], warm: list[Path],
              cold: bool) -> float:
    settle(warm, cold)
    started = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env={**os.environ, "PYTHONPATH": _with_root(), **env},
                          capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{proc.stderr[-2000:]}")
    return seconds


def _with_root() -> str:
    """PYTHONPATH with the checkout first, keeping what the caller set (packages installed
    with pip --target on a bare machine)."""
    return os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])


def _median_seconds(runs: list[dict[str, Any]]) -> float:
    return float(statistics.median(r["seconds"] for r in runs))


def _spec_for(spec: Callable[[int | None], dict[str, Any]], workers: int | None,
              _run: int) -> dict[str, Any]:
    return spec(workers)


def _load_servers() -> Any:
    return _load_tool("servers")


def _load_tool(name: str) -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, TOOLS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _make_bucket(kind: str, server: Any) -> str:
    import uuid

    bucket = f"bench-{uuid.uuid4().hex[:12]}"
    if kind == "gcs":
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        storage.Client(project="bench", credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
                       client_options={"api_endpoint": server.endpoint}).create_bucket(bucket)
        return f"gs://{bucket}/bench"
    import boto3

    boto3.client("s3", endpoint_url=server.endpoint, region_name="us-east-1",
                 aws_access_key_id=server.env["AWS_ACCESS_KEY_ID"],
                 aws_secret_access_key=server.env["AWS_SECRET_ACCESS_KEY"]
                 ).create_bucket(Bucket=bucket)
    return f"s3://{bucket}/bench?endpoint={server.endpoint}&path_style=1"


def _fill_store(url: str, catalog: str, backups: int, blobs: int,
                env: dict[str, str]) -> None:
    """Write ``blobs`` small real blobs and ``backups`` manifests referencing them
    (each backup 2,000 blobs, sliding), through the store API."""
    os.environ.update(env)
    from pitreos import manifest as mf
    from pitreos.blobcodec import BlobCodec
    from pitreos.defaults import MIN_CHUNK_SIZE
    from pitreos.hashing import digest
    from pitreos.repository import Repository
    from pitreos.stores import open_store

    store = open_store(url, create=True, pool_size=32)
    store.check()
    repo = Repository(store, BlobCodec())
    chunks = [os.urandom(64) + i.to_bytes(8, "little") for i in range(blobs)]
    digests = [digest(c) for c in chunks]
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(lambda i: repo.put_blob(digests[i].sha1,
                                              repo.encode_blob(chunks[i], digests[i])),
                      range(blobs)))
    per = 2_000
    step = (blobs - per) // max(1, backups - 1)
    for b in range(backups):
        window = digests[b * step: b * step + per]
        # the manifest's geometry must be a valid one (64 KiB chunks) even though its
        # blobs are small: listing, gc and quick verify never compare their lengths
        step_bytes = MIN_CHUNK_SIZE
        entry = mf.Entry(path="f", type="file", mode=0o644, mtime_ns=0, size=step_bytes * per,
                         chunks=[mf.Chunk(i * step_bytes, d) for i, d in enumerate(window)])
        created = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(hours=b)
        written = mf.Manifest(name=mf.backup_name(created, "gc"), tag="gc", created=created,
                              chunk_size=step_bytes, entries=[entry])
        mf.load(mf.dump(written), written.name)  # a manifest pitreos would refuse is no test
        repo.write_manifest(written)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child")
    parser.add_argument("--scale", default="small", choices=sorted(gen_data.SCALES))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--chunk-size", type=int, default=None)
    parser.add_argument("--workdir", default=str(TOOLS / "bench-data"))
    parser.add_argument("--cases", default="core")
    parser.add_argument("--peers", nargs="?", const=",".join(PEERS), default="",
                        metavar="NAMES",
                        help="run restic, borg and casync (where installed; or only the "
                        "comma-separated NAMES) through the same steps on the same data "
                        "(target 2 of issue 15)")
    parser.add_argument("--gil", action="store_true",
                        help="sample the GIL share of full backup, full restore and "
                        "in-place restore with py-spy (target 1 of issue 15)")
    parser.add_argument("--cold", action="store_true",
                        help="drop the page cache before every measured run (root only)")
    args = parser.parse_args()
    if args.cold and not os.access("/proc/sys/vm/drop_caches", os.W_OK):
        parser.error("--cold drops the page cache through /proc/sys/vm/drop_caches, "
                     "which needs root")
    if args.child:
        print(json.dumps(run_child(json.loads(args.child))))
        return
    from pitreos.defaults import DEFAULT_CHUNK_SIZE

    args.chunk_size = args.chunk_size or DEFAULT_CHUNK_SIZE
    bench = Bench(args)
    cases = set(args.cases.split(","))
    results = TOOLS / "bench-results"
    results.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H-%M-%SZ")
    saved = results / f"{stamp}-{args.scale}.txt"

    def save() -> None:
        """Write the table so far after each case, so that a run stopped part-way (a
        lent machine's time running out) still leaves what it measured."""
        saved.write_text(bench.report() + "\n")

    bench.prepare()
    base = bench.full_backup_and_restore()
    save()
    bench.object_cost()
    bench.incremental(base)
    save()
    bench.in_place_restore(base)
    save()
    optional: list[tuple[str, Callable[[], None]]] = [
        ("sync", bench.catalog_sync), ("appendonly", bench.appendonly),
        ("servers", bench.servers), ("gc", bench.gc_and_verify),
        ("latency", partial(bench.latency, base))]
    for case, run in optional:
        if "all" in cases or case in cases:
            run()
            save()
    if "million" in cases:  # not in "all": it fills a store of a million blobs
        bench.million()
        save()
    if args.peers:
        bench.peers()
        save()
    bench.startup()
    save()
    print(saved.read_text(), end="")


if __name__ == "__main__":
    main()
