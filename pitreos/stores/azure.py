"""Azure Blob Storage (``azblob://container/prefix``) with azure-storage-blob.

The account comes from ``AZURE_STORAGE_CONNECTION_STRING``, or ``AZURE_STORAGE_ACCOUNT``
with ``AZURE_STORAGE_KEY`` or ``AZURE_STORAGE_SAS_TOKEN`` (anonymous when neither: enough
for a public container). The SDK's own retries are off:
:class:`~pitreos.stores.retry.RetryingStore` retries.
"""

import contextlib
import os
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import azure.core.exceptions as aexc
from azure.storage.blob import BlobServiceClient, ContainerClient

from ..errors import (
    AccessDenied,
    BlobNotFound,
    StoreError,
    StoreNotFound,
    TransientStoreError,
    UsageError,
)
from .base import DeletedKept, ObjectInfo, ObjectStoreBase, StoreProperties


class AzureStore(ObjectStoreBase):
    def __init__(self, container: str, prefix: str, url: str, pool_size: int = 32) -> None:
        super().__init__(url, prefix)
        self.properties = StoreProperties(remote=True, connections=pool_size)
        options: dict[str, Any] = {"retry_total": 0, "connection_timeout": 10,
                                   "read_timeout": 120}
        conn = os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
        account = os.environ.get("AZURE_STORAGE_ACCOUNT")
        if conn:
            self.client = ContainerClient.from_connection_string(conn, container, **options)
            self.account: Callable[[], BlobServiceClient] = partial(
                BlobServiceClient.from_connection_string, conn, **options)
        elif account:
            credential = os.environ.get("AZURE_STORAGE_KEY") or os.environ.get(
                "AZURE_STORAGE_SAS_TOKEN")
            self.client = ContainerClient(f"https://{account}.blob.core.windows.net",
                                          container, credential=credential, **options)
            self.account = partial(BlobServiceClient,
                                   f"https://{account}.blob.core.windows.net",
                                   credential=credential, **options)
        else:
            raise UsageError(f"store {url}: set AZURE_STORAGE_CONNECTION_STRING or "
                             "AZURE_STORAGE_ACCOUNT (with AZURE_STORAGE_KEY or "
                             "AZURE_STORAGE_SAS_TOKEN)")

    def translate(self, action: str, key: str, exc: Exception) -> StoreError:
        denied = "access denied: the credentials were refused or lack a permission"
        gone = getattr(exc, "error_code", None) == "ContainerNotFound"  # under a write too
        if isinstance(exc, aexc.ResourceNotFoundError) and (action in ("open", "list") or gone):
            return StoreNotFound(f"store {self.url} does not exist (no such container)")
        if isinstance(exc, aexc.ClientAuthenticationError):
            return self.error(action, key, denied, AccessDenied)
        if isinstance(exc, aexc.ServiceRequestError | aexc.ServiceResponseError):
            return self.error(action, key, type(exc).__name__, TransientStoreError)
        if isinstance(exc, aexc.HttpResponseError):
            status = exc.status_code or 0
            if status >= 500 or status == 429:
                return self.error(action, key, f"HTTP {status}", TransientStoreError)
            if status == 403:
                return self.error(action, key, denied, AccessDenied)
            return self.error(action, key, f"HTTP {status} {exc.reason or ''}".strip())
        return self.error(action, key, str(exc))

    def check(self) -> None:
        with self.failures("open", ""):
            self.client.get_container_properties()

    def get(self, key: str) -> bytes:
        with self.failures("read", key):
            try:
                data: bytes = self.client.download_blob(self.prefix + key).readall()
            except aexc.ResourceNotFoundError as exc:
                raise BlobNotFound(key, self.url) from exc
        return data

    def put(self, key: str, data: bytes, *, overwrite: bool = False) -> bool:
        with self.failures("write", key):
            try:
                self.client.upload_blob(self.prefix + key, data, overwrite=overwrite)
            except aexc.ResourceExistsError:
                return False
        return True

    def exists(self, key: str) -> bool:
        with self.failures("check", key):
            return bool(self.client.get_blob_client(self.prefix + key).exists())

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        with self.failures("list", prefix):
            for item in self.client.list_blobs(name_starts_with=self.prefix + prefix):
                yield ObjectInfo(item.name[len(self.prefix):], int(item.size),
                                 item.last_modified)

    def delete(self, key: str) -> None:
        with self.failures("delete", key), contextlib.suppress(aexc.ResourceNotFoundError):
            self.client.delete_blob(self.prefix + key)

    def deleted_kept(self) -> DeletedKept | None:
        """Blob soft delete, an account's setting: reading it takes the account's key
        (or a SAS for the service), not a container's SAS."""
        with self.failures("read the settings of", ""):
            policy = self.account().get_service_properties()["delete_retention_policy"]
        if not policy.enabled:
            return None
        return DeletedKept("soft delete", policy.days * 86400 if policy.days else None)
