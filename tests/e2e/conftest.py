"""Fixtures: a CLI runner against a store in a temporary directory, and a sparse tree."""

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .faults import FaultPlan, ProxiedGCS, address, start_proxy
from .helpers import CHUNK, Result, Runner, make_sparse, written_long_ago
from .servers import CREATORS, Backend, create_gcs_bucket, initialized, load_tool


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    """A store made by ``pitreos init`` in tmp_path."""
    return initialized(Backend("file", (tmp_path / "store").as_uri(), {})).url


@pytest.fixture
def run(tmp_path: Path, store_url: str) -> Runner:
    """Run the real CLI in a subprocess against a store and catalog in tmp_path."""

    def runner(*args: str, store: str | None = None, catalog: Path | None = None,
               env: dict[str, str] | None = None, timeout: float = 120) -> Result:
        full_env = {**os.environ, "PITREOS_STORE": store or store_url,
                    "PITREOS_CATALOG": str(catalog or tmp_path / "catalog.sqlite"),
                    **(env or {})}
        full_env.pop("PITREOS_TRACEBACK", None)
        proc = subprocess.run([sys.executable, "-m", "pitreos", *args], env=full_env,
                              capture_output=True, text=True, timeout=timeout,
                              cwd=tmp_path)
        return Result(proc.returncode, proc.stdout, proc.stderr)

    return runner


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A small node-like tree: sparse files with holes at the start, middle and end, an
    empty file, one smaller than a chunk, one not a multiple of the chunk size, a
    symlink, an empty directory, unusual modes."""
    root = tmp_path / "src"
    rnd = os.urandom
    # hole at the start, data in the middle, hole at the end
    make_sparse(root / "state/shared_memory.bin", 40 * CHUNK,
                [(5 * CHUNK, rnd(3 * CHUNK)), (20 * CHUNK + 100, rnd(5000)),
                 (30 * CHUNK, bytes(CHUNK))])  # an allocated all-zero chunk
    # data at the start and the end, hole in the middle
    make_sparse(root / "state/code_cache.bin", 16 * CHUNK,
                [(0, rnd(CHUNK)), (15 * CHUNK, rnd(CHUNK))])
    (root / "blocks").mkdir(parents=True)
    (root / "blocks/blocks.log").write_bytes(rnd(1000) + b"block" * 40_000 + rnd(777))
    (root / "blocks/blocks.index").write_bytes(rnd(CHUNK * 3 + 17))
    (root / "small.txt").write_bytes(b"smaller than a chunk\n")
    (root / "empty.bin").write_bytes(b"")
    (root / "empty_dir").mkdir()
    (root / "protected").write_bytes(b"secret")
    os.chmod(root / "protected", 0o600)
    os.chmod(root / "empty_dir", 0o750)
    (root / "state/link").symlink_to("shared_memory.bin")
    (root / "dangling").symlink_to("/nonexistent/target")
    return written_long_ago(root)




@pytest.fixture(scope="session")
def servers() -> Iterator[dict[str, Any]]:
    """The storage servers, started lazily once per session and stopped at its end."""
    tools = load_tool("servers")
    started: dict[str, Any] = {}

    class Lazy(dict[str, Any]):
        def __missing__(self, name: str) -> Any:
            started[name] = tools.start(name)  # raises if it cannot start: tests fail
            self[name] = started[name]
            return started[name]

        def __getitem__(self, name: str) -> Any:
            server = super().__getitem__(name)
            died = server.died()
            if died:  # the test fails with the server's log, not a refused connection
                raise tools.ServerError(died)
            return server

    yield Lazy()
    for server in started.values():
        server.stop()


@pytest.fixture(params=["file", "gcs", "s3", "azure"])
def backend(request: pytest.FixtureRequest, servers: dict[str, Any],
            tmp_path: Path) -> Backend:
    """A fresh, empty store on each backend in turn."""
    if request.param == "file":
        return initialized(Backend("file", (tmp_path / "filestore").as_uri(), {}))
    return CREATORS[request.param](servers[request.param])


@pytest.fixture(params=["file", "gcs"])
def store(request: pytest.FixtureRequest, servers: dict[str, Any], tmp_path: Path,
          monkeypatch: pytest.MonkeyPatch) -> Backend:
    """The local store and an object store on its real server (GCS), in turn; the
    environment the clients need is set in this process too."""
    if request.param == "file":
        return initialized(Backend("file", (tmp_path / "store").as_uri(), {}))
    backend = CREATORS["gcs"](servers["gcs"])
    for key, value in backend.env.items():
        monkeypatch.setenv(key, value)
    return backend


@pytest.fixture
def cli(run: Runner, store: Backend) -> Runner:
    """The real CLI against ``store``."""

    def runner(*args: str, catalog: Path | None = None, env: dict[str, str] | None = None,
               timeout: float = 120) -> Result:
        return run(*args, store=store.url, catalog=catalog, env={**store.env, **(env or {})},
                   timeout=timeout)

    return runner


@pytest.fixture
def gcs_behind_proxy(servers: dict[str, Any]) -> Iterator[ProxiedGCS]:
    backend = create_gcs_bucket(servers["gcs"])
    plan = FaultPlan()
    proxy = start_proxy(servers["gcs"].endpoint, plan)
    try:
        yield ProxiedGCS(backend, plan, address(proxy))
    finally:
        proxy.shutdown()
