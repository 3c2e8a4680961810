"""Retries: transient errors retried with growing, capped backoff (an injected sleep, so
the test takes no time), other errors at once, a bounded number of attempts."""

import pytest

from pitreos.errors import BlobNotFound, StoreError, TransientStoreError
from pitreos.stores.retry import RetryingStore

from .memstore import MemoryStore


class Flaky(MemoryStore):
    def __init__(self, failures: int, error: Exception) -> None:
        super().__init__()
        self.failures = failures
        self.error = error
        self.calls = 0

    def get(self, key: str) -> bytes:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return super().get(key)


def retrying(inner: Flaky, sleeps: list[float]) -> RetryingStore:
    return RetryingStore(inner, attempts=4, base_delay=0.5, max_delay=3.0,
                         sleep=sleeps.append, jitter=lambda low, high: high)


def test_transient_errors_are_retried_with_capped_backoff() -> None:
    inner = Flaky(3, TransientStoreError("503"))
    inner.put("k", b"v")
    sleeps: list[float] = []
    assert retrying(inner, sleeps).get("k") == b"v"
    assert inner.calls == 4
    assert sleeps == [1.0, 2.0, 3.0]  # 0.5 * 2**n, capped at 3


def test_retries_give_up_after_the_last_attempt() -> None:
    inner = Flaky(10, TransientStoreError("cannot read k: 503"))
    sleeps: list[float] = []
    with pytest.raises(StoreError, match=r"503 \(gave up after 4 attempts\)") as caught:
        retrying(inner, sleeps).get("k")
    assert not isinstance(caught.value, TransientStoreError)
    assert inner.calls == 4 and len(sleeps) == 3


def test_other_errors_are_not_retried() -> None:
    inner = Flaky(0, StoreError("denied"))
    sleeps: list[float] = []
    with pytest.raises(BlobNotFound):
        retrying(inner, sleeps).get("absent")
    assert inner.calls == 1 and sleeps == []
