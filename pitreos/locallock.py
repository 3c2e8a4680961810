"""One run at a time of the same operation on the same directory and store, on this
host: two cron jobs that overlap must not back up (or restore) the same directory at
once. The lock is an ``flock`` on a small file beside the store's catalog, so it is
released when the process ends, however it ends; the file names who holds it."""

import fcntl
import hashlib
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import Locked


def lock_path(catalog: Path, operation: str, directory: Path | None) -> Path:
    target = str(directory.resolve()) if directory is not None else ""
    key = hashlib.sha256(f"{operation}\0{target}".encode()).hexdigest()[:16]
    return catalog.with_name(f"{catalog.name}.{operation}-{key}.lock")


@contextmanager
def exclusive(catalog: Path, operation: str, directory: Path | None, store: str,
              wait: float = 0.0) -> Iterator[None]:
    """Hold the lock of ``operation`` on ``directory`` and the store while inside; wait
    up to ``wait`` seconds for another run to end, then fail with :class:`Locked`."""
    path = lock_path(catalog, operation, directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 4096, 0).decode(errors="replace").strip()
                    what = f"{operation} of {directory}" if directory else operation
                    raise Locked(
                        f"another pitreos {what} with store {store} is running on this host "
                        f"({holder or 'holder unknown'}): wait for it to end, or pass "
                        "--wait DURATION") from None
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "since": time.time()}).encode(), 0)
        yield
    finally:
        os.close(fd)  # and with it the lock
