"""A fault-injecting HTTP proxy and a static file server, both on loopback, in threads."""

import http.client
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from .servers import Backend


@dataclass
class FaultPlan:
    """What the proxy does to the next requests. Each ``*_next`` counts down; a
    ``match`` (method and path fragment) narrows which requests a fault applies to."""

    fail_next: int = 0  # answer with ``fail_status`` instead of forwarding
    fail_status: int = 500
    fail_always: bool = False
    fail_match: str = ""  # a regular expression the paths failed contain
    truncate_next: int = 0  # cut GET bodies of blobs in half (and lie about it)
    reset_next: int = 0  # close the connection without forwarding or answering
    drop_next: int = 0  # forward (the server acts), then close without answering
    drop_match: tuple[str, str] = ("", "")  # (method, path fragment) the drop applies to
    stall_next: int = 0  # wait ``stall_seconds`` before answering
    stall_seconds: float = 0.0
    stall_match: str = ""  # a regular expression the paths it applies to contain
    trickle_always: bool = False  # send answers one byte every ``trickle_delay``
    trickle_delay: float = 0.5
    # rewrites every answer's body: (method, path, body) -> body
    rewrite: Callable[[str, str, bytes], bytes] | None = None
    requests: int = 0
    methods: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _count_down(self, name: str) -> bool:
        with self.lock:
            left = getattr(self, name)
            if left > 0:
                setattr(self, name, left - 1)
                return True
            return False

    def take(self, path: str) -> str:
        with self.lock:
            self.requests += 1
            if re.search(self.fail_match, path):
                if self.fail_always:
                    return "fail"
                if self.fail_next > 0:
                    self.fail_next -= 1
                    return "fail"
        if self._count_down("reset_next"):
            return "reset"
        return "pass"

    def take_drop(self, method: str, path: str, body: bytes | None) -> bool:
        """A GCS upload names its object in the body, not the path: both are looked at."""
        want_method, fragment = self.drop_match
        if want_method and method != want_method:
            return False
        if fragment not in path and fragment.encode() not in (body or b""):
            return False
        return self._count_down("drop_next")

    def take_stall(self, path: str) -> bool:
        return bool(re.search(self.stall_match, path)) and self._count_down("stall_next")

    def take_truncation(self) -> bool:
        return self._count_down("truncate_next")


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    target: str
    plan: FaultPlan

    def log_message(self, *args: object) -> None:
        pass

    def _hang_up(self) -> None:
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        self.plan.methods.append(self.command)
        action = self.plan.take(self.path)
        if action == "reset":
            self._hang_up()
            return
        if action == "fail":
            payload = b"injected failure"
            self.send_response(self.plan.fail_status)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        target = urlsplit(self.target)
        conn = http.client.HTTPConnection(target.hostname or "127.0.0.1", target.port,
                                          timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
        conn.request(self.command, self.path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
        conn.close()
        if self.plan.take_drop(self.command, self.path, body):
            self._hang_up()  # the server did it; the client never hears
            return
        if self.plan.take_stall(self.path):
            time.sleep(self.plan.stall_seconds)
        if self.plan.rewrite is not None:
            data = self.plan.rewrite(self.command, self.path, data)
        if (self.command == "GET" and "blobs" in self.path and response.status in (200, 206)
                and len(data) > 64 and self.plan.take_truncation()):
            data = data[: len(data) // 2]
        self.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command == "HEAD":
            return
        if self.plan.trickle_always:
            try:
                for i in range(len(data)):
                    self.wfile.write(data[i:i + 1])
                    self.wfile.flush()
                    time.sleep(self.plan.trickle_delay)
            except OSError:  # the client gave up, as it should
                self.close_connection = True
            return
        self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = _forward


def serve(handler: Callable[..., BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def start_proxy(target: str, plan: FaultPlan) -> ThreadingHTTPServer:
    handler = type("Proxy", (_ProxyHandler,), {"target": target, "plan": plan})
    return serve(handler)


class _QuietFiles(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def start_static(directory: Path) -> ThreadingHTTPServer:
    """A plain static file server, as a public bucket's web address would be."""
    return serve(partial(_QuietFiles, directory=str(directory)))


def address(server: ThreadingHTTPServer) -> str:
    host, port = server.server_address[:2]
    return f"http://{host!s}:{port}"


@dataclass
class ProxiedGCS:
    """A GCS store, and a fault proxy in front of its server that ``plan`` drives."""

    backend: Backend  # reached directly: its url, and an env without the proxy
    plan: FaultPlan
    address: str  # the proxy's http://host:port

    @property
    def env(self) -> dict[str, str]:
        """The environment that sends every request through the proxy."""
        return {**self.backend.env, "STORAGE_EMULATOR_HOST": self.address}
