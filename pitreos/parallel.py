"""Bounded parallel maps on a pool of threads or worker processes: the one place the
engine hands work out.

The engine's work (positional reads and writes, hashing, compression, store requests)
runs in C code that releases the GIL, but the Python around each call does not: on 2
cores some thread held the GIL for 23-35% of a backup's or restore's wall time
(tools/bench.py --gil on the thread pipeline of b507b99), which caps threads at 3-4x
whatever the cores (issue 15). Work on a local store therefore goes
to worker processes, each with a GIL of its own, in tasks of several chunks
(:mod:`pitreos.chunktasks`); an object store's work waits on the network, and threads
(sharing one client and its connections) suit it. :func:`imap_unordered` keeps a bounded
window of tasks in flight, so memory stays proportional to the window whatever the size
of the files.
"""

import itertools
import os
import sys
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from queue import SimpleQueue
from typing import TYPE_CHECKING, Generic, TypeVar

from .cores import usable_cores

if TYPE_CHECKING:
    from multiprocessing.context import ForkServerContext

    from .processpool import ProcessPool

A = TypeVar("A")
R = TypeVar("R")


class Feed(Generic[A]):
    """Items that a consumer of :func:`imap_unordered` adds while it iterates.

    Items pushed come first (a backup's store tasks overtake its reads: they finish
    chunks already read and hashed), then those of ``then``. Running dry is not the end: the
    map polls again after every result, and ends only when the feed is dry with
    nothing in flight.
    """

    def __init__(self, then: Iterable[A] = ()) -> None:
        self._pushed: deque[A] = deque()
        self._then = iter(then)

    def push(self, item: A) -> None:
        self._pushed.append(item)

    def __iter__(self) -> "Feed[A]":
        return self

    def __next__(self) -> A:
        if self._pushed:
            return self._pushed.popleft()
        return next(self._then)


class Metered(Generic[A]):
    """Items handed out at most ``cap`` at a time: :meth:`done` returns one. As the
    ``then`` of a :class:`Feed`, it keeps CPU-bound tasks (a backup's reads) to what the
    cores can run while the rest of the window waits on the network; running dry for
    now is not the end (the map polls again after each result)."""

    def __init__(self, items: Iterable[A], cap: int) -> None:
        self._items = iter(items)
        self._cap = max(1, cap)
        self._out = 0

    def __iter__(self) -> "Metered[A]":
        return self

    def __next__(self) -> A:
        if self._out >= self._cap:
            raise StopIteration  # for now
        item = next(self._items)
        self._out += 1
        return item

    def done(self) -> None:
        self._out -= 1


def imap_unordered(fn: Callable[[A], R], items: Iterable[A], *, workers: int,
                   window: int | None = None, processes: bool = False,
                   on_wait: Callable[[], None] | None = None) -> Iterator[R]:
    """``fn`` over ``items`` on a pool of its own: :meth:`WorkerPool.imap_unordered`."""
    with WorkerPool(workers) as pool:
        yield from pool.imap_unordered(fn, items, window=window, processes=processes,
                                       on_wait=on_wait)


