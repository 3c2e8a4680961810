"""Reading and writing one GCS bucket's objects over the JSON API, through google-auth's
urllib3 transport.

Why not google-cloud-storage for these four requests: its PUT of a 310 kB blob cost
2.4-3.7 ms of CPU and its GET 2.2-3.2 ms (fake-gcs-server on loopback, 300 requests in a
row; the higher figures with 336 environment variables, since requests scans the
environment for proxy settings twice per request), against 0.9 and 0.7 ms for the same
requests here. A backup or restore makes one request per blob, and that CPU ran in the
one process whose Python is serialized (issue 15, target 3). The SDK still does what it
is good at and what is rare: credentials, listing, bucket settings.

Proxy and CA settings are read from the environment once, when the store is opened, as
requests reads them: ``HTTPS_PROXY``/``HTTP_PROXY`` with ``NO_PROXY``, and
``REQUESTS_CA_BUNDLE`` or ``CURL_CA_BUNDLE`` (else certifi's bundle).
"""

import base64
import json
import os
import secrets
from dataclasses import dataclass
from urllib.parse import quote

import certifi
import google_crc32c
from google.auth.credentials import Credentials
from google.auth.transport.urllib3 import AuthorizedHttp

from .._version import __version__
from .httppool import TIMEOUT, ChecksumMismatch, pool_for


class HTTPStatusError(Exception):
    """An answer other than the ones the request expects."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}" if message else f"HTTP {status}")
        self.status = status


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    data: bytes
    crc32c: str | None  # base64, from x-goog-hash


class BucketObjects:
    """GET, PUT, existence check and DELETE of objects by name in ``bucket`` at
    ``endpoint`` (``https://storage.googleapis.com``, or an emulator's address)."""

    def __init__(self, endpoint: str, bucket: str, credentials: Credentials,
                 pool_size: int) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.bucket = quote(bucket, safe="")
        ca_certs = (os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
                    or certifi.where())  # as requests, which the SDK uses, chooses it
        self.http = AuthorizedHttp(credentials,  # type: ignore[no-untyped-call]
                                   pool_for(self.endpoint, pool_size, ca_certs))
        self.headers = {"user-agent": f"pitreos/{__version__}"}

    def get(self, name: str) -> bytes | None:
        """The object's bytes, checked against the crc32c the server sends; None when
        there is no such object."""
        answer = self._request("GET", f"/download/storage/v1/b/{self.bucket}/o/"
                               f"{_name(name)}?alt=media", expect=(200, 404))
        if answer.status == 404:
            return None
        if answer.crc32c is not None:
            read = _crc32c(answer.data)
            if read != answer.crc32c:
                raise ChecksumMismatch(f"crc32c {read} of the body read, {answer.crc32c} "
                                       "sent by the server")
        return answer.data

    def put(self, name: str, data: bytes, *, overwrite: bool) -> bool:
        """Write the object, with its crc32c for the server to check. Without
        ``overwrite``, only where no object of that name exists: False when one does."""
        boundary = secrets.token_hex(16).encode()  # never in the data: a user's bytes
        metadata = json.dumps({"name": name, "crc32c": _crc32c(data)}).encode()
        head = (b"--" + boundary + b"\r\ncontent-type: application/json; charset=UTF-8\r\n\r\n"
                + metadata + b"\r\n--" + boundary
                + b"\r\ncontent-type: application/octet-stream\r\n\r\n")
        tail = b"\r\n--" + boundary + b"--\r\n"
        condition = "" if overwrite else "&ifGenerationMatch=0"
        # the parts are sent one after the other, not joined: joining copied every blob
        # once more while its request was in flight (peak RSS of the bench's backup
        # through the latency proxy: 292 MiB joined, see docs/performance.md)
        answer = self._request(
            "POST", f"/upload/storage/v1/b/{self.bucket}/o?uploadType=multipart{condition}",
            body=(head, data, tail), length=len(head) + len(data) + len(tail),
            content_type=f'multipart/related; boundary="{boundary.decode()}"',
            expect=(200, 412))
        return answer.status == 200

    def exists(self, name: str) -> bool:
        answer = self._request("GET", f"/storage/v1/b/{self.bucket}/o/{_name(name)}"
                               "?fields=name", expect=(200, 404))
        return answer.status == 200

    def delete(self, name: str) -> None:
        """Removing an absent object is not an error."""
        self._request("DELETE", f"/storage/v1/b/{self.bucket}/o/{_name(name)}",
                      expect=(200, 204, 404))

    def _request(self, method: str, path: str, *, expect: tuple[int, ...],
                 body: tuple[bytes, ...] | None = None, length: int = 0,
                 content_type: str | None = None) -> _Answer:
        headers = self.headers if body is None else {
            **self.headers, "content-type": content_type or "application/octet-stream",
            "content-length": str(length)}  # known: the body is not sent chunked
        # retries=False: the retry layer above retries, with its own backoff and limit
        response = self.http.urlopen(  # type: ignore[no-untyped-call]
            method, self.endpoint + path, body=body, headers=headers, retries=False,
            timeout=TIMEOUT)
        if response.status not in expect:
            raise HTTPStatusError(response.status, _message(response.data))
        return _Answer(response.status, response.data,
                       _crc32c_sent(response.headers.get("x-goog-hash")))


def _name(name: str) -> str:
    return quote(name, safe="")


def _crc32c(data: bytes) -> str:
    return base64.b64encode(google_crc32c.value(data).to_bytes(4, "big")).decode()


def _crc32c_sent(header: str | None) -> str | None:
    """The crc32c in an ``x-goog-hash`` header (``crc32c=...,md5=...``)."""
    for part in (header or "").split(","):
        kind, _, value = part.strip().partition("=")
        if kind == "crc32c":
            return value
    return None


def _message(data: bytes) -> str:
    """The error's own message, from a JSON error body or its first line."""
    try:
        message = json.loads(data)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        text = data[:200].decode("utf-8", "replace").strip()
        message = text.splitlines()[0] if text else ""
    return str(message)
