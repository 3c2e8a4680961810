"""The local SQLite catalog: every manifest of one store, and each blob's reference count.

The catalog is a cache of the store, never the other way round: it is written only after
the store write it describes succeeded, each change in one transaction, and
:func:`pitreos.sync.sync_catalog` rebuilds it from the store alone.
"""

import functools
import hashlib
import importlib
import itertools
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol, TypeVar

import platformdirs

from . import manifest as mf
from .collector import collector_paused
from .errors import CatalogError, CatalogLocked, CollisionError
from .hashing import ChunkDigest, NewBlob

if TYPE_CHECKING:
    import sqlite_utils
    from sqlite_utils.migrations import Migrations

BUSY_TIMEOUT = 60.0  # seconds to wait for another pitreos that holds the catalog
_QUERY_BATCH = 900  # host parameters a statement may hold: 999 in older SQLite builds
P = ParamSpec("P")
T = TypeVar("T")


def default_catalog_path(store_url: str) -> Path:
    """One catalog per store, under the user's cache dir (it can always be rebuilt)."""
    key = hashlib.sha256(store_url.encode()).hexdigest()[:16]
    return Path(platformdirs.user_cache_dir("pitreos")) / "catalogs" / f"{key}.sqlite"


@dataclass(frozen=True, slots=True)
class KnownBlob:
    sha1: str
    blake3: str
    missing: bool
    refcount: int


@dataclass(frozen=True, slots=True)
class BackupRecord:
    name: str
    tag: str
    created: datetime
    chunk_size: int
    tool: str
    file_count: int
    apparent_size: int
    data_size: int
    meta: dict[str, str]


@dataclass(frozen=True, slots=True)
class FileRecord:
    """A file as a previous backup saw it, for incremental backups."""

    backup: str  # the backup's name
    path: str
    size: int
    mtime_ns: int
    inode: int | None
    ctime_ns: int | None  # None: the backup (of an older pitreos) did not record it
    chunk_size: int
    chunks: list[mf.Chunk]


@dataclass(frozen=True, slots=True)
class CopiedChunks:
    """Chunks of a new backup's file that an incremental backup took unchanged from a
    file of an earlier backup, at the same indexes (an unchanged file: all of them; an
    append-only file: its prefix). The catalog copies their rows from that file's in one
    statement instead of looking up each chunk's blob."""

    backup: str
    path: str
    indexes: range


def _translate(path: Path, exc: sqlite3.Error) -> CatalogError:
    """The catalog's one error boundary: SQLite's errors become pitreos errors here."""
    text = str(exc)
    if "locked" in text or "busy" in text:
        return CatalogLocked(f"catalog {path} is locked by another pitreos ({text}): wait "
                             "for it, or use another --catalog")
    return CatalogError(f"catalog {path} is unreadable ({text}); it is a cache of the "
                        "store: run 'pitreos catalog sync --rebuild'")


MIGRATION_SET = "pitreos-catalog"  # the catalog's migrations in _sqlite_migrations
_LISTING_BATCH = 10_000  # listed blobs inserted at a time: memory stays at one batch
_SCRATCH_CACHE_KIB = 16 << 10
# the blobs' ids in sha1 order, a scan of the sha1 index (LIMIT -1 keeps SQLite from
# merging it into the query around it, which would choose its own order)
_BLOBS_BY_SHA1 = "(SELECT id, sha1 FROM blobs ORDER BY sha1 LIMIT -1)"


class ListedBlob(Protocol):
    """A blob as a listing of the store shows it."""

    @property
    def sha1(self) -> str: ...

    @property
    def stored_size(self) -> int: ...

    @property
    def modified(self) -> datetime: ...


def _guarded(method: Callable[P, T]) -> Callable[P, T]:
    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return method(*args, **kwargs)
        except sqlite3.Error as exc:
            catalog = args[0]
            assert isinstance(catalog, Catalog)
            raise _translate(catalog.path, exc) from exc

    return wrapper


def migration_steps() -> list[tuple[str, str]]:
    """The catalog's schema as named steps: (name, SQL) of ``schema/migrations/*.sql``,
    in name order."""
    # the package's folder, not importlib.resources: that import (with zipfile) was ~5 ms
    # of every command's 17 ms of work (cProfile of `pitreos list`), and pip installs
    # packages as files
    package = importlib.import_module("pitreos.schema.migrations")  # schema/migrations/
    return steps_in(Path(package.__file__ or "").parent)


def steps_in(folder: Path) -> list[tuple[str, str]]:
    """The migration steps in ``folder``; none is an installation without its schema
    (a zipped one, say), never an empty catalog."""
    steps = [(item.stem, item.read_text(encoding="utf-8"))
             for item in sorted(folder.glob("*.sql"))]
    if not steps:
        raise CatalogError(f"the catalog's schema files (*.sql) are missing from {folder}: "
                           "reinstall pitreos (pip install, not a zipped copy)")
    return steps


