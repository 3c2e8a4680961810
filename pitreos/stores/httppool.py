"""The urllib3 connection pool that the lean object requests (:mod:`.gcsobjects`,
:mod:`.s3objects`) send through: one per store, sized for its requests in flight, with
the proxy the environment names for the endpoint and the CA bundle the caller chose.

The proxy is chosen once, when the store is opened, as requests and botocore choose it:
``HTTPS_PROXY``/``HTTP_PROXY`` for the endpoint's scheme, unless ``NO_PROXY`` covers its
host.
"""

import urllib.request
from urllib.parse import urlsplit

import urllib3

CONNECT_SECONDS, READ_SECONDS = 10, 120  # the SDKs' own requests wait as long
TIMEOUT = urllib3.Timeout(connect=CONNECT_SECONDS, read=READ_SECONDS)


class ChecksumMismatch(Exception):
    """A body whose checksum differs from the one the server sent: cut or damaged on
    the way (a retry fetches it again)."""


def pool_for(endpoint: str, pool_size: int, ca_certs: str) -> urllib3.PoolManager:
    proxy = proxy_for(endpoint)
    if proxy:
        return urllib3.ProxyManager(proxy, maxsize=pool_size, ca_certs=ca_certs)
    return urllib3.PoolManager(maxsize=pool_size, ca_certs=ca_certs)


def proxy_for(endpoint: str) -> str | None:
    """The proxy the environment names for ``endpoint``, or None to go direct."""
    parts = urlsplit(endpoint)
    if parts.hostname and urllib.request.proxy_bypass(parts.hostname):
        return None
    return urllib.request.getproxies().get(parts.scheme)
