"""A bounded window of tasks on a thread pool.

The engine's work (positional reads and writes, hashing, compression, store requests)
runs in C code that releases the GIL, so threads use every core. The window bounds how
many tasks (and so how many chunk buffers) are in flight: memory stays proportional to
the window, whatever the size of the files.
"""

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from queue import SimpleQueue
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class TaskWindow(Generic[T]):
    """Submit tasks while not :attr:`full`; take results with :meth:`next_done`.

    Finished tasks land in a queue (a done-callback puts them there), so taking one is a
    single queue read: ``concurrent.futures.wait`` builds waiters and locks on every
    call, which cost the main thread more than the work it hands out at a thousand
    chunks a second.

    Use as a context manager: on an exception (Ctrl-C included) pending tasks are
    cancelled and running ones are waited for, so no thread writes after the caller
    has given up.
    """

    def __init__(self, workers: int, limit: int | None = None) -> None:
        self.workers = max(1, workers)
        self.limit = max(self.workers, limit or self.workers * 2)
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="pitreos")
        self._finished: SimpleQueue[Future[T]] = SimpleQueue()
        self._in_flight = 0

    def __enter__(self) -> "TaskWindow[T]":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return self._in_flight

    @property
    def full(self) -> bool:
        return self._in_flight >= self.limit

    def submit(self, fn: Callable[..., T], *args: Any) -> None:
        future = self._pool.submit(fn, *args)
        self._in_flight += 1
        future.add_done_callback(self._finished.put)

    def next_done(self) -> T:
        """Wait for a task to finish and return its result (or raise its exception)."""
        future = self._finished.get()
        self._in_flight -= 1
        return future.result()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._in_flight = 0
