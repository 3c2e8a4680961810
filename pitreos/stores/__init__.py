"""Opening a store from its URL.

``file:///path`` (or a plain path) is built in; ``gs://``, ``s3://``, ``azblob://`` and
``http(s)://`` backends load their client library only when used.
"""

import importlib
import re
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from urllib.parse import SplitResult, parse_qsl, urlsplit, urlunsplit

import platformdirs

from ..errors import UsageError
from .base import ObjectInfo, Store
from .local import LocalStore
from .retry import RetryingStore

_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")

__all__ = ["ObjectInfo", "Store", "default_store_url", "open_store"]


def default_store_url() -> str:
    """The embedded default: a directory under the user's data dir."""
    return (Path(platformdirs.user_data_dir("pitreos")) / "store").as_uri()


def open_store(url: str, *, create: bool = False, pool_size: int = 32) -> Store:
    """Open the store at ``url``. ``create`` lets a local directory store be created.

    Object stores come wrapped in :class:`~pitreos.stores.retry.RetryingStore`.
    """
    if not _SCHEME_RE.match(url):  # a plain path
        if not url or url.startswith("-"):
            raise UsageError(f"invalid store URL {url!r}")
        return LocalStore(Path(url).absolute(), create=create)
    parts = urlsplit(url)
    if not url.startswith(f"{parts.scheme}://"):
        raise UsageError(f"invalid store URL {url!r}: expected {parts.scheme}://...")
    if parts.username or parts.password:
        raise UsageError("store URLs must not carry credentials: use the environment or "
                         "the cloud's credential files")
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise UsageError(f"invalid store URL {url!r}: use file:///absolute/path")
        return LocalStore(Path(parts.path), create=create)
    if parts.scheme not in _REMOTE:
        raise UsageError(
            f"unknown store URL scheme {parts.scheme!r} in {url!r}: use file://, gs://, "
            "s3://, azblob://, http:// or https://"
        )
    if not parts.netloc:
        raise UsageError(f"invalid store URL {url!r}: no bucket or host")
    return RetryingStore(_REMOTE[parts.scheme](url, parts, pool_size))


def _gcs(url: str, parts: SplitResult, pool_size: int) -> Store:
    gcs = _import("pitreos.stores.gcs", "gcs", url)
    return gcs.GCSStore(parts.netloc, parts.path, url, pool_size)  # type: ignore[no-any-return]


def _s3(url: str, parts: SplitResult, pool_size: int) -> Store:
    s3 = _import("pitreos.stores.s3", "s3", url)
    params = dict(parse_qsl(parts.query))
    unknown = set(params) - {"endpoint", "region", "path_style"}
    if unknown:
        raise UsageError(f"unknown parameter {sorted(unknown)[0]!r} in store URL {url!r}: "
                         "use endpoint, region, path_style")
    path_style = params.get("path_style", "").lower() in ("1", "true", "yes")
    display = urlunsplit((parts.scheme, parts.netloc, parts.path, parts.query, ""))
    return s3.S3Store(parts.netloc, parts.path, display,  # type: ignore[no-any-return]
                      endpoint=params.get("endpoint"), region=params.get("region"),
                      path_style=path_style or "endpoint" in params, pool_size=pool_size)


def _azure(url: str, parts: SplitResult, pool_size: int) -> Store:
    azure = _import("pitreos.stores.azure", "azure", url)
    return azure.AzureStore(parts.netloc, parts.path, url)  # type: ignore[no-any-return]


def _http(url: str, parts: SplitResult, pool_size: int) -> Store:
    from .http import HTTPStore

    return HTTPStore(url, pool_size)


_REMOTE: dict[str, Callable[[str, SplitResult, int], Store]] = {
    "gs": _gcs, "s3": _s3, "azblob": _azure, "http": _http, "https": _http,
}


def _import(module: str, extra: str, url: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise UsageError(
            f"store {url} needs the optional '{extra}' extra ({exc.name} is not installed): "
            f"pip install 'pitreos[{extra}]'"
        ) from exc
