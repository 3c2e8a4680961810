"""Reading and writing one S3 bucket's objects: requests signed with botocore's SigV4
signer and sent through urllib3, or through boto3's client.

Why not boto3's client for these four requests: its ``put_object`` of a 310 kB blob cost
2.4-2.6 ms of CPU and its ``get_object`` 2.2 ms (SeaweedFS on loopback, 200 requests in a
row, four rounds alternating), against 1.35-1.45 ms and 0.9-1.1 ms for the same requests
signed and sent here: most of boto3's time goes to its event hooks, endpoint rules and
response parsing, run again for every request. A backup or restore makes one request
per blob, in the one process whose Python is serialized (issue 15, target 3).

What boto3 decides stays boto3's: the URL of the bucket's objects (virtual-hosted or
path style, the endpoint, its rules) and the region to sign for are read once from a
request the client prepares and never sends. Listing, the bucket check and every
request once the bucket answers that it lives in another region go through the client,
which follows such redirects. What boto3 1.36 and later send and check is kept: the
payload's SHA-256 in the signature (S3 refuses a body that differs from it), a CRC32
with each PUT, and the CRC32 the server returns checked on each GET;
``AWS_REQUEST_CHECKSUM_CALCULATION`` and ``AWS_RESPONSE_CHECKSUM_VALIDATION`` set to
``when_required`` turn the last two off, as they do for boto3.
"""

import base64
import xml.etree.ElementTree as ElementTree
import zlib
from http.client import responses as reasons
from typing import Any, Protocol
from urllib.parse import quote

import botocore.exceptions as bexc
import urllib3
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest, AWSResponse
from botocore.credentials import Credentials

from .._version import __version__
from .httppool import TIMEOUT, ChecksumMismatch

_REGION_CODES = {"AuthorizationHeaderMalformed", "PermanentRedirect", "TemporaryRedirect",
                 "IllegalLocationConstraintException"}


class WrongRegion(Exception):
    """The bucket answered that it lives in another region (or at another address)
    than the one the requests were signed for."""

    def __init__(self, region: str) -> None:
        super().__init__(region or "unknown")
        self.region = region


class BucketObjects(Protocol):
    """GET, PUT, existence check and DELETE of objects by name. Failures are
    botocore's: a ``ClientError`` carrying the S3 error code, as boto3 raises it."""

    def get(self, name: str) -> bytes: ...

    def put(self, name: str, data: bytes, *, overwrite: bool) -> None: ...

    def head(self, name: str) -> None: ...

    def delete(self, name: str) -> None: ...


class ClientObjects:
    """The objects through boto3's client."""

    def __init__(self, client: Any, bucket: str) -> None:
        self.client = client
        self.bucket = bucket

    def get(self, name: str) -> bytes:
        response = self.client.get_object(Bucket=self.bucket, Key=name)
        data: bytes = response["Body"].read()
        if len(data) != response.get("ContentLength", len(data)):
            raise ChecksumMismatch(f"{len(data)} bytes read of {response['ContentLength']}")
        return data

    def put(self, name: str, data: bytes, *, overwrite: bool) -> None:
        condition: dict[str, Any] = {} if overwrite else {"IfNoneMatch": "*"}
        self.client.put_object(Bucket=self.bucket, Key=name, Body=data, **condition)

    def head(self, name: str) -> None:
        self.client.head_object(Bucket=self.bucket, Key=name)

    def delete(self, name: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=name)


