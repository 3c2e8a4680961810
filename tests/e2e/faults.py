"""A fault-injecting HTTP proxy and a static file server, both on loopback, in threads."""

import http.client
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit


@dataclass
class FaultPlan:
    fail_next: int = 0  # answer the next N requests with 500
    fail_always: bool = False
    truncate_next: int = 0  # cut the next N GET bodies of blobs in half (and lie about it)
    requests: int = 0
    methods: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self) -> str:
        with self.lock:
            self.requests += 1
            if self.fail_always:
                return "fail"
            if self.fail_next > 0:
                self.fail_next -= 1
                return "fail"
            return "pass"

    def take_truncation(self) -> bool:
        with self.lock:
            if self.truncate_next > 0:
                self.truncate_next -= 1
                return True
            return False


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    target: str
    plan: FaultPlan

    def log_message(self, *args: object) -> None:
        pass

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        self.plan.methods.append(self.command)
        if self.plan.take() == "fail":
            payload = b"injected failure"
            self.send_response(500)
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
        if (self.command == "GET" and "blobs" in self.path and response.status == 200
                and len(data) > 64 and self.plan.take_truncation()):
            data = data[: len(data) // 2]
        self.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        conn.close()

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
