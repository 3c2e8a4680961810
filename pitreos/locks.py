"""Markers that let gc and backups on different machines stay out of each other's way,
with no lock server: the records the protocol of :mod:`pitreos.gcprotocol` exchanges
through the store (where they live: :mod:`pitreos.repository`). Its argument:
``docs/gc.md``.

A marker is a small JSON object. It is advisory: a marker older than ``stale_after``
whose owner never finished (a crashed process) is ignored.
"""

import json
import os
import socket
import time
import uuid
from dataclasses import asdict, dataclass
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
    started: float
    updated: float
    finished: float | None = None
    deleting_blobs: bool = False  # gc only: it saw no running backup and deletes blobs

    def live(self, now: float, stale_after: float) -> bool:
        return self.finished is None and now - self.updated < stale_after


def new_marker(kind: Kind) -> Marker:
    now = time.time()
    return Marker(kind=kind, id=f"{int(now)}-{uuid.uuid4().hex[:12]}",
                  host=socket.gethostname(), pid=os.getpid(), started=now, updated=now)


def encode(marker: Marker) -> bytes:
    """Stamp the marker as updated now, and serialise it."""
    marker.updated = time.time()
    return json.dumps(asdict(marker)).encode()


def decode(data: bytes) -> Marker | None:
    """The marker in ``data``; None when it is damaged or not ours."""
    try:
        return Marker(**json.loads(data))
    except (ValueError, TypeError):
        return None
