"""Requests in flight to an object store far away (issue 15, target 3): through a real
latency proxy (tools/latency_proxy.py, 50 ms each way) in front of the real GCS test
server, the limit grows from its start to what the link needs, the user's --parallel
fixes it, and the bytes come back right."""

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .helpers import CHUNK, Runner, assert_same_tree, document
from .servers import Backend, create_gcs_bucket, load_tool


@pytest.fixture
def far_gcs(servers: dict[str, Any]) -> Iterator[Backend]:
    """A fresh bucket on the GCS server, reached through 100 ms round trips."""
    backend = create_gcs_bucket(servers["gcs"])
    proxy = load_tool("latency_proxy").start(backend.env["STORAGE_EMULATOR_HOST"], delay=0.05)
    try:
        yield Backend("gcs", backend.url, {**backend.env,
                                           "STORAGE_EMULATOR_HOST": proxy.endpoint})
    finally:
        proxy.stop()


def _data(root: Path) -> Path:
    (root / "d").mkdir(parents=True)
    (root / "d/random.bin").write_bytes(os.urandom(400 * CHUNK))  # 400 blobs
    return root


def test_requests_in_flight_grow_to_fill_a_far_link(run: Runner, far_gcs: Backend,
                                                    tmp_path: Path) -> None:
    source = _data(tmp_path / "src")
    env = far_gcs.env

    def pitreos(*args: str) -> dict[str, Any]:
        result = run("--json", *args, store=far_gcs.url, env=env,
                     catalog=tmp_path / "catalog.sqlite", timeout=300)
        return document(result.ok(), args[0])

    backup = pitreos("backup", "--chunk-size", str(CHUNK), str(source))
    assert backup["blobs_stored"] == 400
    flight = backup["requests_in_flight"]
    # from 8, the limit doubled at least twice: 100 ms round trips want many in flight
    assert flight["adaptive"] is True and flight["highest"] >= 32
    restore = pitreos("restore", "latest", str(tmp_path / "dest"))
    assert restore["requests_in_flight"]["highest"] >= 32
    assert_same_tree(source, tmp_path / "dest")

    fixed = pitreos("restore", "--parallel", "4", "latest", str(tmp_path / "dest2"))
    assert fixed["requests_in_flight"] == {"limit": 4, "highest": 4, "adaptive": False}
    assert_same_tree(source, tmp_path / "dest2")


def test_large_chunks_keep_fewer_requests_in_flight(run: Runner, far_gcs: Backend,
                                                   tmp_path: Path) -> None:
    """Each request in flight may hold a chunk: with 64 MiB chunks an adaptive limit
    stays at 2 (128 MiB in all) for the backup and for the restore, which reads the
    chunk size from the backup, not from the store's default."""
    source = tmp_path / "src"
    source.mkdir()
    (source / "small.bin").write_bytes(os.urandom(3 * CHUNK))

    def pitreos(*args: str) -> dict[str, Any]:
        result = run("--json", *args, store=far_gcs.url, env=far_gcs.env,
                     catalog=tmp_path / "catalog.sqlite", timeout=300)
        return document(result.ok(), args[0])

    backup = pitreos("backup", "--chunk-size", str(64 << 20), str(source))
    assert backup["requests_in_flight"] == {"limit": 2, "highest": 2, "adaptive": True}
    restore = pitreos("restore", "latest", str(tmp_path / "dest"))
    assert restore["requests_in_flight"] == {"limit": 2, "highest": 2, "adaptive": True}
    assert_same_tree(source, tmp_path / "dest")


def test_a_local_store_reports_no_requests_in_flight(run: Runner, tmp_path: Path) -> None:
    source = _data(tmp_path / "src")
    store, catalog = (tmp_path / "s").as_uri(), tmp_path / "c.sqlite"
    run("init", store=store, catalog=catalog).ok()
    backup = document(run("--json", "backup", str(source), store=store, catalog=catalog),
                      "backup")
    assert backup["requests_in_flight"] is None
