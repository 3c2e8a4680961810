"""Worker processes fed and read by the calling thread alone.

``concurrent.futures.ProcessPoolExecutor`` keeps two threads in the coordinator (one
moves tasks to a queue, one pickles them into a pipe; the first also reads results and
runs the futures' callbacks): every task and every result wakes both, and each wake-up
takes the GIL. Here the thread that maps sends each task down a worker's pipe itself and
waits on the pipes and the workers' sentinels at once
(``multiprocessing.connection.wait``): no other thread, no future. In-place restores of
the bench's small set on 2 cores (py-spy ``--gil``, issue 15, target 1; two batches of
12, alternating): the coordinator held the GIL 57 and 60 ms a restore with the
executor, 35 and 45 ms with this pool.

Each worker has at most ``_DEPTH`` tasks queued in its pipe, so that it finds the next
one waiting when it finishes; the task goes to the worker with the fewest.
"""

import contextlib
import itertools
import operator
import os
import select
import signal
import threading
import traceback
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.context import ForkServerContext
from multiprocessing.process import BaseProcess
from typing import Any, NoReturn, TypeVar

from .errors import PitreosError

A = TypeVar("A")
R = TypeVar("R")
_WORKER_NICENESS = 5
_DEPTH = 2  # tasks queued per worker: one running, one waiting in its pipe
_DIED = ("a worker process died (killed, or out of memory; or a program using pitreos "
         "as a library runs its work outside `if __name__ == '__main__':`); nothing it "
         "did was recorded")


@dataclass(slots=True)
class _Worker:
    process: BaseProcess
    conn: Connection
    queued: int = 0  # tasks sent whose results have not come back


class ProcessPool:
    """``workers`` processes started from ``context`` (forkserver: see
    :mod:`pitreos.parallel`), kept until :meth:`close`."""

    def __init__(self, workers: int, context: ForkServerContext) -> None:
        self._workers: list[_Worker] = []
        self._broken = False
        self._mapping = False
        try:
            for _ in range(max(1, workers)):
                mine, theirs = context.Pipe(duplex=True)
                process = context.Process(target=_serve, args=(theirs, os.getpid()),
                                          daemon=True, name="pitreos-worker")
                process.start()
                theirs.close()
                self._workers.append(_Worker(process, mine))
        except BaseException:
            self.close()
            raise

    def map_unordered(self, fn: Callable[[A], R], items: Iterable[A], limit: int
                      ) -> Generator[R, None, None]:
        """``fn`` over ``items``, at most ``limit`` tasks in flight (and ``_DEPTH`` a
        worker), results as they come; ``items`` is polled again after each result. A
        map stopped early (or failed) waits for the results of the tasks it sent: no
        worker writes after the caller gave up."""
        if self._broken:
            raise PitreosError(_DIED)
        # one map at a time: results carry no task id, a worker's come back in order
        assert not self._mapping, "a second map on a ProcessPool while one runs"
        self._mapping = True
        limit = min(limit, _DEPTH * len(self._workers))
        source = iter(items)
        in_flight = 0
        try:
            while True:
                for item in itertools.islice(source, limit - in_flight):  # polled again
                    worker = min(self._workers, key=operator.attrgetter("queued"))
                    try:
                        worker.conn.send((fn, item))
                    except (BrokenPipeError, ConnectionResetError):
                        self._break()  # it died idle
                    worker.queued += 1
                    in_flight += 1
                if not in_flight:
                    return
                for worker in self._ready():
                    ok, value = self._receive(worker)
                    in_flight -= 1
                    if not ok:
                        raise value
                    yield value
        finally:
            if in_flight and not self._broken:
                self._drain()
            self._mapping = False

    def _ready(self) -> list[_Worker]:
        """The busy workers with a result to read; a worker that died breaks the pool."""
        busy = [w for w in self._workers if w.queued]
        by_handle: dict[Any, _Worker] = {w.conn: w for w in busy}
        by_handle.update({w.process.sentinel: w for w in busy})
        ready = wait(list(by_handle))
        results = [by_handle[h] for h in ready if isinstance(h, Connection)]
        if not results:  # only sentinels: a worker ended with its tasks unanswered
            self._break()
        return results

    def _receive(self, worker: _Worker) -> tuple[bool, Any]:
        try:
            answer: tuple[bool, Any] = worker.conn.recv()
        except (EOFError, OSError):
            self._break()
        worker.queued -= 1
        return answer

    def _break(self) -> NoReturn:
        self._broken = True
        raise PitreosError(_DIED)

    def _drain(self) -> None:
        """Read (and drop) the results still owed: the tasks sent have all finished."""
        with contextlib.suppress(PitreosError):  # broken: close() ends what is left
            while any(w.queued for w in self._workers):
                for worker in self._ready():
                    self._receive(worker)

    def close(self) -> None:
        """End the workers: a word to each idle one, SIGKILL to any left after it (a
        broken pool's)."""
        for worker in self._workers:
            if not self._broken:
                with contextlib.suppress(OSError):  # gone already: joined below
                    worker.conn.send(None)
        for worker in self._workers:
            if self._broken:
                worker.process.kill()
            worker.process.join()
            worker.conn.close()
        self._workers = []


def _serve(conn: Connection, coordinator: int) -> None:
    """A worker: tasks from the pipe until told to end (None) or the pipe closes."""
    _worker_start(coordinator)
    while True:
        try:
            task = conn.recv()
        except EOFError:
            return
        if task is None:
            return
        fn, item = task
        try:
            answer: tuple[bool, Any] = (True, fn(item))
        except Exception as exc:  # raised again in the coordinator, with where it arose
            # (a bug's traceback, shown with PITREOS_TRACEBACK=1, would end at the pipe)
            exc.add_note("in a worker process:\n"
                         + "".join(traceback.format_exception(exc)).rstrip())
            answer = (False, exc)
        try:
            conn.send(answer)
        except Exception as exc:  # an error (or a result) that does not pickle: in words
            what = answer[1] if not answer[0] else exc
            conn.send((False, PitreosError(f"{type(what).__name__} in a worker process: "
                                           f"{what}")))


def _worker_start(coordinator: int) -> None:
    """A worker process leaves Ctrl-C and SIGTERM (which a terminal or systemd send to
    the whole process group) to the coordinator, which stops handing out work and waits
    for the tasks running; and it ends when the coordinator is gone, however that went
    (a worker waits for work forever otherwise, keeping the forkserver alive and the
    coordinator's stdout and stderr open: seen after a kill -9 of a backup)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        watched = os.pidfd_open(coordinator)  # readable once the coordinator has ended
    except ProcessLookupError:
        os._exit(1)
    threading.Thread(target=_end_with, args=(watched,), daemon=True).start()
    # the coordinator is the one serial part: when the cores are all busy it must not
    # wait for a time slice while it holds work back from every worker
    os.nice(_WORKER_NICENESS)


def _end_with(pidfd: int) -> None:
    select.select([pidfd], [], [])
    os._exit(1)
