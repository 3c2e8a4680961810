"""Markers in the store that let gc and backups on different machines stay out of each
other's way, with no lock server. The protocol and its argument: ``docs/gc.md``.

A marker is a small JSON object under ``locks/``. It is advisory: a marker older than
``stale_after`` whose owner never finished (a crashed process) is ignored.
"""

import json
import os
import socket
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Literal

from .errors import BlobNotFound
from .stores.base import Store

LOCK_PREFIX = "locks/"
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

    @property
    def key(self) -> str:
        return f"{LOCK_PREFIX}{self.kind}-{self.id}.json"

    def live(self, now: float, stale_after: float) -> bool:
        return self.finished is None and now - self.updated < stale_after


def new_marker(kind: Kind) -> Marker:
    now = time.time()
    return Marker(kind=kind, id=f"{int(now)}-{uuid.uuid4().hex[:12]}",
                  host=socket.gethostname(), pid=os.getpid(), started=now, updated=now)


def write(store: Store, marker: Marker) -> None:
    marker.updated = time.time()
    store.put(marker.key, json.dumps(asdict(marker)).encode(), overwrite=True)


def remove(store: Store, marker: Marker) -> None:
    store.delete(marker.key)


def read_all(store: Store) -> list[Marker]:
    markers = []
    for info in store.list(LOCK_PREFIX):
        try:
            doc = json.loads(store.get(info.key))
            markers.append(Marker(**doc))
        except BlobNotFound:  # removed while listing
            continue
        except (ValueError, TypeError):  # not ours or damaged: ignore, never trust
            continue
    return markers
