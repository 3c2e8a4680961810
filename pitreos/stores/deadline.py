"""An overall deadline for every request to an object store.

The SDKs' timeouts bound each socket read, not a request: a server that trickles a
body a byte every 20 seconds kept a restore running past 1,500 s. Each request here
runs on a thread of its own and is abandoned when the deadline passes; the caller gets a
:class:`~pitreos.errors.TransientStoreError` saying what stalled and for how long, and
the retry layer above tries again. An abandoned request ends when its socket does; it
holds no slot of the concurrency limit (this wrapper sits below it).
"""

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from queue import Empty, SimpleQueue
from typing import TypeVar

from ..errors import TransientStoreError
from .base import ObjectInfo, Store, StoreWrapper

T = TypeVar("T")
DEFAULT_REQUEST_TIMEOUT = 120.0  # a 256 MiB chunk at 2.5 MiB/s; 1 MiB chunks need far less
_END = object()


class DeadlineStore(StoreWrapper):
    def __init__(self, inner: Store, seconds: float = DEFAULT_REQUEST_TIMEOUT) -> None:
        super().__init__(inner)
        self.seconds = seconds

    def _bounded(self, action: str, key: str, fn: Callable[[], T]) -> T:
        box: Future[T] = Future()

        def call() -> None:
            try:
                box.set_result(fn())
            except BaseException as exc:  # handed to the caller, whatever it is
                box.set_exception(exc)

        threading.Thread(target=call, daemon=True, name="pitreos-request").start()
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
