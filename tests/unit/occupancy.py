"""Counting the threads inside a block at once, for tests of bounds on concurrency."""

import threading
from types import TracebackType


class Occupancy:
    """A block's occupants now (``inside``) and the most there ever were (``most``)."""

    def __init__(self) -> None:
        self.inside = 0
        self.most = 0
        self._lock = threading.Lock()

    def __enter__(self) -> None:
        with self._lock:
            self.inside += 1
            self.most = max(self.most, self.inside)

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        with self._lock:
            self.inside -= 1