class SignedObjects:
    """The objects through signed requests of our own, at ``base_url`` (the bucket's
    objects' address, ending in ``/``)."""

    def __init__(self, base_url: str, region: str, credentials: Credentials,
                 http: urllib3.PoolManager, *, send_crc32: bool, check_crc32: bool) -> None:
        self.base_url = base_url
        self.region = region
        self.credentials = credentials
        self.http = http
        self.send_crc32 = send_crc32
        self.check_crc32 = check_crc32
        self.headers = {"user-agent": f"pitreos/{__version__}"}

    def get(self, name: str) -> bytes:
        headers = {"x-amz-checksum-mode": "ENABLED"} if self.check_crc32 else {}
        response = self._request("GET", name, "GetObject", headers)
        data: bytes = response.data
        sent = response.headers.get("x-amz-checksum-crc32")
        if self.check_crc32 and sent and "-" not in sent:  # "-": one of a multipart's parts
            read = _crc32(data)
            if read != sent:
                raise ChecksumMismatch(f"crc32 {read} of the body read, {sent} sent by the "
                                       "server")
        return data

    def put(self, name: str, data: bytes, *, overwrite: bool) -> None:
        headers = {} if overwrite else {"if-none-match": "*"}
        if self.send_crc32:
            headers["x-amz-checksum-crc32"] = _crc32(data)
        self._request("PUT", name, "PutObject", headers, data)

    def head(self, name: str) -> None:
        self._request("HEAD", name, "HeadObject", {})

    def delete(self, name: str) -> None:
        self._request("DELETE", name, "DeleteObject", {})

    def _request(self, method: str, name: str, operation: str, headers: dict[str, str],
                 body: bytes = b"") -> urllib3.BaseHTTPResponse:
        url = self.base_url + _quote(name)
        request = AWSRequest(method=method, url=url, data=body,
                             headers={**self.headers, **headers})
        # the payload's SHA-256 is signed (as botocore does on http, and here on https
        # too): S3 then refuses a body that differs from what was hashed
        request.context["payload_signing_enabled"] = True
        S3SigV4Auth(self.credentials.get_frozen_credentials(), "s3", self.region
                    ).add_auth(request)
        # retries=False: the retry layer above retries, with its own backoff and limit
        response = self.http.urlopen(method, url, body=body or None,
                                     headers=dict(request.headers.items()), retries=False,
                                     redirect=False, timeout=TIMEOUT, decode_content=False)
        if response.status >= 300:
            raise _failure(response, operation)
        return response


def signed_objects(client: Any, bucket: str, credentials: Credentials | None,
                   http: urllib3.PoolManager) -> SignedObjects | None:
    """Signed requests addressed and signed as ``client`` would address and sign them;
    None without credentials (the client then says so) or when its request does not
    have the expected shape."""
    if credentials is None:
        return None
    probe = "pitreos-address-probe"
    seen: dict[str, Any] = {}

    def keep_unsent(request: AWSRequest, **_: Any) -> AWSResponse:
        seen["url"], seen["authorization"] = request.url, request.headers["Authorization"]
        return AWSResponse(request.url, 200, {}, _NoBody())

    event = "before-send.s3.HeadObject"
    client.meta.events.register(event, keep_unsent, unique_id="pitreos-address-probe")
    try:
        client.head_object(Bucket=bucket, Key=probe)
    except (bexc.NoCredentialsError, bexc.PartialCredentialsError):
        return None
    finally:
        client.meta.events.unregister(event, unique_id="pitreos-address-probe")
    url = str(seen.get("url", ""))
    region = _region_in(seen.get("authorization", b""))
    if not url.endswith("/" + probe) or region is None:
        return None
    config = client.meta.config
    return SignedObjects(
        url[:-len(probe)], region, credentials, http,
        # botocore before 1.36 has neither setting, and sent and checked no CRC32
        send_crc32=getattr(config, "request_checksum_calculation", "") == "when_supported",
        check_crc32=getattr(config, "response_checksum_validation", "") == "when_supported")


class _NoBody:
    def stream(self) -> Any:
        return iter(())


def _region_in(authorization: str | bytes) -> str | None:
    """The region of a SigV4 ``Authorization`` header's credential scope
    (``Credential=KEY/DATE/REGION/s3/aws4_request``)."""
    text = authorization.decode() if isinstance(authorization, bytes) else authorization
    _, found, rest = text.partition("Credential=")
    parts = rest.split(",", 1)[0].split("/")
    return parts[-3] if found and len(parts) >= 5 and parts[-2] == "s3" else None


def _quote(name: str) -> str:
    return quote(name, safe="/~")  # as botocore quotes a key in the path


def _crc32(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def _failure(response: urllib3.BaseHTTPResponse, operation: str) -> Exception:
    """The error boto3 would raise for this answer, or :class:`WrongRegion`."""
    code, message = _error_in(response.data)
    if not code:  # a HEAD answer has no body: botocore names the error by its status
        code, message = str(response.status), reasons.get(response.status, "")
    if response.status in (301, 307) or code in _REGION_CODES:
        return WrongRegion(response.headers.get("x-amz-bucket-region", ""))
    error: Exception = bexc.ClientError(
        {"Error": {"Code": code, "Message": message},
         "ResponseMetadata": {"HTTPStatusCode": response.status}}, operation)
    return error


def _error_in(body: bytes) -> tuple[str, str]:
    """The code and message of an S3 error document (``<Error><Code>...``)."""
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        return "", ""
    return root.findtext("Code") or "", root.findtext("Message") or ""
