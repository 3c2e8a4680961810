"""The test servers' own start (tools/servers.py): a SeaweedFS whose ports were taken
between their choice and its bind is started again on others, and a server that dies
mid-session fails its tests with its log, not with refused connections."""

import socket
from collections.abc import Iterator
from typing import Any

import pytest

from .servers import create_s3_bucket, load_tool


@pytest.fixture
def tools() -> Any:
    return load_tool("servers")


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port another process could have taken: bound and listening, never answering."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def taking_first(tools: Any, port: int, monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """Make the next start's master port ``port``, taken meanwhile; the rest are chosen
    as usual. What is left of the returned iterator tells whether it was offered."""
    chosen = iter([port])
    real_pair = tools._port_pair
    monkeypatch.setattr(tools, "_port_pair", lambda: next(chosen, None) or real_pair())
    return chosen


def test_seaweedfs_is_started_again_when_its_port_was_taken(
        tools: Any, held_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    chosen = taking_first(tools, held_port, monkeypatch)
    with pytest.warns(RuntimeWarning, match=r"seaweedfs start 1 of 3 failed, trying other "
                                            r"ports: seaweedfs exited with"):
        server = tools.start_s3()
    try:
        assert server.died() is None
        assert f":{held_port}" not in server.endpoint
        bucket = create_s3_bucket(server)  # the gateway serves a bucket: it is really up
        assert bucket.url.startswith("s3://")
    finally:
        server.stop()
    assert next(chosen, None) is None  # the taken port was offered, and passed over


def test_seaweedfs_that_cannot_start_names_its_log(
        tools: Any, held_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    taking_first(tools, held_port, monkeypatch)
    with pytest.raises(tools.ServerError, match=r"seaweedfs did not start in 1 try; the "
                                                r"last: seaweedfs exited with \d+: .*\S"):
        tools.start_s3(attempts=1)


def test_a_server_that_dies_mid_session_says_so_with_its_log(tools: Any) -> None:
    server = tools.start_gcs()
    try:
        assert server.died() is None
        server.process.kill()
        server.process.wait()
        died = server.died()
        assert died is not None
        assert died.startswith("gcs server exited with -9; its log ends:")
    finally:
        server.stop()
