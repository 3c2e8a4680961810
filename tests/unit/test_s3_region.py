"""A bucket in another region hands an S3 store's requests to boto3's client (which
follows the redirect), with one warning a store, however many requests meet it at once."""

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pitreos.stores.s3objects import WrongRegion

THREADS = 8


class _Elsewhere:
    """A bucket that answers every signed request, all of them in flight at once, that it
    lives in another region."""

    def __init__(self) -> None:
        self.all_in_flight = threading.Barrier(THREADS, timeout=10)

    def get(self, name: str) -> bytes:
        self.all_in_flight.wait()
        raise WrongRegion("eu-west-1")

    def put(self, name: str, data: bytes, *, overwrite: bool) -> None:
        raise AssertionError("not used")

    def head(self, name: str) -> None:
        raise AssertionError("not used")

    def delete(self, name: str) -> None:
        raise AssertionError("not used")


class _Redirected(_Elsewhere):
    """boto3's client, once it has followed the redirect."""

    def get(self, name: str) -> bytes:
        return name.encode()


def test_a_region_redirect_met_by_many_requests_at_once_is_warned_once(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    from pitreos.stores.s3 import S3Store

    for name, value in {"AWS_ACCESS_KEY_ID": "key", "AWS_SECRET_ACCESS_KEY": "secret",
                        "AWS_CONFIG_FILE": str(tmp_path / "none"),
                        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}.items():
        monkeypatch.setenv(name, value)
    # nothing is sent to this address: the signed requests' address is read from a
    # request boto3 prepares and never sends, and the requests below are the doubles'
    store = S3Store("bucket", "", "s3://bucket", endpoint="http://127.0.0.1:9",
                    region="us-east-1", path_style=True)
    store.objects, store.client_objects = _Elsewhere(), _Redirected()
    with caplog.at_level(logging.WARNING, logger="pitreos"), \
            ThreadPoolExecutor(THREADS) as threads:
        got = list(threads.map(lambda i: store._objects(lambda o: o.get(f"blob{i}")),
                               range(THREADS)))
    assert got == [f"blob{i}".encode() for i in range(THREADS)]
    warned = [r for r in caplog.records if "s3.other_region" in str(r.msg)]
    assert len(warned) == 1
