"""Amazon S3 and S3-compatible servers (``s3://bucket/prefix``) with boto3.

Credentials, region and endpoint come from boto3's standard chain (``AWS_*`` variables,
``~/.aws`` files, instance roles); URL parameters override the endpoint and region:
``s3://bucket/prefix?endpoint=http://127.0.0.1:8333&region=us-east-1&path_style=1``.
Objects are read, written, checked and deleted with requests signed and sent by
:mod:`~pitreos.stores.s3objects` (half of boto3's CPU per request), addressed as boto3
addresses them; listing and the bucket check go through boto3. Neither retries:
:class:`~pitreos.stores.retry.RetryingStore` does.
"""

import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import boto3
import botocore.config
import botocore.exceptions as bexc
import botocore.session
import certifi
import urllib3.exceptions

from ..errors import (
    AccessDenied,
    BlobNotFound,
    StoreError,
    StoreNotFound,
    TransientStoreError,
)
from ..log import get_logger
from .base import DeletedKept, ObjectInfo, ObjectStoreBase, StoreProperties
from .httppool import ChecksumMismatch, pool_for
from .s3objects import BucketObjects, ClientObjects, WrongRegion, signed_objects

log = get_logger(__name__)
T = TypeVar("T")

_TRANSIENT_CODES = {"SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable",
                    "Throttling", "ThrottlingException"}
_REFUSED_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
                  "InvalidToken"}
_TRANSIENT = (bexc.ConnectionError, bexc.HTTPClientError, bexc.ReadTimeoutError,
              bexc.IncompleteReadError, bexc.ResponseStreamingError, ConnectionError,
              urllib3.exceptions.HTTPError,  # the signed requests' network failures
              bexc.FlexibleChecksumError)  # a body cut short in transit: fetch it again
_DENIED_CODES = {"AccessDenied", "AllAccessDisabled"}


