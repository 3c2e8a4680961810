"""Real storage servers for the tests, started once per session through tools/servers.py.

A server that cannot start raises: its tests fail, they are never skipped.
"""

import contextlib
import importlib.util
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any
from unittest import mock

from pitreos.defaults import DEFAULT_CHUNK_SIZE
from pitreos.errors import StoreExists
from pitreos.workspace import init_store

ROOT = Path(__file__).resolve().parents[2]


def load_tool(name: str) -> ModuleType:
    """``tools/NAME.py`` (not a package): the servers' installer, the latency proxy."""
    spec = importlib.util.spec_from_file_location(f"pitreos_tools_{name}",
                                                  ROOT / "tools" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class Backend:
    """A bucket on a running server: its store URL and the environment clients need."""

    name: str
    url: str
    env: dict[str, str]


def initialized(backend: Backend) -> Backend:
    """The store, made by ``pitreos init``'s code: a bucket or a directory alone is no
    pitreos store."""
    with mock.patch.dict(os.environ, backend.env), contextlib.suppress(StoreExists):
        init_store(backend.url, DEFAULT_CHUNK_SIZE)  # two fixtures may name one store
    return backend


def unique_bucket() -> str:
    return f"pitreos-{uuid.uuid4().hex[:16]}"


def create_gcs_bucket(server: Any) -> Backend:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    bucket = unique_bucket()
    anonymous = AnonymousCredentials()  # type: ignore[no-untyped-call]
    client = storage.Client(project="pitreos", credentials=anonymous,
                            client_options={"api_endpoint": server.endpoint})
    client.create_bucket(bucket)
    return initialized(Backend("gcs", f"gs://{bucket}/backups", dict(server.env)))


def s3_client(server: Any) -> Any:
    """A boto3 client of the S3 test server, as its tests' setup uses it."""
    import boto3

    return boto3.client("s3", endpoint_url=server.endpoint, region_name="us-east-1",
                        aws_access_key_id=server.env["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=server.env["AWS_SECRET_ACCESS_KEY"])


def azure_account(server: Any) -> Any:
    """The Azure test server's account (Azurite has one), for its tests' setup."""
    from azure.storage.blob import BlobServiceClient

    return BlobServiceClient.from_connection_string(
        server.env["AZURE_STORAGE_CONNECTION_STRING"])


def create_s3_bucket(server: Any) -> Backend:
    bucket = unique_bucket()
    s3_client(server).create_bucket(Bucket=bucket)
    return initialized(Backend(
        "s3", f"s3://{bucket}/backups?endpoint={server.endpoint}&path_style=1",
        dict(server.env)))


def create_azure_container(server: Any) -> Backend:
    container = unique_bucket()
    azure_account(server).create_container(container)
    return initialized(Backend("azure", f"azblob://{container}/backups", dict(server.env)))


CREATORS: dict[str, Callable[[Any], Backend]] = {
    "gcs": create_gcs_bucket, "s3": create_s3_bucket, "azure": create_azure_container,
}
