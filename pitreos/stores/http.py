"""A store published as static files over ``http://`` or ``https://``, read-only.

Any web server or public bucket address serves (for instance
``https://storage.googleapis.com/bucket/prefix``): no credentials, no listing API.
Backups are found through ``index/manifests.txt``, which every write to a store keeps up
to date.
"""

from collections.abc import Iterator

import requests

from ..errors import BlobNotFound, ReadOnlyStore, StoreError, TransientStoreError
from .base import ObjectInfo, ObjectStoreBase, StoreProperties

TIMEOUT = (10, 120)


class HTTPStore(ObjectStoreBase):
    def __init__(self, url: str, pool_size: int = 32) -> None:
        super().__init__(url.rstrip("/"), "")
        self.properties = StoreProperties(remote=True, read_only=True, listable=False,
                                          conditional_put=False, connections=pool_size)
        self.session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_connections=pool_size,
                                                pool_maxsize=pool_size)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def translate(self, action: str, key: str, exc: Exception) -> StoreError:
        if isinstance(exc, requests.ConnectionError | requests.Timeout
                      | requests.exceptions.ChunkedEncodingError):
            return self.error(action, key, type(exc).__name__, TransientStoreError)
        return self.error(action, key, str(exc))

    def _request(self, method: str, key: str) -> requests.Response:
        with self.failures("read", key):
            response = self.session.request(method, f"{self.url}/{key}", timeout=TIMEOUT)
        if response.status_code >= 500 or response.status_code == 429:
            raise self.error("read", key, f"HTTP {response.status_code}", TransientStoreError)
        return response

    def check(self) -> None:
        """A static site cannot say whether a prefix exists: the repository's first
        read (of its index) tells."""

    def get(self, key: str) -> bytes:
        response = self._request("GET", key)
        if response.status_code == 404:
            raise BlobNotFound(key, self.url)
        if response.status_code != 200:
            raise self.error("read", key, f"HTTP {response.status_code}")
        expected = response.headers.get("Content-Length")
        if expected is not None and "Content-Encoding" not in response.headers and int(
                expected) != len(response.content):
            raise self.error("read", key, "truncated", TransientStoreError)
        return response.content

    def exists(self, key: str) -> bool:
        status = self._request("HEAD", key).status_code
        if status in (200, 404):
            return status == 200
        raise self.error("check", key, f"HTTP {status}")

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        raise StoreError(f"store {self.url} is plain HTTP: it cannot list {prefix}")

    def put(self, key: str, data: bytes, *, overwrite: bool = False) -> bool:
        raise ReadOnlyStore(f"store {self.url} is read-only (HTTP): cannot write {key}")

    def delete(self, key: str) -> None:
        raise ReadOnlyStore(f"store {self.url} is read-only (HTTP): cannot delete {key}")
