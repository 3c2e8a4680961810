"""An overall deadline for every request to an object store.

The SDKs' timeouts bound each socket read, not a request: a server that trickles a
body a byte every 20 seconds kept a restore running past 1,500 s. Each request here
runs on a thread of its own and is abandoned when the deadline passes; the caller gets a
:class:`~pitreos.errors.TransientStoreError` saying what stalled and for how long, and
the retry layer above tries again. An abandoned request ends when its socket does; it
holds no slot of the concurrency limit (this wrapper sits below it).

The threads are kept and reused (:class:`_Runners`): a thread started per request cost
86 us of CPU each, with the GIL held to start it (py-spy ``--gil`` on a backup through
the 20 ms proxy: 11.5% of the samples holding the GIL were ``Thread.start``).
"""

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from queue import Empty, SimpleQueue
from typing import TypeVar

from ..defaults import DEFAULT_REQUEST_TIMEOUT
from ..errors import TransientStoreError
from .base import ObjectInfo, Store, StoreWrapper

T = TypeVar("T")
_END = object()
_IDLE_SECONDS = 60.0


class _Runners:
    """Daemon threads that run calls, each started when a call finds none idle and kept
    for the next: a call abandoned at its deadline keeps its thread until it ends, and
    the next call gets another. Daemons: a stalled request never holds up the exit. A
    thread idle for ``_IDLE_SECONDS`` ends, so a program that opens stores again and
    again keeps no threads for those it is done with."""

    def __init__(self) -> None:
        self._calls: SimpleQueue[Callable[[], None]] = SimpleQueue()
        self._idle = 0
        self._lock = threading.Lock()

    def run(self, call: Callable[[], None]) -> None:
        with self._lock:
            claimed = self._idle > 0  # an idle thread will take it
            if claimed:
                self._idle -= 1
        self._calls.put(call)
        if not claimed:
            threading.Thread(target=self._serve, daemon=True, name="pitreos-request").start()

    def _serve(self) -> None:
        while True:
            try:
                call = self._calls.get(timeout=_IDLE_SECONDS)
            except Empty:
                with self._lock:
                    # idle and unclaimed: one fewer thread still serves every claim;
                    # none unclaimed: a call is on its way to one of us
                    if self._idle > 0:
                        self._idle -= 1
                        return
                continue
            call()  # a call never raises: it hands its outcome over
            with self._lock:
                self._idle += 1


class DeadlineStore(StoreWrapper):
    def __init__(self, inner: Store, seconds: float = DEFAULT_REQUEST_TIMEOUT) -> None:
        super().__init__(inner)
        self.seconds = seconds
        self._runners = _Runners()

    def _bounded(self, action: str, key: str, fn: Callable[[], T]) -> T:
        box: Future[T] = Future()

        def call() -> None:
            try:
                box.set_result(fn())
            except BaseException as exc:  # handed to the caller, whatever it is
                box.set_exception(exc)

        self._runners.run(call)
        try:
            return box.result(timeout=self.seconds)
        except FutureTimeout:
            raise self._stalled(action, key) from None

    def _stalled(self, action: str, key: str) -> TransientStoreError:
        where = f"{action} {key} in store {self.url}" if key else f"{action} store {self.url}"
        return TransientStoreError(f"cannot {where}: no answer within {self.seconds:g} s "
                                   "(a stalled transfer)")

    def check(self) -> None:
        self._bounded("open", "", self.inner.check)

    def get(self, key: str) -> bytes:
        return self._bounded("read", key, lambda: self.inner.get(key))

    def put(self, key: str, data: bytes, *, overwrite: bool = False) -> bool:
        return self._bounded("write", key,
                             lambda: self.inner.put(key, data, overwrite=overwrite))

    def exists(self, key: str) -> bool:
        return self._bounded("check", key, lambda: self.inner.exists(key))

    def delete(self, key: str) -> None:
        self._bounded("delete", key, lambda: self.inner.delete(key))

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """A listing is many requests (pages): the deadline bounds the wait for each
        next object, so a long listing that keeps moving is never cut."""
        items: SimpleQueue[object] = SimpleQueue()

        def produce() -> None:
            try:
                for info in self.inner.list(prefix):
                    items.put(info)
            except BaseException as exc:
                items.put(exc)
            items.put(_END)

        threading.Thread(target=produce, daemon=True, name="pitreos-listing").start()
        while True:
            try:
                item = items.get(timeout=self.seconds)
            except Empty:
                raise self._stalled("list", prefix) from None
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, ObjectInfo)
            yield item
