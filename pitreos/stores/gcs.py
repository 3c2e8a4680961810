"""Google Cloud Storage (``gs://bucket/prefix``) with google-cloud-storage.

Credentials come from Application Default Credentials (``GOOGLE_APPLICATION_CREDENTIALS``,
gcloud's config, the instance's identity). Without any, the client is anonymous, which
is enough to read a public bucket. ``STORAGE_EMULATOR_HOST`` points it at an emulator.
The client's own retries are off: :class:`~pitreos.stores.retry.RetryingStore` retries.
"""

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import google.api_core.exceptions as gexc
import google.auth.exceptions
import requests
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage
from google.cloud.storage.exceptions import DataCorruption

from ..errors import (
    AccessDenied,
    BlobNotFound,
    StoreError,
    StoreNotFound,
    TransientStoreError,
)
from ..log import get_logger
from .base import ObjectInfo, ObjectStoreBase, StoreProperties

log = get_logger(__name__)
TIMEOUT = (10, 120)  # connect, read (seconds)
LIST_PAGE_SIZE = 1000
_TRANSIENT = (
    gexc.TooManyRequests, gexc.InternalServerError, gexc.BadGateway,
    gexc.ServiceUnavailable, gexc.GatewayTimeout, requests.ConnectionError,
    requests.Timeout, requests.exceptions.ChunkedEncodingError,
    google.auth.exceptions.TransportError, ConnectionError,
    DataCorruption,  # a body cut short in transit, caught by the crc32c check: fetch again
)


class GCSStore(ObjectStoreBase):
    def __init__(self, bucket: str, prefix: str, url: str, pool_size: int = 32) -> None:
        super().__init__(url, prefix)
        self.properties = StoreProperties(remote=True, connections=pool_size)
        self.client = _client(pool_size)
        self.bucket = self.client.bucket(bucket)

    def translate(self, action: str, key: str, exc: Exception) -> StoreError:
        if isinstance(exc, gexc.NotFound) and not key:
            return StoreNotFound(f"store {self.url} does not exist (no such bucket)")
        if isinstance(exc, _TRANSIENT):
            return self.error(action, key, _short(exc), TransientStoreError)
        if isinstance(exc, gexc.Unauthorized):
            return self.error(action, key, "access denied: the credentials were refused",
                              AccessDenied)
        if isinstance(exc, gexc.Forbidden):
            return self.error(action, key, "access denied: the credentials lack a "
                              "permission", AccessDenied)
        return self.error(action, key, _short(exc))

    def check(self) -> None:
        with self.failures("open", ""):
            list(self.client.list_blobs(self.bucket, prefix=self.prefix, max_results=1,
                                        timeout=TIMEOUT, retry=None))

    def deleted_kept_seconds(self) -> int | None:
        with self.failures("read the settings of", ""):
            self.bucket.reload(timeout=TIMEOUT, retry=None)
        seconds = self.bucket.soft_delete_policy.retention_duration_seconds
        return int(seconds) if seconds else None

    def get(self, key: str) -> bytes:
        with self.failures("read", key):
            try:
                data: bytes = self.bucket.blob(self.prefix + key).download_as_bytes(
                    timeout=TIMEOUT, retry=None, checksum="crc32c")
            except gexc.NotFound as exc:
                raise BlobNotFound(key, self.url) from exc
        return data

    def put(self, key: str, data: bytes, *, overwrite: bool = False) -> bool:
        kwargs: dict[str, Any] = {} if overwrite else {"if_generation_match": 0}
        with self.failures("write", key):
            try:
                self.bucket.blob(self.prefix + key).upload_from_string(
                    data, timeout=TIMEOUT, retry=None, checksum="crc32c", **kwargs)
            except gexc.PreconditionFailed:
                return False
        return True

    def exists(self, key: str) -> bool:
        with self.failures("check", key):
            return bool(self.bucket.blob(self.prefix + key).exists(timeout=TIMEOUT, retry=None))

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        # an explicit page size: without one the client asks for none, and a server free
        # to answer everything at once (fake-gcs-server does) costs ~5 KB of Python
        # objects per object listed (measured: 100,000 blobs -> ~600 MiB)
        with self.failures("list", ""):
            for blob in self.client.list_blobs(self.bucket, prefix=self.prefix + prefix,
                                               page_size=LIST_PAGE_SIZE, timeout=TIMEOUT,
                                               retry=None):
                yield ObjectInfo(blob.name[len(self.prefix):], int(blob.size), blob.updated)

    def delete(self, key: str) -> None:
        with self.failures("delete", key), contextlib.suppress(gexc.NotFound):
            self.bucket.blob(self.prefix + key).delete(timeout=TIMEOUT, retry=None)


def _client(pool_size: int) -> storage.Client:
    if os.environ.get("STORAGE_EMULATOR_HOST"):
        anonymous = AnonymousCredentials()  # type: ignore[no-untyped-call]
        client = storage.Client(project="pitreos", credentials=anonymous)
    else:
        try:
            client = storage.Client()
        except google.auth.exceptions.DefaultCredentialsError:
            log.info("gcs.anonymous", reason="no application default credentials")
            client = storage.Client.create_anonymous_client()
    # one connection per worker, instead of requests' default pool of 10
    adapter = requests.adapters.HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size)
    client._http.mount("https://", adapter)
    client._http.mount("http://", adapter)
    return client


def _short(exc: Exception) -> str:
    """The exception's first sentence, whole words only: the SDK's messages run long."""
    text = str(exc).splitlines()[0].strip() if str(exc).strip() else type(exc).__name__
    if len(text) <= 200:
        return text
    return text[:200].rsplit(" ", 1)[0] + " ..."
