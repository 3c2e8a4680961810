"""Amazon S3 and S3-compatible servers (``s3://bucket/prefix``) with boto3.

Credentials, region and endpoint come from boto3's standard chain (``AWS_*`` variables,
``~/.aws`` files, instance roles); URL parameters override the endpoint and region:
``s3://bucket/prefix?endpoint=http://127.0.0.1:8333&region=us-east-1&path_style=1``.
boto3's own retries are off: :class:`~pitreos.stores.retry.RetryingStore` retries.
"""

from collections.abc import Iterator
from typing import Any

import boto3
import botocore.config
import botocore.exceptions as bexc

from ..errors import (
    AccessDenied,
    BlobNotFound,
    StoreError,
    StoreNotFound,
    TransientStoreError,
)
from .base import ObjectInfo, ObjectStoreBase, StoreProperties

_TRANSIENT_CODES = {"SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable",
                    "Throttling", "ThrottlingException"}
_REFUSED_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
                  "InvalidToken"}
_TRANSIENT = (bexc.ConnectionError, bexc.HTTPClientError, bexc.ReadTimeoutError,
              bexc.IncompleteReadError, bexc.ResponseStreamingError, ConnectionError,
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
        self.client = boto3.session.Session().client(
            "s3", endpoint_url=endpoint, region_name=region, config=config)

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
        with self.failures("read", key):
            try:
                response = self.client.get_object(Bucket=self.bucket, Key=self.prefix + key)
            except bexc.ClientError as exc:
                if _code(exc) in ("NoSuchKey", "404"):
                    raise BlobNotFound(key, self.url) from exc
                raise
            data: bytes = response["Body"].read()
        if len(data) != response.get("ContentLength", len(data)):
            raise self.error("read", key, "truncated body", TransientStoreError)
        return data

    def put(self, key: str, data: bytes, *, overwrite: bool = False) -> bool:
        kwargs: dict[str, Any] = {} if overwrite else {"IfNoneMatch": "*"}
        with self.failures("write", key):
            try:
                self.client.put_object(Bucket=self.bucket, Key=self.prefix + key, Body=data,
                                       **kwargs)
            except bexc.ClientError as exc:
                if _code(exc) in ("PreconditionFailed", "ConditionalRequestConflict"):
                    return False
                raise
        return True

    def exists(self, key: str) -> bool:
        with self.failures("check", key):
            try:
                self.client.head_object(Bucket=self.bucket, Key=self.prefix + key)
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
        with self.failures("delete", key):
            self.client.delete_object(Bucket=self.bucket, Key=self.prefix + key)


def _code(exc: bexc.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: bexc.ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
