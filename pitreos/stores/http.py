"""A store published as static files over ``http://`` or ``https://``, read-only.

Any web server or public bucket address serves (for instance
``https://storage.googleapis.com/bucket/prefix``): no credentials, no listing API.
Backups are found through ``index/manifests.txt``, which every write to a store keeps up
to date.
"""

from collections.abc import Iterator

import requests

from ..errors import BlobNotFound, ReadOnlyStore, StoreError, StoreNotFound, TransientStoreError
from .base import DurableOnPut, ObjectInfo

TIMEOUT = (10, 120)


class HTTPStore(DurableOnPut):
    read_only = True
    listable = False

    def __init__(self, url: str, pool_size: int = 32) -> None:
        self.url = url.rstrip("/")
        self.session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_connections=pool_size,
                                                pool_maxsize=pool_size)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def _request(self, method: str, key: str) -> requests.Response:
        try:
            response = self.session.request(method, f"{self.url}/{key}", timeout=TIMEOUT)
        except (requests.ConnectionError, requests.Timeout,
                requests.exceptions.ChunkedEncodingError) as exc:
            raise TransientStoreError(f"cannot read {key} from store {self.url}: "
                                      f"{type(exc).__name__}") from exc
        if response.status_code >= 500 or response.status_code == 429:
            raise TransientStoreError(f"cannot read {key} from store {self.url}: "
                                      f"HTTP {response.status_code}")
        return response

    def check(self) -> None:
        from ..repository import INDEX_KEY

        response = self._request("HEAD", INDEX_KEY)
        if response.status_code == 404:
            raise StoreNotFound(f"store {self.url} does not exist (no {INDEX_KEY} there)")
        if response.status_code != 200:
            raise StoreError(f"cannot open store {self.url}: HTTP {response.status_code}")

    def get(self, key: str) -> bytes:
        response = self._request("GET", key)
        if response.status_code == 404:
            raise BlobNotFound(key, self.url)
        if response.status_code != 200:
            raise StoreError(f"cannot read {key} from store {self.url}: "
                             f"HTTP {response.status_code}")
        expected = response.headers.get("Content-Length")
        if expected is not None and "Content-Encoding" not in response.headers and int(
                expected) != len(response.content):
            raise TransientStoreError(f"cannot read {key} from store {self.url}: truncated")
        return response.content

    def exists(self, key: str) -> bool:
        status = self._request("HEAD", key).status_code
        if status in (200, 404):
            return status == 200
        raise StoreError(f"cannot check {key} in store {self.url}: HTTP {status}")

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        raise StoreError(f"store {self.url} is plain HTTP: it cannot list {prefix}")

    def put(self, key: str, data: bytes, *, overwrite: bool = False) -> bool:
        raise ReadOnlyStore(f"store {self.url} is read-only (HTTP): cannot write {key}")

    def delete(self, key: str) -> None:
        raise ReadOnlyStore(f"store {self.url} is read-only (HTTP): cannot delete {key}")
