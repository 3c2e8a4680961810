"""Google Cloud Storage (``gs://bucket/prefix``) with google-cloud-storage.

Credentials come from Application Default Credentials (``GOOGLE_APPLICATION_CREDENTIALS``,
gcloud's config, the instance's identity). Without any, the client is anonymous, which
is enough to read a public bucket. ``STORAGE_EMULATOR_HOST`` points it at an emulator.
Objects are read, written, checked and deleted over the JSON API directly
(:mod:`~pitreos.stores.gcsobjects`: a third of the SDK's CPU per request); listing and
the bucket's settings go through the SDK. Neither retries:
:class:`~pitreos.stores.retry.RetryingStore` does.
"""

import os
from collections.abc import Iterator

import google.api_core.exceptions as gexc
import google.auth
import google.auth.exceptions
import requests
import urllib3.exceptions
from google.auth.credentials import AnonymousCredentials, Credentials
from google.cloud import storage

from ..errors import (
    AccessDenied,
    BlobNotFound,
    StoreError,
    StoreNotFound,
    TransientStoreError,
)
from ..log import get_logger
from .base import DeletedKept, ObjectInfo, ObjectStoreBase, StoreProperties
from .gcsobjects import BucketObjects, HTTPStatusError
from .httppool import CONNECT_SECONDS, READ_SECONDS, ChecksumMismatch

log = get_logger(__name__)
TIMEOUT = (CONNECT_SECONDS, READ_SECONDS)
LIST_PAGE_SIZE = 1000
_TRANSIENT = (
    requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
    google.auth.exceptions.TransportError, ConnectionError, urllib3.exceptions.HTTPError,
    ChecksumMismatch,  # a body cut short in transit, caught by the crc32c check: fetch again
)
_TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}
_NO_CREDENTIALS = ("access denied: no Google credentials were found, and the bucket refuses "
                   "anonymous access (set GOOGLE_APPLICATION_CREDENTIALS, or run `gcloud auth "
                   "application-default login`)")


class GCSStore(ObjectStoreBase):
    def __init__(self, bucket: str, prefix: str, url: str, pool_size: int = 32) -> None:
        super().__init__(url, prefix)
        self.properties = StoreProperties(remote=True, connections=pool_size)
        credentials, project = _credentials()
        self.client = _client(credentials, project, pool_size)
        self.bucket = self.client.bucket(bucket)
        self.objects = BucketObjects(self.client.api_endpoint, bucket, credentials, pool_size)

    def translate(self, action: str, key: str, exc: Exception) -> StoreError:
        """The SDK's errors (listing, settings) and the object requests' alike, by the
        HTTP status they carry."""
        if isinstance(exc, google.auth.exceptions.InvalidOperation):
            # a 401 to an anonymous client, which then tried to refresh its credentials
            return self.error(action, key, _NO_CREDENTIALS, AccessDenied)
        status = exc.status if isinstance(exc, HTTPStatusError) else \
            exc.code if isinstance(exc, gexc.GoogleAPICallError) else None
        if status == 404:
            # an object's absence is an answer its request expects (get, exists,
            # delete), never an error: a 404 that is one means the bucket is missing
            return StoreNotFound(f"store {self.url} does not exist (no such bucket)")
        if status in _TRANSIENT_STATUS or isinstance(exc, _TRANSIENT):
            return self.error(action, key, _short(exc), TransientStoreError)
        if status == 401:
            return self.error(action, key, "access denied: the credentials were refused",
                              AccessDenied)
        if status == 403:
            return self.error(action, key, "access denied: the credentials lack a "
                              "permission", AccessDenied)
        return self.error(action, key, _short(exc))

    def check(self) -> None:
        with self.failures("open", ""):
            list(self.client.list_blobs(self.bucket, prefix=self.prefix, max_results=1,
                                        timeout=TIMEOUT, retry=None))

    def deleted_kept(self) -> DeletedKept | None:
        with self.failures("read the settings of", ""):
            self.bucket.reload(timeout=TIMEOUT, retry=None)
        seconds = self.bucket.soft_delete_policy.retention_duration_seconds
        return DeletedKept("soft delete", int(seconds)) if seconds else None

    def get(self, key: str) -> bytes:
        with self.failures("read", key):
            data = self.objects.get(self.prefix + key)
        if data is None:
            raise BlobNotFound(key, self.url)
        return data

    def put(self, key: str, data: bytes, *, overwrite: bool = False) -> bool:
        with self.failures("write", key):
            return self.objects.put(self.prefix + key, data, overwrite=overwrite)

    def exists(self, key: str) -> bool:
        with self.failures("check", key):
            return self.objects.exists(self.prefix + key)

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
        with self.failures("delete", key):
            self.objects.delete(self.prefix + key)


def _credentials() -> tuple[Credentials, str | None]:
    """The credentials and project: anonymous for an emulator, else Application Default
    Credentials, else anonymous (a public bucket can still be read)."""
    if os.environ.get("STORAGE_EMULATOR_HOST"):
        return AnonymousCredentials(), "pitreos"  # type: ignore[no-untyped-call]
    try:
        credentials, project = google.auth.default(scopes=storage.Client.SCOPE)
    except google.auth.exceptions.DefaultCredentialsError:
        log.info("gcs.anonymous", reason="no application default credentials")
        return AnonymousCredentials(), None  # type: ignore[no-untyped-call]
    return credentials, project


def _client(credentials: Credentials, project: str | None, pool_size: int) -> storage.Client:
    client = storage.Client(project=project, credentials=credentials)  # None: no project
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
