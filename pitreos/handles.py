"""File descriptors opened on first use and closed after their last task.

Backup and restore work through many files chunk by chunk. Opening them all at once
would fail past the process's open-file limit (often 1024) on a tree of many files;
with this, only the files that have tasks in flight are open.
"""

import os
from collections.abc import Callable


class Handles:
    """Per-path descriptors with a count of tasks left; used from one thread."""

    def __init__(self, open_file: Callable[[str], int],
                 finish: Callable[[str, int], None] | None = None) -> None:
        self._open_file = open_file
        self._finish = finish
        self._fds: dict[str, int] = {}
        self._left: dict[str, int] = {}

    def expect(self, path: str, tasks: int) -> None:
        """``path`` will have ``tasks`` tasks; with none, it is opened and finished now."""
        self._left[path] = tasks
        if tasks == 0:
            self._left[path] = 1
            self.fd(path)
            self.done(path)

    def fd(self, path: str) -> int:
        fd = self._fds.get(path)
        if fd is None:
            fd = self._fds[path] = self._open_file(path)
        return fd

    def done(self, path: str) -> None:
        """One task of ``path`` finished; after the last, finish and close it."""
        self._left[path] -= 1
        if self._left[path] == 0:
            del self._left[path]
            fd = self._fds.pop(path)
            try:
                if self._finish is not None:
                    self._finish(path, fd)
            finally:
                os.close(fd)

    def close_all(self) -> None:
        """Close what is still open (after a failure); nothing is finished."""
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        self._left.clear()
