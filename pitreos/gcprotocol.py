"""The protocol that keeps gc and backups on different machines from losing data, with
no lock server: both halves in one place. The argument is in ``docs/gc.md``.

- A backup writes a marker while it runs (:class:`BackupGuard`), refreshed so that a
  long backup never looks stale. Before publishing its manifest it waits for any gc
  that deletes blobs and overlapped it, and then has every blob it references checked
  (the backup stores again any that gc took).
- A gc writes its intent to delete blobs first (:class:`GCGuard`), then looks for
  running backups: if it sees one it deletes no blob this time. Its marker stays for
  a week after it finishes, so that backups that overlapped it can tell.
- A blob the catalog knows but no backup references is trusted to be in the store only
  if it was recorded after the newest gc that may have deleted blobs.
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
    """The backup's half. Use as a context manager around the backup's store writes."""

    repo: Repository
    stale_after: float = locks.DEFAULT_STALE_AFTER
    poll_seconds: float = 2.0
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    marker: locks.Marker = field(default_factory=lambda: locks.new_marker("backup"))

    def __enter__(self) -> "BackupGuard":
        self.repo.write_marker(self.marker)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.repo.remove_marker(self.marker)

    @property
    def started(self) -> float:
        return self.marker.started

    def refresh(self) -> None:
        """Keep the marker fresh during a long backup (cheap to call per chunk)."""
        if self.clock() - self.marker.updated > MARKER_REFRESH_SECONDS:
            self.repo.write_marker(self.marker)

    def trust_unreferenced_after(self) -> float:
        """Catalog blobs that no backup references are trusted only if recorded after
        this time: the start of the newest gc that may have deleted blobs (finished gc
        markers are kept for a week, so nothing older is trusted)."""
        newest = max((m.started for m in self.repo.markers()
                      if m.kind == "gc" and m.deleting_blobs), default=0.0)
        return max(newest, self.clock() - locks.FINISHED_GC_KEPT)

    def wait_for_gc(self, since: float) -> tuple[bool, float]:
        """Wait while a gc that deletes blobs runs. Returns whether one overlapped the
        backup (running, or finished since ``since``), and when that was checked: when
        it did, every blob the backup references must be checked before its manifest
        is written (and once more after, from that time)."""
        while True:
            now = self.clock()
            overlapping = [m for m in self.repo.markers()
                           if m.kind == "gc" and m.deleting_blobs
                           and (m.live(now, self.stale_after)
                                or (m.finished is not None and m.finished >= since))]
            running = [m for m in overlapping if m.live(now, self.stale_after)]
            if not running:
                return bool(overlapping), self.clock()
            log.info("backup.waiting_for_gc", host=running[0].host, gc=running[0].id)
            self.sleep(self.poll_seconds)


@dataclass
class GCGuard:
    """The gc's half. Use as a context manager around a gc; ``dry_run`` writes nothing."""

    repo: Repository
    stale_after: float = locks.DEFAULT_STALE_AFTER
    dry_run: bool = False
    clock: Callable[[], float] = time.time
    marker: locks.Marker = field(default_factory=lambda: locks.new_marker("gc"))

    def __enter__(self) -> "GCGuard":
        self.marker.deleting_blobs = True  # an intent, written before anything is read
        if not self.dry_run:
            self.repo.write_marker(self.marker)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.dry_run:
            return
        self.marker.finished = self.clock()
        self.repo.write_marker(self.marker)
        if exc is None:
            self._forget_old_markers()

    def running_backup(self) -> locks.Marker | None:
        """A backup running now, if any; the gc then must not delete blobs."""
        now = self.clock()
        return next((m for m in self.repo.markers()
                     if m.kind == "backup" and m.live(now, self.stale_after)), None)

    def stand_down(self) -> None:
        """This gc deletes no blob after all: say so, so backups need not wait for it."""
        self.marker.deleting_blobs = False
        if not self.dry_run:
            self.repo.write_marker(self.marker)

    def _forget_old_markers(self) -> None:
        now = self.clock()
        for m in self.repo.markers():
            if m.kind == "gc" and m.id != self.marker.id and m.finished is not None and \
                    now - m.finished > locks.FINISHED_GC_KEPT:
                self.repo.remove_marker(m)
