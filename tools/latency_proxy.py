#!/usr/bin/env python3
"""A TCP proxy on loopback that makes a local server look far away: every byte is held
for ``--delay`` seconds in each direction (a round trip costs twice that), and all
connections together move at most ``--rate`` bytes a second each way.

    python3 tools/latency_proxy.py --upstream 127.0.0.1:4443 --delay 0.02 --rate 50MB

It prints ``listening on PORT`` once ready and runs until killed. The kernel's netem
would do this for loopback, but this machine's kernel has no netem (tc: "Specified
qdisc kind is unknown"), so the delay is applied here, in a process of its own so that
its CPU never counts against the program measured. Used by ``tools/bench.py``
(target 3 of issue 15) and by the tests of adaptive concurrency.
"""

import argparse
import asyncio
import contextlib
import re
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from urllib.parse import urlsplit

_READ = 256 << 10


@dataclass
class Bucket:
    """A token bucket shared by every connection in one direction."""

    rate: float  # bytes a second; 0: no cap
    tokens: float = 0.0
    stamp: float = field(default_factory=time.monotonic)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def take(self, n: int) -> None:
        if not self.rate:
            return
        async with self.lock:  # first come, first served
            now = time.monotonic()
            # at most 10 ms of credit: a burst never exceeds the link
            self.tokens = min(self.rate * 0.01, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            self.tokens -= n
            if self.tokens < 0:
                await asyncio.sleep(-self.tokens / self.rate)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float,
                bucket: Bucket) -> None:
    """Forward what ``reader`` gives, each piece ``delay`` seconds after it arrived."""
    pending: deque[tuple[float, bytes]] = deque()
    arrived = asyncio.Event()
    done = False

    async def receive() -> None:
        nonlocal done
        try:
            while data := await reader.read(_READ):
                pending.append((time.monotonic() + delay, data))
                arrived.set()
        finally:
            done = True
            arrived.set()

    receiver = asyncio.ensure_future(receive())
    try:
        while True:
            if not pending:
                if done:
                    break
                arrived.clear()
                await arrived.wait()
                continue
            due, data = pending.popleft()
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            await bucket.take(len(data))
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        receiver.cancel()
        if writer.can_write_eof():
            with contextlib.suppress(OSError):
                writer.write_eof()


async def _serve(upstream: tuple[str, int], delay: float, rate: float, port: int) -> None:
    up, down = Bucket(rate), Bucket(rate)

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(*upstream)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(_pump(client_r, server_w, delay, up),
                             _pump(server_r, client_w, delay, down),
                             return_exceptions=True)
        for w in (client_w, server_w):
            w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    print(f"listening on {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


@dataclass
class LatencyProxy:
    """A proxy started by :func:`start`, in a process of its own."""

    process: subprocess.Popen[str]
    port: int

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


def start(upstream: str, delay: float, rate: str = "0") -> LatencyProxy:
    """Start a proxy in front of ``upstream`` (``http://host:port`` or ``host:port``)."""
    parts = urlsplit(upstream if "//" in upstream else f"//{upstream}")
    proc = subprocess.Popen([sys.executable, __file__, "--upstream",
                             f"{parts.hostname}:{parts.port}", "--delay", str(delay),
                             "--rate", rate], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    first = proc.stdout.readline()
    if not first.startswith("listening on "):
        proc.kill()
        raise RuntimeError(f"the latency proxy did not start: {first!r}")
    return LatencyProxy(proc, int(first.split()[-1]))


def parse_rate(text: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMG]?)B?", text.strip(), re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError(f"invalid rate {text!r}: use e.g. 50MB")
    scale = {"": 1, "K": 1e3, "M": 1e6, "G": 1e9}[match.group(2).upper()]
    return float(match.group(1)) * scale


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream", required=True, help="HOST:PORT of the real server")
    parser.add_argument("--delay", type=float, default=0.02, help="seconds, each way")
    parser.add_argument("--rate", type=parse_rate, default=0.0,
                        help="bytes a second each way, all connections together (0: none)")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    host, _, port = args.upstream.rpartition(":")
    asyncio.run(_serve((host or "127.0.0.1", int(port)), args.delay, args.rate, args.port))


if __name__ == "__main__":
    main()
