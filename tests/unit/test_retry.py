"""Retries: transient errors retried with growing, capped backoff (an injected sleep and
clock, so the test takes no time), other errors at once, for a bounded total time."""

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


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def retrying(inner: Flaky, clock: FakeClock, sleeps: list[float],
             retry_for: float = 10.0) -> RetryingStore:
    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock.sleep(seconds)

    return RetryingStore(inner, retry_for=retry_for, base_delay=0.5, max_delay=3.0,
                         sleep=sleep, clock=lambda: clock.now,
                         jitter=lambda low, high: high)


def test_transient_errors_are_retried_with_capped_backoff() -> None:
    inner = Flaky(4, TransientStoreError("503"))
    inner.put("k", b"v")
    sleeps: list[float] = []
    assert retrying(inner, FakeClock(), sleeps).get("k") == b"v"
    assert inner.calls == 5
    assert sleeps == [1.0, 2.0, 3.0, 3.0]  # 0.5 * 2**n, capped at 3


def test_retries_give_up_when_the_time_is_spent() -> None:
    inner = Flaky(1000, TransientStoreError("cannot read k: 503"))
    clock = FakeClock()
    sleeps: list[float] = []
    with pytest.raises(StoreError, match=r"503 \(gave up after 6 attempts in 10 s; "
                       r"--retry-for sets how long\)") as caught:
        retrying(inner, clock, sleeps, retry_for=10.0).get("k")
    assert not isinstance(caught.value, TransientStoreError)
    assert clock.now == 10.0 and sleeps == [1.0, 2.0, 3.0, 3.0, 1.0]  # the last one cut


def test_other_errors_are_not_retried() -> None:
    inner = Flaky(0, StoreError("denied"))
    sleeps: list[float] = []
    with pytest.raises(BlobNotFound):
        retrying(inner, FakeClock(), sleeps).get("absent")
    assert inner.calls == 1 and sleeps == []
