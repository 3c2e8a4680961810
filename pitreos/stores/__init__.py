"""Opening a store from its URL.

``file:///path`` (or a plain path) is built in; ``gs://``, ``s3://``, ``azblob://`` and
``http(s)://`` backends load their client library only when used.
"""

import re
from pathlib import Path
from urllib.parse import urlsplit

import platformdirs

from ..errors import UsageError
from .base import ObjectInfo, Store
from .local import LocalStore

_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")

__all__ = ["ObjectInfo", "Store", "default_store_url", "open_store"]


def default_store_url() -> str:
    """The embedded default: a directory under the user's data dir."""
    return (Path(platformdirs.user_data_dir("pitreos")) / "store").as_uri()


def open_store(url: str, *, create: bool = False) -> Store:
    """Open the store at ``url``. ``create`` lets a local directory store be created."""
    if not _SCHEME_RE.match(url):  # a plain path
        if not url or url.startswith("-"):
            raise UsageError(f"invalid store URL {url!r}")
        return LocalStore(Path(url).absolute(), create=create)
    parts = urlsplit(url)
    if not url.startswith(f"{parts.scheme}://"):
        raise UsageError(f"invalid store URL {url!r}: expected {parts.scheme}://...")
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise UsageError(f"invalid store URL {url!r}: use file:///absolute/path")
        return LocalStore(Path(parts.path), create=create)
    raise UsageError(
        f"unknown store URL scheme {parts.scheme!r} in {url!r}: use file://, gs://, s3://, "
        "azblob://, http:// or https://"
    )