class WorkerPool:
    """``workers`` threads, or worker processes, kept for several maps: a restore's check
    of the local chunks, then its writes. A second pool of processes cost ~25 ms on 2
    cores (PROCESS_MIN_BYTES), and each of its workers is one more process to start on
    more cores. Each kind of pool starts on its first map; :meth:`close` (or the end of
    a ``with``) ends them."""

    def __init__(self, workers: int) -> None:
        self.workers = max(1, workers)
        self._threads: Executor | None = None
        self._processes: ProcessPool | None = None

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._threads is not None:
            self._end_threads()
        if self._processes is not None:
            processes, self._processes = self._processes, None
            processes.close()

    def _end_threads(self) -> None:
        assert self._threads is not None
        threads, self._threads = self._threads, None
        threads.shutdown(wait=True, cancel_futures=True)

    def _process_pool(self) -> "ProcessPool":
        if self._processes is None:
            from .processpool import ProcessPool

            # CPU-bound work: no more processes than cores, whatever the threads asked for
            self._processes = ProcessPool(min(self.workers, usable_cores()),
                                          _process_context())
        return self._processes

    def imap_unordered(self, fn: Callable[[A], R], items: Iterable[A], *,
                       window: int | None = None, processes: bool = False,
                       on_wait: Callable[[], None] | None = None
                       ) -> Generator[R, None, None]:
        """``fn`` over ``items`` on the threads (or the worker processes of
        :mod:`pitreos.processpool`, when ``processes``: ``fn`` and the items are then
        pickled, and must be plain functions and data), results as they finish.

        At most ``window`` tasks (default twice the workers) are in flight; items are
        taken from ``items`` only as room frees up, so a lazy iterable is consumed
        lazily, on the calling thread. ``items`` is polled again after each result, so a
        :class:`Feed` that the caller extends while iterating is drained too.

        On threads, finished tasks land in a queue (a done-callback puts them there), so
        taking one is a single queue read: ``concurrent.futures.wait`` builds waiters and
        locks on every call, which cost the main thread more than the work it hands out
        at a thousand chunks a second.

        When the caller stops early or a task raises (Ctrl-C included), no task of this
        map is left to start and the running ones are waited for, so no thread or
        process writes after the caller has given up.

        ``on_wait`` (threads only) is called when no task has finished and the caller
        would wait for one: a caller holding a lock lets go of it before the wait.
        """
        limit = max(self.workers, window or self.workers * 2)
        if processes and _main_importable():
            assert on_wait is None, "on_wait is for threads"
            yield from self._process_pool().map_unordered(fn, items, limit)
            return
        if self._threads is None:
            self._threads = ThreadPoolExecutor(max_workers=self.workers,
                                               thread_name_prefix="pitreos")
        pool = self._threads
        source = iter(items)
        finished: SimpleQueue[Future[R]] = SimpleQueue()
        in_flight = 0
        try:
            while True:
                for item in itertools.islice(source, limit - in_flight):  # polled again
                    pool.submit(fn, item).add_done_callback(finished.put)
                    in_flight += 1
                if not in_flight:
                    return
                if on_wait is not None and finished.empty():
                    on_wait()
                future = finished.get()
                in_flight -= 1
                yield future.result()
        finally:
            if in_flight:
                # stopped early: the threads end as a pool of their own did (pending
                # tasks cancelled, running ones waited for), and a later map starts more
                self._end_threads()


def _process_context() -> "ForkServerContext":
    """The context that worker processes start from: forkserver, not fork, since the
    coordinator has threads (progress, gc guard) and a fork copies their locks in
    whatever state they are; the server preloads the task module once, so each worker
    starts in milliseconds. zstandard too: the blob codec imports it on first use (so
    that `pitreos list` starts sooner), and every worker would import it again (~6 ms,
    with the `platform` module it brings)."""
    import multiprocessing  # ~9 ms: only for the work that goes to processes

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["pitreos.chunktasks", "pitreos.processpool",
                                    "zstandard"])
    return context


# From this many cores, `backup` and `restore` on a local store start the worker
# processes' server as the command starts (start_process_server), so that its start (a
# fresh interpreter importing the task module) overlaps the command's imports, catalog
# and planning. On 16 cores, through the command line, that took 0.12-0.16 s off the
# in-place restore (0.47 -> 0.35 s) and 0.1-0.2 s off the incremental backup and the
# full restore. On 2 cores it saved only the in-place restore ~0.08 s, and a server that
# a small job never uses cost ~0.25 s of CPU a command that 2 cores cannot spare (ten
# tiny backups: 3.1 -> 5.3-6.0 CPU-seconds). docs/performance.md, "Tenth pass", has the
# runs.
EARLY_SERVER_MIN_CORES = 4


def starts_server_early(*, cores: int, workers: int | None, local_store: bool) -> bool:
    """Whether a backup or restore should start the worker processes' server before it
    knows whether it will need it: on a local store (an object store's work stays on
    threads), unless held to one worker, with cores to spare for it."""
    return local_store and workers != 1 and cores >= EARLY_SERVER_MIN_CORES


