"""Crash points, for the tests that prove an interrupted operation loses nothing.

With ``PITREOS_CRASH_AT=NAME:N`` in the environment, the Nth time the process passes
the point called NAME it kills itself with SIGKILL, as a power cut, the OOM killer or
``kill -9`` would: no handler, no cleanup. Without the variable a point costs one
cached lookup. The points are listed in ``docs/design.md``.
"""

import os
import signal
import threading
from dataclasses import dataclass, field
from functools import cache

ENV = "PITREOS_CRASH_AT"


@dataclass
class _Target:
    name: str
    count: int
    seen: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


@cache
def _target() -> _Target | None:
    # the only state kept: how often the named point was passed, in this process
    spec = os.environ.get(ENV)
    if not spec:
        return None
    name, _, count = spec.rpartition(":")
    return _Target(name, int(count))


def point(name: str) -> None:
    """A place where a crash must lose nothing."""
    target = _target()
    if target is None or target.name != name:
        return
    with target.lock:
        target.seen += 1
        hit = target.seen == target.count
    if hit:
        os.kill(os.getpid(), signal.SIGKILL)
