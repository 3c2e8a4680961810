"""Markers that let gc and backups on different machines stay out of each other's way,
with no lock server: the records the protocol of :mod:`pitreos.gcprotocol` exchanges
through the store (where they live: :mod:`pitreos.repository`). Its argument:
``docs/gc.md``.

A marker is a small JSON object. It is advisory. A marker is stale, and ignored, when
its owner stopped refreshing it for ``stale_after`` (a crashed process on another
machine), or at once when it names this very machine and boot and its process is gone
(or the machine rebooted since).
"""

import json
import os
import time
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Literal

DEFAULT_STALE_AFTER = 6 * 3600.0
FINISHED_GC_KEPT = 7 * 24 * 3600.0  # how long finished gc markers stay, for slow backups

Kind = Literal["gc", "backup"]


@dataclass
class Marker:
    kind: Kind
    id: str
    host: str
    pid: int
    started: float  # the writer's clock: for people; decisions use the store's clock
    updated: float
    finished: float | None = None
    deleting_blobs: bool = False  # gc only: it saw no running backup and deletes blobs
    host_id: str = ""  # /etc/machine-id (or the host name): which machine
    boot_id: str = ""  # which boot of that machine: a pid means nothing across boots
    pid_start: str = ""  # the process's start time (/proc): a reused pid is not it

    def owner_gone(self) -> bool:
        """Whether this marker's process is known to be gone: it ran on this machine,
        and the machine rebooted since or the process no longer exists."""
        if not self.host_id or self.host_id != host_id():
            return False  # another machine: only staleness tells
        if self.boot_id != boot_id():
            return True
        return not _process_exists(self.pid) or (
            bool(self.pid_start) and process_start(self.pid) != self.pid_start)


@dataclass(frozen=True, slots=True)
class SeenMarker:
    """A marker as the store holds it, with the store's time of its last write."""

    marker: Marker
    modified: float  # seconds since the epoch, by the store's clock

    def live(self, store_now: float, stale_after: float) -> bool:
        """Running now: not finished, refreshed within ``stale_after`` (both times by
        the store's clock, so the machines' clocks need not agree), owner not gone."""
        m = self.marker
        return (m.finished is None and store_now - self.modified < stale_after
                and not m.owner_gone())


def new_marker(kind: Kind, now: float | None = None) -> Marker:
    now = time.time() if now is None else now
    return Marker(kind=kind, id=f"{int(now)}-{random_id(6)}",
                  host=hostname(), pid=os.getpid(), started=now, updated=now,
                  host_id=host_id(), boot_id=boot_id(), pid_start=process_start(os.getpid()))


def encode(marker: Marker, now: float | None = None) -> bytes:
    """Stamp the marker as updated now, and serialise it."""
    marker.updated = time.time() if now is None else now
    return json.dumps(asdict(marker)).encode()


def decode(data: bytes) -> Marker | None:
    """The marker in ``data``; None when it is damaged or not ours."""
    try:
        return Marker(**json.loads(data))
    except (ValueError, TypeError):
        return None


def random_id(size: int = 16) -> str:
    """``size`` random bytes in hex: a uuid4's randomness (os.urandom) without importing
    uuid, which brings platform with it (~4 ms of every start-up, importtime)."""
    return os.urandom(size).hex()


def hostname() -> str:
    """This machine's name: the kernel's nodename, which ``socket.gethostname()`` returns
    on Linux, without importing socket (~6 ms of every start-up, importtime)."""
    return os.uname().nodename


@cache
def host_id() -> str:
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            value = Path(path).read_text().strip()
        except OSError:
            continue
        if value:
            return value
    return hostname()


@cache
def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def process_start(pid: int) -> str:
    """When process ``pid`` started (clock ticks since boot, from /proc), or "" """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    fields = stat.rpartition(")")[2].split()  # the name may hold spaces and ')'
    return fields[19] if len(fields) > 19 else ""


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True