def backup_in_processes(*, cores: int, to_read: int, new: int, threshold: int) -> bool:
    """Whether a backup's chunks are read in worker processes (on a local store, with
    more than one worker): when its work reaches ``threshold`` bytes. ``to_read``: the
    bytes of every chunk to read; ``new``: those of chunks with no previous digest,
    which are hashed whole and compressed (the rest, a file changed in place, is a
    blake3 each, compared with the previous backup's).

    From :data:`EARLY_SERVER_MIN_CORES` cores every byte counts. Below, only the new
    ones: there the server starts inside the job (the command does not start it
    early), and two threads already keep two cores busy. On 2 cores the bench's
    incremental backup (a 1 GiB state file rescanned, 54 MB stored) took 0.70-0.75 s
    on threads and 0.97-1.02 s in processes (three pairs, alternating; its limit: 0.65
    s). On threads it held the GIL 18-30% of the time, which caps threads at 3-5x: no
    bound on 2 or 3 cores, a bound on 16. A full backup is all new, and stays in
    processes (target 1 of issue 15 holds it to a 5% GIL share on 2 cores)."""
    counted = to_read if cores >= EARLY_SERVER_MIN_CORES else new
    return counted >= threshold


def start_process_server() -> None:
    """Start the worker processes' server now, in the background (the first process map
    starts it otherwise, and waits for it). Idempotent; it ends with this process."""
    from multiprocessing import forkserver

    _process_context()  # its preload: the server imports the task module as it starts
    forkserver.ensure_running()


def shared_or_own(pool: WorkerPool | None, workers: int) -> AbstractContextManager[WorkerPool]:
    """``pool``, left open at the end; or, when None, a pool of ``workers`` of its own,
    closed at the end."""
    return nullcontext(pool) if pool is not None else WorkerPool(workers)


def _main_importable() -> bool:
    """Whether a worker process can import the main module, as multiprocessing's
    forkserver makes it do: not when it was read from stdin or typed in a shell (then
    the work stays on threads)."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    return path is None or os.path.isfile(path)


def imap_ordered(fn: Callable[[A], R], items: Iterable[A], *, workers: int,
                 weigh: Callable[[A], int] | None = None, budget: int = 0,
                 on_wait: Callable[[], None] | None = None) -> Iterator[R]:
    """``fn`` over ``items`` on ``workers`` threads, results in the order of ``items``
    (for streams written front to back: ``dump``, ``export``, ``catalog sync``). At most
    twice the workers are in flight or finished and waiting for an earlier one: a slow
    task holds the ones after it back, never memory.

    With ``weigh`` (what an item's result will hold, known before it runs: a size from
    a listing), the items in flight, waiting, or just yielded and not yet let go of by
    the caller also weigh at most ``budget`` together, but for one alone that weighs
    more: a window of 256 manifests of 100 MB each is 25 GB.

    ``on_wait``: see :meth:`WorkerPool.imap_unordered`."""

    def numbered(pair: tuple[int, A]) -> tuple[int, R]:
        return pair[0], fn(pair[1])

    source = iter(items)
    window = max(1, workers) * 2
    feed: Feed[tuple[int, A]] = Feed()
    weights: dict[int, int] = {}  # admitted and not yet let go of, by index
    upcoming: list[A] = []  # read from ``items``, waiting for room
    admitted = held = 0

    def admit() -> None:
        nonlocal admitted, held
        while len(weights) < window:
            upcoming.extend(itertools.islice(source, 1 - len(upcoming)))
            if not upcoming:
                return
            weight = weigh(upcoming[0]) if weigh is not None else 0
            if weights and held + weight > budget:
                return
            feed.push((admitted, upcoming.pop()))
            weights[admitted] = weight
            held += weight
            admitted += 1

    admit()
    waiting: dict[int, R] = {}
    position = 0
    for index, result in imap_unordered(numbered, feed, workers=workers, on_wait=on_wait):
        waiting[index] = result
        while position in waiting:
            yield waiting.pop(position)
            held -= weights.pop(position)  # the caller is done with it
            position += 1
            admit()


def call(task: Callable[[], R]) -> R:
    """Run a task: :func:`imap_unordered`'s ``fn`` for a stream of mixed callables."""
    return task()