def _import_sqlite_utils() -> None:
    """Import sqlite-utils without the pandas and numpy that it imports whenever they are
    installed, for column types the catalog never has: on a 16-core machine whose Python
    had them (PyTorch's image), that import was 0.64 s of a first backup's 2.4 s (py-spy,
    2026-11-27). They are hidden for this one import only, and stay importable."""
    if "sqlite_utils" in sys.modules:
        return
    hidden = [name for name in ("pandas", "numpy") if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # import raises ImportError
    try:
        import sqlite_utils  # noqa: F401
    finally:
        for name in hidden:
            if sys.modules.get(name, False) is None:
                del sys.modules[name]


def migrations(steps: list[tuple[str, str]]) -> "Migrations":
    """The steps as a sqlite-utils migration set, which applies each once and records
    it (in ``_sqlite_migrations``)."""
    _import_sqlite_utils()
    from sqlite_utils.migrations import Migrations

    migration_set = Migrations(MIGRATION_SET)
    for name, sql in steps:

        def step(db: "sqlite_utils.Database", sql: str = sql) -> None:
            _run_script(db.conn, sql)

        migration_set(name=name)(step)
    return migration_set


@dataclass
class CatalogBatch:
    """The changes of a :meth:`Catalog.batch` not yet committed."""

    commit_now: Callable[[], None]
    rows_per_commit: int
    pending: int = 0

    def wrote(self, rows: int) -> None:
        """A change wrote ``rows`` rows: commit once enough are pending."""
        self.pending += rows
        if self.pending >= self.rows_per_commit:
            self.commit()

    def commit(self) -> None:
        """Commit what is pending (the next change begins a transaction again)."""
        self.commit_now()
        self.pending = 0


class Catalog:
    def __init__(self, path: Path, store_url: str) -> None:
        self.path = path
        self.store_url = store_url
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT)
        except OSError as exc:
            raise CatalogError(f"cannot open catalog {path}: {exc.strerror}") from exc
        except sqlite3.Error as exc:
            raise _translate(path, exc) from exc
        self._conn = conn
        self._scratch = False  # a scratch database attached for listings
        self._batching = False  # inside batch(): changes join the batch's transaction
        try:
            self._setup()
        except sqlite3.Error as exc:
            conn.close()
            raise _translate(path, exc) from exc
        except CatalogError:
            conn.close()
            raise

    @staticmethod
    def remove(path: Path) -> None:
        """Delete a catalog (and its journal files): it is a cache, rebuilt by a sync."""
        for suffix in ("", "-wal", "-shm", "-journal"):
            try:
                Path(f"{path}{suffix}").unlink(missing_ok=True)
            except OSError as exc:
                raise CatalogError(f"cannot remove catalog {path}{suffix}: "
                                   f"{exc.strerror}") from exc

    def _setup(self) -> None:
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA foreign_keys = ON")
        self._conn.execute("PRAGMA synchronous = NORMAL")
        # a 64 MiB page cache: syncing a million chunk references is bounded by
        # inserting them. Sorts and temporary indices spill to files past the cache:
        # in memory, a sync of 500 manifests and 1,000,000 blobs peaked at 196 MiB, with
        # files at 161 MiB, in the same 45 s (tools/bench.py child "sync")
        self._conn.execute("PRAGMA temp_store = FILE")
        self._conn.execute("PRAGMA cache_size = -65536")
        steps = migration_steps()
        known = {name for name, _ in steps}
        applied = self._applied_migrations()
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if applied - known or version > len(known):
            newer = sorted(applied - known) or [str(version)]
            raise CatalogError(
                f"catalog {self.path} has schema version {newer[-1]}, newer than this "
                "pitreos reads: upgrade pitreos or use another --catalog")
        if applied != known:
            # sqlite-utils only to migrate: importing it costs ~60 ms of every start-up
            _import_sqlite_utils()
            import sqlite_utils

            migrations(steps).apply(sqlite_utils.Database(self._conn))
            # pitreos 0.1 read only user_version: one a migration keeps it out
            self._conn.execute(f"PRAGMA user_version = {len(known)}")
        self._conn.execute("INSERT OR IGNORE INTO settings (key, value) VALUES ('store_url', ?)",
                          (self.store_url,))
        row = self._conn.execute("SELECT value FROM settings WHERE key = 'store_url'").fetchone()
        if row[0] != self.store_url:
            raise CatalogError(
                f"catalog {self.path} mirrors store {row[0]}, not {self.store_url}: use "
                "another --catalog"
            )

    def _applied_migrations(self) -> set[str]:
        """The steps recorded as applied, read as sqlite-utils records them."""
        if self._conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
                              "name = '_sqlite_migrations'").fetchone() is None:
            return set()
        return {name for (name,) in self._conn.execute(
            "SELECT name FROM _sqlite_migrations WHERE migration_set = ?", (MIGRATION_SET,))}

    def close(self) -> None:
        self._conn.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All or nothing; inside a :meth:`batch`, a savepoint of the batch's
        transaction, which the first change after each of its commits begins."""
        if self._batching and not self._conn.in_transaction:
            self._conn.execute("BEGIN IMMEDIATE")  # the batch's: it commits it
        if self._conn.in_transaction:
            begin, end = "SAVEPOINT part", "RELEASE part"
            undo: tuple[str, ...] = ("ROLLBACK TO part", "RELEASE part")
        else:
            begin, end, undo = "BEGIN IMMEDIATE", "COMMIT", ("ROLLBACK",)
        self._conn.execute(begin)
        try:
            yield
        except BaseException:
            for statement in undo:
                self._conn.execute(statement)
            raise
        self._conn.execute(end)

    @contextmanager
    def batch(self, rows_per_commit: int) -> Iterator[CatalogBatch]:
        """Many changes in few transactions, each change still all or nothing (see
        :meth:`transaction`); what is committed stays if the batch is interrupted. The
        caller tells the batch how many rows each change wrote, and it commits past
        ``rows_per_commit``; it also commits when told to (before the caller waits for
        something: the write lock is held only while changes are made). Why: each
        commit writes every page its transaction changed, and a sync's blobs land on
        random pages of the sha1 index. One transaction a manifest, a million blobs
        (1,000 manifests of 2,000 chunks) took 33 s and wrote 13.3 GB; committing every
        100 manifests, 12 s and 5.2 GB (every 10: 18 s; all in one: 12 s)."""
        batch = CatalogBatch(self._commit, rows_per_commit)
        self._batching = True
        try:
            yield batch
            batch.commit()
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise
        finally:
            self._batching = False

    def _commit(self) -> None:
        if self._conn.in_transaction:
            try:
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise _translate(self.path, exc) from exc

    # Blobs
    @_guarded
    def known_blobs(self, sha1s: Collection[str]) -> dict[str, KnownBlob]:
        """The catalog's rows for those of ``sha1s`` it knows."""
        wanted = list(sha1s)
        found: dict[str, KnownBlob] = {}
        for start in range(0, len(wanted), _QUERY_BATCH):
            part = wanted[start:start + _QUERY_BATCH]
            marks = ",".join("?" * len(part))
            rows = self._conn.execute(
                f"SELECT sha1, blake3, missing, refcount FROM blobs "
                f"WHERE sha1 IN ({marks})", part)
            found.update((r[0], KnownBlob(r[0], r[1], bool(r[2]), r[3])) for r in rows)
        return found

    @_guarded
    def missing_blobs(self) -> set[str]:
        """Blobs a listing showed the store lacks (normally none)."""
        return {r[0] for r in self._conn.execute("SELECT sha1 FROM blobs WHERE missing = 1")}

    @_guarded
    def add_blobs(self, blobs: Iterable[NewBlob]) -> None:
        """Record blobs just stored (no references yet); clears a 'missing' mark."""
        now = time.time()
        with self.transaction():
            self._conn.executemany(
                "INSERT INTO blobs (sha1, blake3, size, stored_size, added_unix) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (sha1) DO UPDATE SET missing = 0, "
                "damaged = 0, stored_size = excluded.stored_size",
                [(b.sha1, b.blake3, b.size, b.stored_size, now) for b in blobs],
            )

    # Backups
    @_guarded
    def backup_names(self) -> set[str]:
        return {r[0] for r in self._conn.execute("SELECT name FROM backups")}

    @_guarded
    def name_taken(self, name: str) -> bool:
        """Whether a backup has this name, or had it before it left the store."""
        row = self._conn.execute(
            "SELECT EXISTS (SELECT 1 FROM backups WHERE name = ?) OR "
            "EXISTS (SELECT 1 FROM retired_names WHERE name = ?)", (name, name)).fetchone()
        return bool(row[0])

    @_guarded
    def add_backup(self, manifest: mf.Manifest, *, count_references: bool = True,
                   copied: Mapping[str, CopiedChunks] | None = None) -> int:
        """Mirror a manifest that is in the store, and count its references (a bulk sync
        passes False and calls :meth:`recount_references` once at the end). A row of the
        same name is stale (that manifest left the store): it is replaced. ``copied``
        (by entry path) names chunks whose rows an earlier backup's file already holds;
        where that file has left the catalog they are looked up one by one instead.
        Returns how many chunk rows were copied."""
        with self.transaction():
            self._delete_backup(manifest.name)
            return self._insert_backup(manifest, count_references, copied or {})

    def _insert_backup(self, m: mf.Manifest, count_references: bool,
                       copied: Mapping[str, CopiedChunks]) -> int:
        files = m.files()
        data_sizes = {e.path: e.data_size for e in files}
        cur = self._conn.execute(
            "INSERT INTO backups (name, tag, created, created_unix, chunk_size, tool, "
            "file_count, apparent_size, data_size) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                m.name, m.tag, m.created.astimezone(UTC).isoformat(), m.created.timestamp(),
                m.chunk_size, m.tool, len(files), sum(e.size for e in files),
                sum(data_sizes.values()),
            ),
        )
        backup_id = cur.lastrowid
        self._conn.executemany(
            "INSERT INTO backup_meta (backup_id, key, value) VALUES (?, ?, ?)",
            [(backup_id, k, v) for k, v in m.meta.items()],
        )
        incoming: dict[str, str] = {}  # sha1 -> blake3
        chunk_rows: list[tuple[int, int, str, str, int]] = []
        copied_rows = 0
        for entry in m.entries:
            cur = self._conn.execute(
                "INSERT INTO files (backup_id, path, type, size, mode, mtime_ns, inode, "
                "target, data_size, ctime_ns) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (backup_id, _name_in_db(entry.path), entry.type, entry.size, entry.mode,
                 _clamp_i64(entry.mtime_ns), _u64_as_i64(entry.inode),
                 None if entry.target is None else _name_in_db(entry.target),
                 data_sizes.get(entry.path, 0),
                 None if entry.ctime_ns is None else _clamp_i64(entry.ctime_ns)),
            )
            file_id = cur.lastrowid
            assert file_id is not None
            done, rows = self._copy_chunks(file_id, entry, copied.get(entry.path))
            copied_rows += rows
            for index in itertools.chain(range(done.start), range(done.stop,
                                                                  len(entry.chunks))):
                d = entry.chunks[index].digest
                if d is None:
                    continue
                seen = incoming.setdefault(d.sha1, d.blake3)
                if seen != d.blake3:
                    raise CollisionError(f"sha1 collision: manifest {m.name} lists blob "
                                         f"{d.sha1} with blake3 {seen} and {d.blake3}")
                chunk_rows.append((file_id, index, d.sha1, d.blake3,
                                   mf.chunk_length(entry.size, m.chunk_size, index)))
        # The rows go into a temporary table, then to the blobs and to the chunks in a
        # statement each, not one a row: a manifest of 1,000,000 chunks whose blobs the
        # catalog knew took 8.5-10.8 s instead of 14.1-16.0 s, one of new blobs 11.2-14.9
        # s instead of 15.4-19.2 s. A chunk finds its blob only when both hashes agree:
        # fewer rows than chunks means the catalog knows a sha1 with another blake3.
        # CROSS JOIN keeps the new rows the outer loop, whatever SQLite's estimates: a
        # probe of the sha1 index each, never a scan of every blob. The table is empty
        # on entry: emptied below, or rolled back with the transaction on a failure.
        self._conn.execute("CREATE TEMP TABLE IF NOT EXISTS incoming_chunks "
                           "(file_id INTEGER, idx INTEGER, sha1 TEXT, blake3 TEXT, "
                           "size INTEGER)")
        self._conn.executemany("INSERT INTO incoming_chunks VALUES (?, ?, ?, ?, ?)",
                               chunk_rows)
        self._conn.execute(
            "INSERT INTO blobs (sha1, blake3, size, added_unix) "
            "SELECT sha1, blake3, size, ? FROM incoming_chunks WHERE true "
            "ON CONFLICT (sha1) DO NOTHING", (time.time(),))
        cur = self._conn.execute(
            "INSERT INTO chunks (file_id, idx, blob_id) SELECT i.file_id, i.idx, b.id "
            "FROM incoming_chunks i CROSS JOIN blobs b ON b.sha1 = i.sha1 AND b.blake3 = i.blake3")
        self._conn.execute("DELETE FROM incoming_chunks")
        if cur.rowcount != len(chunk_rows):
            self._raise_collision(m.name, incoming)
        if count_references:
            self._adjust_refcounts(backup_id, +1)
        return copied_rows

    def _copy_chunks(self, file_id: int, entry: mf.Entry, copy: CopiedChunks | None
                     ) -> tuple[range, int]:
        """Copy the rows of ``copy``'s chunks to the new file; returns the indexes
        copied and the rows. The caller knows those chunks equal the earlier file's (an
        incremental backup's planner took them from its rows moments before; a sync
        compared the lists' prints: pitreos.chunkprints), so only the rows' disappearance
        needs checking: when the earlier backup left the catalog meanwhile (a gc in
        another process), fewer rows than the entry's data chunks there are copied, and
        they are dropped and looked up one by one instead.

        One statement instead of a blob lookup and a row a chunk: ~10 us a chunk, 43 ms
        of an incremental backup of a 4 GiB log (4,433 chunks) went to these rows."""
        if copy is None or not copy.indexes:
            return range(0), 0
        wanted = sum(1 for c in entry.chunks[copy.indexes.start:copy.indexes.stop]
                     if c.digest is not None)
        cur = self._conn.execute(
            "INSERT INTO chunks (file_id, idx, blob_id) SELECT ?, c.idx, c.blob_id "
            "FROM chunks c WHERE c.file_id = (SELECT f.id FROM files f JOIN backups b "
            "ON b.id = f.backup_id WHERE b.name = ? AND f.path = ? AND f.type = 'file') "
            "AND c.idx >= ? AND c.idx < ?",
            (file_id, copy.backup, _name_in_db(copy.path), copy.indexes.start,
             copy.indexes.stop),
        )
        if cur.rowcount == wanted:
            return copy.indexes, wanted
        self._conn.execute("DELETE FROM chunks WHERE file_id = ?", (file_id,))
        return range(0), 0

    def _raise_collision(self, source: str, incoming: dict[str, str]) -> None:
        for sha1, b3 in incoming.items():
            row = self._conn.execute("SELECT blake3 FROM blobs WHERE sha1 = ?", (sha1,)).fetchone()
            if row is not None and row[0] != b3:
                raise CollisionError(
                    f"sha1 collision: {source} has blob {sha1} with blake3 {b3}, "
                    f"the catalog has it with blake3 {row[0]}"
                )
        raise CatalogError(f"catalog {self.path}: chunks of {source} found no blob row")

    def _adjust_refcounts(self, backup_id: int | None, sign: int) -> None:
        self._conn.execute(
            "UPDATE blobs SET refcount = refcount + ? * c.n FROM ("
            " SELECT blob_id, count(*) AS n FROM chunks"
            " WHERE file_id IN (SELECT id FROM files WHERE backup_id = ?) GROUP BY blob_id"
            ") AS c WHERE blobs.id = c.blob_id",
            (sign, backup_id),
        )

    @_guarded
    def remove_backup(self, name: str) -> None:
        """Forget a backup whose manifest left the store; its blobs lose references,
        and its name is retired (:meth:`name_taken`)."""
        with self.transaction():
            self._delete_backup(name)
            self._conn.execute("INSERT OR IGNORE INTO retired_names VALUES (?)", (name,))

    def _delete_backup(self, name: str) -> None:
        row = self._conn.execute("SELECT id FROM backups WHERE name = ?", (name,)).fetchone()
        if row is not None:
            self._adjust_refcounts(row[0], -1)
            self._conn.execute("DELETE FROM backups WHERE id = ?", (row[0],))

    @_guarded
    def recount_references(self) -> None:
        """Recompute every reference count from the chunk table."""
        with self.transaction():
            self._conn.execute("UPDATE blobs SET refcount = 0")
            self._conn.execute(
                "UPDATE blobs SET refcount = c.n FROM (SELECT blob_id, count(*) AS n "
                "FROM chunks GROUP BY blob_id) AS c WHERE blobs.id = c.blob_id"
            )

    @_guarded
    def stage_listing(self, listing: Iterable[ListedBlob]) -> None:
        """Hold a full listing of the store's blobs for the queries below, until the
        next listing: streamed in batches into a scratch database beside the catalog,
        whose page cache is bounded (the connection's temporary tables live in memory,
        and a million listed blobs there took ~150 MiB)."""
        if not self._scratch:
            # a file of this process's own, unlinked once open: SQLite keeps using it,
            # and nothing is left behind however the process ends
            fd, scratch = tempfile.mkstemp(prefix=f"{self.path.name}-listing-",
                                           dir=self.path.parent)
            os.close(fd)
            try:
                self._conn.execute("ATTACH DATABASE ? AS scratch", (scratch,))
            finally:
                os.unlink(scratch)
            self._conn.execute("PRAGMA scratch.journal_mode = OFF")
            self._conn.execute("PRAGMA scratch.synchronous = OFF")
            self._conn.execute(f"PRAGMA scratch.cache_size = -{_SCRATCH_CACHE_KIB}")
            self._scratch = True
        # appended in listing order, indexed once at the end: a primary key filled in
        # the listing's (random) sha1 order rewrote pages over and over (13 GB written
        # for a million blobs, tools/bench.py --cases million)
        self._conn.execute("DROP TABLE IF EXISTS scratch.listed")
        self._conn.execute("CREATE TABLE scratch.listed (sha1 TEXT, stored_size INTEGER, "
                           "modified REAL)")
        rows = ((b.sha1, b.stored_size, b.modified.timestamp()) for b in listing)
        # one transaction: committing each batch rewrote the whole table (7.9 GB for a
        # million)
        with self._scratch_transaction():
            while batch := list(itertools.islice(rows, _LISTING_BATCH)):
                self._conn.executemany("INSERT INTO scratch.listed VALUES (?, ?, ?)", batch)
        self._conn.execute("CREATE UNIQUE INDEX scratch.listed_sha1 ON listed (sha1)")

    @contextmanager
    def _scratch_transaction(self) -> Iterator[None]:
        """A transaction of the scratch database alone (deferred: it locks nothing of
        the catalog)."""
        self._conn.execute("BEGIN")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def _scratch_pages(self, select: str, batch: int) -> Iterator[list[tuple[Any, ...]]]:
        """The rows of ``select`` (``SELECT rowid, ... FROM scratch.table``), ``batch``
        at a time in rowid order, each page read afresh: the caller may change the
        catalog between pages."""
        last = 0
        while rows := self._conn.execute(f"{select} WHERE rowid > ? ORDER BY rowid LIMIT ?",
                                          (last, batch)).fetchall():
            last = rows[-1][0]
            yield rows

    @_guarded
    def apply_listing(self, listing: Iterable[ListedBlob]) -> int:
        """Apply a full listing of the store's blobs (staged as by :meth:`stage_listing`,
        for :meth:`unreferenced_listed` and :meth:`missing_listed` afterwards).

        Blobs the listing lacks are marked missing (so backups store them again) or,
        when nothing references them, forgotten. Returns how many referenced blobs are
        missing.
        """
        # the listing is staged outside the transaction: listing a remote store takes
        # minutes, and the catalog's write lock is held only to apply it
        self.stage_listing(listing)
        # Each side is visited in an order that makes the other's pages come in order:
        # the listing and the blobs' sha1 index side by side in sha1 order, the blobs'
        # rows in id order. Joined directly, one side's probes came in random order, and
        # past its page cache each probe was a read (a million blobs: 9.8 GB read back
        # from the OS's cache, 4.0 s; in these orders 0.5 GB, 1.5 s).
        with self.transaction():
            self._conn.execute("DROP TABLE IF EXISTS scratch.listed_ids")
            self._conn.execute(  # LIMIT -1: the listing stays a scan of its index
                "CREATE TABLE scratch.listed_ids AS SELECT b.id AS id, "
                "l.stored_size AS stored_size FROM (SELECT sha1, stored_size FROM "
                "scratch.listed ORDER BY sha1 LIMIT -1) AS l CROSS JOIN blobs b "
                "ON b.sha1 = l.sha1 ORDER BY b.id"
            )
            self._conn.execute(
                "UPDATE blobs SET missing = damaged, stored_size = l.stored_size "
                "FROM scratch.listed_ids AS l WHERE blobs.id = l.id"
            )
            self._conn.execute("DROP TABLE scratch.listed_ids")
            self._conn.execute(
                f"UPDATE blobs SET missing = 1 WHERE id IN (SELECT b.id FROM {_BLOBS_BY_SHA1} "
                "AS b WHERE NOT EXISTS (SELECT 1 FROM scratch.listed l WHERE l.sha1 = b.sha1))"
            )
            self._conn.execute("DELETE FROM blobs WHERE missing = 1 AND refcount = 0")
            row = self._conn.execute("SELECT count(*) FROM blobs WHERE missing = 1").fetchone()
        return int(row[0])

    def unreferenced_listed(self, kept: Collection[str] | None = None,
                            batch: int = _LISTING_BATCH
                            ) -> Iterator[list[tuple[str, int, datetime]]]:
        """Of the last listing, the blobs no backup references (``kept``: only these
        backups count, for a dry run that has not forgotten the others), as batches of
        (sha1, stored size, modified). They are copied apart first, so the caller may
        change the catalog between batches; it may :meth:`set_aside` those to delete
        (what an earlier call set aside is dropped)."""
        # a blob's id from the sha1 index, checked against the referenced ids: the
        # listing comes (about) in sha1 order, so the index's pages do too, and the
        # blobs' rows, in random order, are read only in a scan of their own
        query = ("SELECT l.sha1, l.stored_size, l.modified FROM scratch.listed l WHERE "
                 "NOT EXISTS (SELECT 1 FROM blobs b WHERE b.sha1 = l.sha1 AND b.id IN "
                 f"({self._referenced(kept)}))")
        try:
            self._conn.execute("DROP TABLE IF EXISTS scratch.set_aside")  # of a listing before
            self._conn.execute("CREATE TABLE scratch.set_aside (sha1 TEXT)")
            self._conn.execute("DROP TABLE IF EXISTS scratch.unreferenced")
            self._conn.execute(f"CREATE TABLE scratch.unreferenced AS {query}")
            for rows in self._scratch_pages(
                    "SELECT rowid, sha1, stored_size, modified FROM scratch.unreferenced",
                    batch):
                yield [(sha1, size, datetime.fromtimestamp(modified, UTC))
                       for _, sha1, size, modified in rows]
        except sqlite3.Error as exc:
            raise _translate(self.path, exc) from exc

    @_guarded
    def missing_listed(self, backups: Collection[str] | None = None) -> list[str]:
        """Blobs that ``backups`` (all when None) reference and the last listing lacks."""
        # the blobs in sha1 order, so that the probes of the listing come in its index's
        # order, and only those it lacks checked against the referenced ids: both checks
        # on every blob, in the blobs' order, read 2.9 GB back from the OS's cache for a
        # million blobs (1.3 s); this way 47 MB (0.3 s)
        return [sha1 for (sha1,) in self._conn.execute(
            "SELECT unlisted.sha1 FROM (SELECT bl.id, bl.sha1 FROM "
            f"{_BLOBS_BY_SHA1} AS bl WHERE NOT EXISTS (SELECT 1 FROM scratch.listed l "
            "WHERE l.sha1 = bl.sha1) LIMIT -1) AS unlisted WHERE unlisted.id IN "
            f"({self._referenced(backups)})")]

    # Queries
    @_guarded
    def backups(self, tag: str | None = None) -> list[BackupRecord]:
        """Backups, newest first, optionally of one tag."""
        sql = "SELECT * FROM backups"
        params: list[object] = []
        if tag is not None:
            sql += " WHERE tag = ?"
            params.append(tag)
        sql += " ORDER BY created_unix DESC, name DESC"
        meta: dict[int, dict[str, str]] = {}
        for backup_id, key, value in self._conn.execute("SELECT * FROM backup_meta"):
            meta.setdefault(backup_id, {})[key] = value
        return [
            BackupRecord(
                name=r["name"], tag=r["tag"],
                created=datetime.fromisoformat(r["created"]), chunk_size=r["chunk_size"],
                tool=r["tool"], file_count=r["file_count"], apparent_size=r["apparent_size"],
                data_size=r["data_size"], meta=meta.get(r["id"], {}),
            )
            for r in self._rows(sql, params)
        ]

    def _rows(self, sql: str, params: Sequence[object]) -> list[sqlite3.Row]:
        cursor = self._conn.cursor()
        cursor.row_factory = sqlite3.Row
        return cursor.execute(sql, params).fetchall()

    @_guarded
    def files_of(self, backup_name: str) -> dict[str, FileRecord]:
        """Regular files of a backup with their chunk lists, for incremental backups.
        Built with the cyclic collector paused (:mod:`pitreos.collector`): a backup of
        1,000,000 chunks listed in 3.2-3.8 s, against 4.0-5.1 s with it running."""
        with collector_paused():
            return self._files_of(backup_name)

    def _files_of(self, backup_name: str) -> dict[str, FileRecord]:
        # records built with tuple.__new__ (a NamedTuple's own __new__ is a Python call)
        # into lists sized up front: 4,433 chunks in 9.6-11.3 ms, against 16.4-19.2 ms
        # with a dict of digests per file and a Chunk() a chunk; a node's log of a
        # million chunks pays this on every incremental backup
        rows = self._conn.execute(
            "SELECT f.id, f.path, f.size, f.mtime_ns, f.inode, f.ctime_ns, b.chunk_size "
            "FROM files f "
            "JOIN backups b ON b.id = f.backup_id WHERE b.name = ? AND f.type = 'file'",
            (backup_name,),
        ).fetchall()
        digests: dict[int, list[ChunkDigest | None]] = {
            file_id: [None] * -(-size // chunk_size)
            for file_id, _, size, _, _, _, chunk_size in rows}
        new = tuple.__new__
        for file_id, idx, sha1, b3 in self._conn.execute(
            "SELECT c.file_id, c.idx, bl.sha1, bl.blake3 FROM chunks c "
            "JOIN blobs bl ON bl.id = c.blob_id JOIN files f ON f.id = c.file_id "
            "JOIN backups b ON b.id = f.backup_id WHERE b.name = ?",
            (backup_name,),
        ):
            if not 0 <= idx < len(digests[file_id]):  # only a catalog changed by hand
                raise CatalogError(
                    f"catalog {self.path} lists chunk {idx} of a file of backup "
                    f"{backup_name} beyond the file's end; it is a cache of the store: "
                    "run 'pitreos catalog sync --rebuild'")
            digests[file_id][idx] = new(ChunkDigest, (sha1, b3))
        records: dict[str, FileRecord] = {}
        for file_id, path, size, mtime_ns, stored_inode, ctime_ns, chunk_size in rows:
            inode = None if stored_inode is None else stored_inode % (1 << 64)
            of_file = digests[file_id]
            starts = range(0, len(of_file) * chunk_size, chunk_size)
            chunks = list(map(new, itertools.repeat(mf.Chunk),
                              zip(starts, of_file, strict=True)))
            name = _name_from_db(path)
            records[name] = FileRecord(backup_name, name, size, mtime_ns, inode, ctime_ns,
                                       chunk_size, chunks)
        return records

    @_guarded
    def referenced_sha1s(self, backups: Collection[str] | None = None) -> set[str]:
        """Blobs referenced by the given backups (all backups when None)."""
        return {r[0] for r in self._conn.execute(
            f"SELECT sha1 FROM blobs WHERE id IN ({self._referenced(backups)})")}

    @_guarded
    def referenced_count(self, backups: Collection[str] | None = None) -> int:
        row = self._conn.execute(
            f"SELECT count(*) FROM blobs WHERE id IN ({self._referenced(backups)})").fetchone()
        return int(row[0])

    def referenced_digests(self, backups: Collection[str] | None = None
                           ) -> Iterator[ChunkDigest]:
        """The blobs ``backups`` (all when None) reference, streamed from the catalog:
        the caller must not change the catalog until it has read them all."""
        try:
            for sha1, b3 in self._conn.execute(
                    f"SELECT sha1, blake3 FROM blobs WHERE id IN ({self._referenced(backups)})"):
                yield ChunkDigest(sha1, b3)
        except sqlite3.Error as exc:
            raise _translate(self.path, exc) from exc

    def _referenced(self, backups: Collection[str] | None) -> str:
        """A subquery of the ids of the blobs ``backups`` reference (all when None)."""
        if backups is None:
            return "SELECT id FROM blobs WHERE refcount > 0"
        self._conn.execute("CREATE TEMP TABLE IF NOT EXISTS chosen_backups "
                           "(name TEXT PRIMARY KEY)")
        self._conn.execute("DELETE FROM chosen_backups")
        self._conn.executemany("INSERT OR IGNORE INTO chosen_backups VALUES (?)",
                               [(n,) for n in backups])
        return ("SELECT c.blob_id FROM chunks c JOIN files f ON f.id = c.file_id JOIN "
                "backups b ON b.id = f.backup_id WHERE b.name IN "
                "(SELECT name FROM chosen_backups)")

    @_guarded
    def references_to(self, sha1s: Collection[str]) -> dict[str, list[tuple[str, str]]]:
        """For each blob, the (backup, file) pairs that reference it."""
        out: dict[str, list[tuple[str, str]]] = {}
        for sha1 in sha1s:
            out[sha1] = [(r[0], _name_from_db(r[1])) for r in self._conn.execute(
                "SELECT DISTINCT b.name, f.path FROM chunks c JOIN blobs bl ON bl.id = c.blob_id "
                "JOIN files f ON f.id = c.file_id JOIN backups b ON b.id = f.backup_id "
                "WHERE bl.sha1 = ? ORDER BY 1, 2", (sha1,))]
        return out

    # Blobs to delete: set aside a batch at a time (from :meth:`unreferenced_listed`),
    # forgotten all at once, then read back a batch at a time for the store to delete.
    # Forgetting them a thousand at a time rewrote the same pages of the blobs' table
    # and index in each transaction: a gc of half a million of a million blobs spent
    # 9.2 s and wrote 4.2 GB on it; in one statement 1.5 s and 0.4 GB.
    @_guarded
    def set_aside(self, sha1s: Iterable[str]) -> None:
        """Add blobs to those the next :meth:`forget_set_aside` forgets: blobs of the
        last :meth:`unreferenced_listed`, whose table (in the scratch database) it made."""
        with self._scratch_transaction():
            self._conn.executemany("INSERT INTO scratch.set_aside VALUES (?)",
                                   ((sha1,) for sha1 in sha1s))

    @_guarded
    def forget_set_aside(self) -> None:
        """Drop the rows of the blobs set aside (those nothing references) before the
        store deletes them, so the catalog never claims a blob the store may no longer
        hold."""
        with self.transaction():
            self._conn.execute("DELETE FROM blobs WHERE refcount = 0 AND sha1 IN "
                               "(SELECT sha1 FROM scratch.set_aside)")

    def set_aside_batches(self, batch: int) -> Iterator[list[str]]:
        """The blobs set aside, ``batch`` at a time; then none are."""
        try:
            for rows in self._scratch_pages("SELECT rowid, sha1 FROM scratch.set_aside",
                                            batch):
                yield [sha1 for _, sha1 in rows]
            self._conn.execute("DELETE FROM scratch.set_aside")
        except sqlite3.Error as exc:
            raise _translate(self.path, exc) from exc

    @_guarded
    def tag_stats(self) -> dict[str, dict[str, int]]:
        """Per tag (and '*' for all): backups, logical bytes, unique blobs and their
        plain and stored sizes."""
        stats: dict[str, dict[str, int]] = {}
        tags = [r[0] for r in self._conn.execute("SELECT DISTINCT tag FROM backups ORDER BY 1")]
        for tag in [*tags, "*"]:
            where, params = ("WHERE b.tag = ?", (tag,)) if tag != "*" else ("", ())
            backups, logical = self._conn.execute(
                f"SELECT count(*), coalesce(sum(data_size), 0) FROM backups b {where}",
                params).fetchone()
            blobs, plain, stored = self._conn.execute(
                "SELECT count(*), coalesce(sum(size), 0), coalesce(sum(stored_size), 0) "
                "FROM blobs WHERE id IN (SELECT c.blob_id FROM chunks c JOIN files f "
                f"ON f.id = c.file_id JOIN backups b ON b.id = f.backup_id {where})",
                params).fetchone()
            stats[tag] = {"backups": backups, "logical_bytes": logical, "unique_blobs": blobs,
                          "unique_bytes": plain, "stored_bytes": stored}
        return stats

    @_guarded
    def store_id(self) -> str | None:
        """The id of the store this catalog mirrors, once it is known."""
        row = self._conn.execute("SELECT value FROM settings WHERE key = 'store_id'").fetchone()
        return None if row is None else str(row[0])

    @_guarded
    def set_store_id(self, value: str) -> None:
        self._conn.execute("INSERT OR REPLACE INTO settings (key, value) VALUES ('store_id', ?)",
                           (value,))

    @_guarded
    def mark_damaged(self, sha1s: Collection[str]) -> None:
        """Blobs that verify found missing or damaged in the store: the next backup that
        reads the same data stores them again (a listing that shows an object of the
        name does not clear the mark; storing a good copy does)."""
        with self.transaction():
            self._conn.executemany("UPDATE blobs SET missing = 1, damaged = 1 WHERE sha1 = ?",
                                   [(s,) for s in sha1s])

    @_guarded
    def wrong_reference_counts(self) -> int:
        """Blobs whose reference count disagrees with the chunk table (normally 0)."""
        row = self._conn.execute(
            "SELECT count(*) FROM blobs b LEFT JOIN (SELECT blob_id, count(*) AS n FROM "
            "chunks GROUP BY blob_id) c ON c.blob_id = b.id "
            "WHERE b.refcount != coalesce(c.n, 0)").fetchone()
        return int(row[0])

    @_guarded
    def reference_counts(self) -> dict[str, int]:
        """Each referenced blob's reference count."""
        return dict(self._conn.execute("SELECT sha1, refcount FROM blobs WHERE refcount > 0"))

    @_guarded
    def blob_stats(self) -> dict[str, int]:
        row = self._conn.execute(
            "SELECT count(*), coalesce(sum(size), 0), coalesce(sum(stored_size), 0), "
            "coalesce(sum(refcount), 0) FROM blobs WHERE refcount > 0"
        ).fetchone()
        return {"blobs": row[0], "size": row[1], "stored_size": row[2], "references": row[3]}


def _name_in_db(name: str) -> str | bytes:
    """A file name that is not UTF-8 (the OS's text with surrogate escapes) is stored as
    its raw bytes: SQLite's text must be UTF-8."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(name)
    return name


def _name_from_db(value: str | bytes) -> str:
    return value if isinstance(value, str) else os.fsdecode(value)


def _clamp_i64(value: int) -> int:
    """A file time that SQLite's 64-bit integers cannot hold (after 2262) is stored
    clamped: it then never equals the file's, and an incremental backup reads the file
    again rather than trusting it unchanged. The manifest keeps the exact time."""
    return max(-(1 << 63), min(value, (1 << 63) - 1))


def _u64_as_i64(value: int | None) -> int | None:
    """Inode numbers are unsigned 64-bit: stored as the signed number of the same bits."""
    return None if value is None else value - (1 << 64) if value >= 1 << 63 else value


def _run_script(conn: sqlite3.Connection, sql: str) -> None:
    """Run a schema script statement by statement, inside the caller's transaction
    (``executescript`` would commit it)."""
    statement = ""
    for line in sql.splitlines(keepends=True):
        if line.lstrip().startswith("--"):
            continue
        statement += line
        if sqlite3.complete_statement(statement):
            conn.execute(statement)
            statement = ""