class S3Store(ObjectStoreBase):
    def __init__(self, bucket: str, prefix: str, url: str, *, endpoint: str | None,
                 region: str | None, path_style: bool, pool_size: int = 32) -> None:
        super().__init__(url, prefix)
        self.properties = StoreProperties(remote=True, connections=pool_size)
        self.bucket = bucket
        config = botocore.config.Config(
            connect_timeout=10, read_timeout=120, retries={"max_attempts": 1},
            max_pool_connections=pool_size,
            s3={"addressing_style": "path" if path_style else "auto"},
        )
        session = botocore.session.get_session()
        self.client = boto3.session.Session(botocore_session=session).client(
            "s3", endpoint_url=endpoint, region_name=region, config=config)
        self.client_objects: BucketObjects = ClientObjects(self.client, bucket)
        ca_certs = session.get_config_variable("ca_bundle") or certifi.where()
        http = pool_for(self.client.meta.endpoint_url, pool_size, ca_certs)
        self.objects: BucketObjects = signed_objects(
            self.client, bucket, session.get_credentials(), http) or self.client_objects
        self._switching = threading.Lock()

    def _objects(self, request: Callable[[BucketObjects], T]) -> T:
        """``request`` made with the signed requests, or through boto3's client once
        the bucket has said it lives in another region (the client follows that)."""
        try:
            return request(self.objects)
        except WrongRegion as exc:  # only the signed requests raise it
            with self._switching:  # requests in flight together meet it together
                switched = self.objects is not self.client_objects
                self.objects = self.client_objects
            if switched:
                log.warning("s3.other_region", store=self.url, region=exc.region,
                            hint="name the bucket's region in the store URL "
                                 "(?region=...) for faster transfers")
            return request(self.client_objects)

    def translate(self, action: str, key: str, exc: Exception) -> StoreError:
        if isinstance(exc, bexc.ClientError):
            code = _code(exc)
            status = _status(exc)
            if code == "NoSuchBucket" or (status == 404 and not key):
                return StoreNotFound(f"store {self.url} does not exist (no such bucket)")
            if code == "RequestTimeTooSkewed":
                return self.error(action, key, "this machine's clock differs from the "
                                  "store's by more than 15 minutes (RequestTimeTooSkewed): "
                                  "set the clock (NTP)")
            if code in _TRANSIENT_CODES or status >= 500 or status == 429:
                return self.error(action, key, str(code or status), TransientStoreError)
            if code in _REFUSED_CODES or status == 401:
                return self.error(action, key, f"access denied: the credentials were "
                                  f"refused ({code})", AccessDenied)
            if code in _DENIED_CODES:
                return self.error(action, key, f"access denied: the credentials lack a "
                                  f"permission ({code})", AccessDenied)
            if status == 403:  # a HEAD answer has no body to say which
                return self.error(action, key, "access denied (HTTP 403): the credentials "
                                  "were refused or lack a permission", AccessDenied)
            return self.error(action, key, str(code or status))
        if isinstance(exc, ChecksumMismatch):
            return self.error(action, key, f"body damaged in transit: {exc}",
                              TransientStoreError)
        if isinstance(exc, _TRANSIENT):
            return self.error(action, key, type(exc).__name__, TransientStoreError)
        if isinstance(exc, bexc.NoCredentialsError):
            return self.error(action, key, "no AWS credentials found", AccessDenied)
        return self.error(action, key, str(exc))

    def check(self) -> None:
        # a one-key listing, not HEAD: an answer to HEAD has no body, so a refused
        # signature, a wrong clock and a missing bucket would all read "403" or "404"
        with self.failures("open", ""):
            self.client.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix, MaxKeys=1)

    def get(self, key: str) -> bytes:
        name = self.prefix + key
        with self.failures("read", key):
            try:
                return self._objects(lambda objects: objects.get(name))
            except bexc.ClientError as exc:
                if _code(exc) in ("NoSuchKey", "404"):
                    raise BlobNotFound(key, self.url) from exc
                raise

    def put(self, key: str, data: bytes, *, overwrite: bool = False) -> bool:
        name = self.prefix + key
        with self.failures("write", key):
            try:
                self._objects(lambda objects: objects.put(name, data, overwrite=overwrite))
            except bexc.ClientError as exc:
                if _code(exc) in ("PreconditionFailed", "ConditionalRequestConflict"):
                    return False
                raise
        return True

    def exists(self, key: str) -> bool:
        name = self.prefix + key
        with self.failures("check", key):
            try:
                self._objects(lambda objects: objects.head(name))
            except bexc.ClientError as exc:
                if _status(exc) == 404:
                    return False
                raise
        return True

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        paginator = self.client.get_paginator("list_objects_v2")
        with self.failures("list", prefix):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
                for item in page.get("Contents", []):
                    yield ObjectInfo(item["Key"][len(self.prefix):], int(item["Size"]),
                                     item["LastModified"])

    def delete(self, key: str) -> None:
        name = self.prefix + key
        with self.failures("delete", key):
            self._objects(lambda objects: objects.delete(name))

    def deleted_kept(self) -> DeletedKept | None:
        """A versioned bucket keeps each deleted object as a noncurrent version, billed
        until a lifecycle rule (NoncurrentVersionExpiration) that covers the store's
        prefix expires it. A suspended bucket still keeps the versions of objects
        written before it was suspended."""
        with self.failures("read the settings of", ""):
            status = self.client.get_bucket_versioning(Bucket=self.bucket).get("Status")
            if status not in ("Enabled", "Suspended"):
                return None
            try:
                rules = self.client.get_bucket_lifecycle_configuration(
                    Bucket=self.bucket)["Rules"]
            except bexc.ClientError as exc:
                if _code(exc) != "NoSuchLifecycleConfiguration":
                    raise
                rules = []
        days = [rule["NoncurrentVersionExpiration"]["NoncurrentDays"] for rule in rules
                if rule.get("Status") == "Enabled" and self._covers(rule)
                and "NoncurrentDays" in rule.get("NoncurrentVersionExpiration", {})]
        by = "versioning" if status == "Enabled" else "versioning, suspended"
        return DeletedKept(by, min(days) * 86400 if days else None)

    def _covers(self, rule: dict[str, Any]) -> bool:
        """Whether a lifecycle rule applies to every object of the store: a prefix
        filter (or none), not one of tags or sizes."""
        where = rule.get("Filter", {"Prefix": rule.get("Prefix", "")})
        if set(where) - {"Prefix"}:
            return False
        return self.prefix.startswith(where.get("Prefix", ""))


def _code(exc: bexc.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: bexc.ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
