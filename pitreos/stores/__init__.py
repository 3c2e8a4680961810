"""Opening a store from its URL: the backend, wrapped in the decorators it needs.

``file:///path`` (or a plain path) is built in; ``gs://``, ``s3://``, ``azblob://`` and
``http(s)://`` backends load their client library only when used. The imports are
plain ``from .gcs import GCSStore``: mypy then checks each backend against the
:class:`~pitreos.stores.base.Store` protocol where it is returned as one. The wrappers
that only an object store gets are imported with it too: on a local store, `pitreos
list` and `--version` are spared ~5 ms of imports (limit 2.1 ms, deadline and retry
0.4 ms each, and the `concurrent.futures` that deadline imports; 2 cores).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import SplitResult, parse_qsl, urlsplit, urlunsplit

from ..defaults import DEFAULT_REQUEST_TIMEOUT, DEFAULT_RETRY_FOR
from ..errors import UsageError
from .base import ObjectInfo, Store, StoreProperties
from .local import LocalStore

if TYPE_CHECKING:
    from .limit import ConcurrencyLimit

_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")

__all__ = ["ObjectInfo", "Store", "StoreProperties", "default_store_url", "is_remote_url",
           "open_store"]


def default_store_url() -> str:
    """The embedded default: a directory under the user's data dir."""
    import platformdirs  # here: worker processes import this package, never this

    return (Path(platformdirs.user_data_dir("pitreos")) / "store").as_uri()


def is_remote_url(url: str) -> bool:
    """Whether ``url`` names an object store (every request a network round trip)."""
    return bool(_SCHEME_RE.match(url)) and urlsplit(url).scheme in _REMOTE


def open_store(url: str, *, create: bool = False, pool_size: int = 32,
               retry_for: float = DEFAULT_RETRY_FOR,
               request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
               limit: ConcurrencyLimit | None = None) -> Store:
    """Open the store at ``url``. ``create`` lets a local directory store be created.

    An object store comes wrapped: retries for ``retry_for`` seconds outside, a limit
    of requests in flight inside (``limit``, by default ``pool_size`` fixed; a retry
    waiting out its backoff holds no slot of its own), and innermost a deadline of
    ``request_timeout`` seconds on each request. Its client keeps ``pool_size``
    connections.
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
    backend = _REMOTE[parts.scheme](url, parts, pool_size)
    from .deadline import DeadlineStore
    from .limit import ConcurrencyLimit, LimitedStore
    from .retry import RetryingStore

    bounded = DeadlineStore(backend, request_timeout)
    limited = LimitedStore(bounded, limit or ConcurrencyLimit.fixed(
        backend.properties.connections or pool_size))
    return RetryingStore(limited, retry_for=retry_for)


Factory = Callable[[str, SplitResult, int], Store]


def _needs_extra(extra: str) -> Callable[[Factory], Factory]:
    """A backend whose client library is an optional extra: importing it inside the
    factory may fail, and then the user is told what to install."""

    def decorate(factory: Factory) -> Factory:
        def guarded(url: str, parts: SplitResult, pool_size: int) -> Store:
            try:
                return factory(url, parts, pool_size)
            except ImportError as exc:
                raise UsageError(
                    f"store {url} needs the optional '{extra}' extra ({exc.name} is not "
                    f"installed): pip install 'pitreos[{extra}]'") from exc

        return guarded

    return decorate


@_needs_extra("gcs")
def _gcs(url: str, parts: SplitResult, pool_size: int) -> Store:
    from .gcs import GCSStore

    return GCSStore(parts.netloc, parts.path, url, pool_size)


@_needs_extra("s3")
def _s3(url: str, parts: SplitResult, pool_size: int) -> Store:
    from .s3 import S3Store

    params = dict(parse_qsl(parts.query))
    unknown = set(params) - {"endpoint", "region", "path_style"}
    if unknown:
        raise UsageError(f"unknown parameter {sorted(unknown)[0]!r} in store URL {url!r}: "
                         "use endpoint, region, path_style")
    path_style = params.get("path_style", "").lower() in ("1", "true", "yes")
    display = urlunsplit((parts.scheme, parts.netloc, parts.path, parts.query, ""))
    return S3Store(parts.netloc, parts.path, display, endpoint=params.get("endpoint"),
                   region=params.get("region"), path_style=path_style or "endpoint" in params,
                   pool_size=pool_size)


@_needs_extra("azure")
def _azure(url: str, parts: SplitResult, pool_size: int) -> Store:
    from .azure import AzureStore

    return AzureStore(parts.netloc, parts.path, url, pool_size)


def _http(url: str, parts: SplitResult, pool_size: int) -> Store:
    from .http import HTTPStore

    return HTTPStore(url, pool_size)


_REMOTE: dict[str, Factory] = {
    "gs": _gcs, "s3": _s3, "azblob": _azure, "http": _http, "https": _http,
}

