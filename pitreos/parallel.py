"""A bounded window of tasks on a thread pool.

The engine's work (positional reads and writes, hashing, compression, store requests)
runs in C code that releases the GIL, so threads use every core. The window bounds how
many tasks (and so how many chunk buffers) are in flight: memory stays proportional to
the window, whatever the size of the files.
"""

from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class TaskWindow(Generic[T]):
    """Submit tasks while not :attr:`full`; take results with :meth:`next_done`.

    Use as a context manager: on an exception (Ctrl-C included) pending tasks are
    cancelled and running ones are waited for, so no thread writes after the caller
    has given up.
    """

    def __init__(self, workers: int, limit: int | None = None) -> None:
        self.workers = max(1, workers)
        self.limit = max(self.workers, limit or self.workers * 2)
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="pitreos")
        self._pending: set[Future[T]] = set()
        self._done: list[Future[T]] = []

    def __enter__(self) -> "TaskWindow[T]":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return len(self._pending) + len(self._done)

    @property
    def full(self) -> bool:
        return len(self) >= self.limit

    def submit(self, fn: Callable[..., T], *args: Any) -> None:
        self._pending.add(self._pool.submit(fn, *args))

    def next_done(self) -> T:
        """Wait for a task to finish and return its result (or raise its exception)."""
        if not self._done:
            done, self._pending = wait(self._pending, return_when=FIRST_COMPLETED)
            self._done.extend(done)
        return self._done.pop().result()

    def close(self) -> None:
        for future in self._pending:
            future.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._pending.clear()
        self._done.clear()
