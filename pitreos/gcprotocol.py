"""The protocol that keeps gc and backups on different machines from losing data, with
no lock server: both halves in one place. The argument is in ``docs/gc.md``.

Every decision orders events by the store's own clock (the modification times it
reports for the markers), never by comparing the clocks of two machines: a gc host
whose clock is ten minutes behind a backup host's changes nothing.

- A backup writes a marker while it runs (:class:`BackupGuard`), refreshed so that a
  long backup never looks stale, and syncs its catalog only after that. Before
  publishing its manifest it waits for any gc that deletes blobs and overlapped it
  (seen running at any check, or finished after the backup's marker was written, by
  the store's clock), and then has every blob it references checked: it stores again
  any that gc took. It checks once more after publishing.
- A gc writes its intent to delete blobs first (:class:`GCGuard`), then looks for
  running backups: if it sees one it deletes no blob this time. Its marker stays for
  a week after it finishes, so that backups that overlapped it can tell.
- A blob the catalog knows but no backup references is used by a backup only after
  the store confirmed it during that backup (the pipeline's existence check).
"""

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType

from . import locks
from .log import get_logger
from .repository import Repository

log = get_logger(__name__)
MARKER_REFRESH_SECONDS = 600.0


@dataclass
class BackupGuard:
    """The backup's half. Use as a context manager around the backup; ``started`` is
    the store's time of its marker's first write."""

    repo: Repository
    stale_after: float = locks.DEFAULT_STALE_AFTER
    poll_seconds: float = 2.0
    clock: Callable[[], float] = time.time  # only for the marker's human-readable times
    sleep: Callable[[float], None] = time.sleep
    marker: locks.Marker = field(default_factory=lambda: locks.new_marker("backup"))
    started: float = 0.0
    _refreshed: float = 0.0  # time.monotonic() of the last write
    _seen_live: set[str] = field(default_factory=set)  # deleting gcs ever seen running

    def __enter__(self) -> "BackupGuard":
        self.marker.started = self.clock()
        self.started = self._write()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.repo.remove_marker(self.marker)

    def _write(self) -> float:
        self.marker.updated = self.clock()
        written = self.repo.write_marker(self.marker)
        self._refreshed = time.monotonic()
        return written

    def refresh(self) -> None:
        """Keep the marker fresh during a long backup (cheap to call per chunk)."""
        if time.monotonic() - self._refreshed > MARKER_REFRESH_SECONDS:
            self._write()

    def wait_for_gc(self, since: float) -> tuple[bool, float]:
        """Wait while a gc that deletes blobs runs. Returns whether one overlapped the
        backup (seen running at any check, finished at or after ``since`` by the store's
        clock, or dead unfinished), and the store's time of this check. When one did, every blob
        the backup references must be checked before its manifest is written (and once
        more after it, from the time returned)."""
        while True:
            now = self._write()  # the store's clock, now
            gcs = [s for s in self.repo.markers()
                   if s.marker.kind == "gc" and s.marker.deleting_blobs]
            running = [s for s in gcs if s.live(now, self.stale_after)]
            self._seen_live.update(s.marker.id for s in running)
            if not running:
                # a gc that died unfinished may have deleted anything until it died;
                # only one that finished before this backup's marker was written is out
                overlapping = [s for s in gcs
                               if s.marker.finished is None or s.modified >= since]
                return bool(self._seen_live or overlapping), now
            gc = running[0].marker
            log.warning("backup.waiting_for_gc", host=gc.host, gc=gc.id, pid=gc.pid,
                        hint="a gc that deletes blobs is running; the backup publishes "
                        "after it ends ('pitreos unlock' lists markers)")
            self.sleep(self.poll_seconds)


@dataclass
class GCGuard:
    """The gc's half. Use as a context manager around a gc; ``dry_run`` writes nothing."""

    repo: Repository
    stale_after: float = locks.DEFAULT_STALE_AFTER
    dry_run: bool = False
    clock: Callable[[], float] = time.time  # only for the marker's human-readable times
    marker: locks.Marker = field(default_factory=lambda: locks.new_marker("gc"))
    _refreshed: float = 0.0  # time.monotonic() of the last write

    def __enter__(self) -> "GCGuard":
        self.marker.deleting_blobs = True  # an intent, written before anything is read
        self.marker.started = self.clock()
        if not self.dry_run:
            self._write()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.dry_run:
            return
        self.marker.finished = self.clock()
        now = self._write()
        if exc is None:
            self._forget_old_markers(now)

    def _write(self) -> float:
        self.marker.updated = self.clock()
        return self.repo.write_marker(self.marker)

    def store_now(self) -> float:
        """The store's clock now, read from this gc's own marker, rewritten (a dry run
        writes nothing: it uses this machine's clock for its estimate)."""
        return time.time() if self.dry_run else self._write()

    def running_backup(self) -> locks.Marker | None:
        """A backup running now, if any; the gc then must not delete blobs."""
        now = self._write()
        return next((s.marker for s in self.repo.markers()
                     if s.marker.kind == "backup" and s.live(now, self.stale_after)), None)

    def refresh(self) -> None:
        """Keep the marker fresh while a long gc deletes (called between batches)."""
        if not self.dry_run and time.monotonic() - self._refreshed > MARKER_REFRESH_SECONDS:
            self._write()

    def stand_down(self) -> None:
        """This gc deletes no blob after all: say so, so backups need not wait for it."""
        self.marker.deleting_blobs = False
        if not self.dry_run:
            self._write()

    def _forget_old_markers(self, now: float) -> None:
        for seen in self.repo.markers():
            m = seen.marker
            if m.kind == "gc" and m.id != self.marker.id and m.finished is not None and \
                    now - seen.modified > locks.FINISHED_GC_KEPT:
                self.repo.remove_marker(m)


@dataclass(frozen=True)
class MarkerStatus:
    seen: locks.SeenMarker
    state: str  # "running", "finished", "stale (no refresh for ...)", "process gone"

    @property
    def orphaned(self) -> bool:
        """No process stands behind it (or none is known to)."""
        return self.state not in ("running", "finished")


def marker_statuses(repo: Repository, stale_after: float = locks.DEFAULT_STALE_AFTER
                    ) -> list[MarkerStatus]:
    """Every marker in the store, with what it means now (by the store's clock)."""
    now = repo.store_time()
    statuses = []
    for seen in sorted(repo.markers(), key=lambda s: s.marker.started):
        m = seen.marker
        if m.finished is not None:
            state = "finished"
        elif m.owner_gone():
            state = "process gone"
        elif not seen.live(now, stale_after):
            state = f"stale (no refresh for {int(now - seen.modified)} s)"
        else:
            state = "running"
        statuses.append(MarkerStatus(seen, state))
    return statuses


def release_markers(repo: Repository, statuses: list[MarkerStatus], *,
                    everything: bool, clock: Callable[[], float] = time.time
                    ) -> list[MarkerStatus]:
    """Release the orphaned markers (with ``everything``, the running-looking ones too).
    A backup's marker is removed. A gc's is marked finished instead, now: a backup that
    overlapped that gc must still learn that it may have deleted blobs. Returns the
    markers released."""
    released = [s for s in statuses if s.orphaned or (everything and s.state == "running")]
    for status in released:
        m = status.seen.marker
        if m.kind == "gc":
            m.finished = clock()
            repo.write_marker(m)
        else:
            repo.remove_marker(m)
        log.info("marker.released", kind=m.kind, id=m.id, state=status.state)
    return released
