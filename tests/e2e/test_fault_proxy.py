"""A fault proxy in front of every object-store server (GCS, S3, Azure, and a store read
over plain HTTP): 500 and 503 answers, connection resets, bodies cut short behind a
consistent Content-Length, a dropped answer to the manifest upload, a stalled answer,
and an answer that trickles forever. Each operation succeeds after retries or fails
within its stated bound (--retry-for plus one --request-timeout), nothing is half
listed, and every downloaded byte is checked."""

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from pitreos.repository import MANIFEST_PREFIX
from pitreos.stores import open_store

from .faults import FaultPlan, address, start_proxy, start_static
from .helpers import CHUNK, Result, Runner, assert_same_tree
from .servers import (
    Backend,
    create_azure_container,
    create_gcs_bucket,
    create_s3_bucket,
    initialized,
)

BOUNDS = ("--request-timeout", "1s", "--retry-for", "4s")
PATIENT = ("--request-timeout", "5s", "--retry-for", "60s")  # room for five faults in a row


@dataclass
class Proxied:
    name: str
    plan: FaultPlan
    url: str  # through the proxy
    env: dict[str, str]
    writable: bool
    direct_url: str  # the same store, without the proxy
    direct_env: dict[str, str]
    upload_method: str


@contextmanager
def _proxied(kind: str, servers: dict[str, Any], tmp_path: Path) -> Iterator[Proxied]:
    plan = FaultPlan()
    if kind == "http":
        initialized(Backend("file", (tmp_path / "store").as_uri(), {}))
        static = start_static(tmp_path / "store")
        proxy = start_proxy(address(static), plan)
        try:
            yield Proxied(kind, plan, address(proxy), {}, False, (tmp_path / "store").as_uri(),
                          {}, "PUT")
        finally:
            proxy.shutdown()
            static.shutdown()
        return
    server = servers[kind]
    if kind == "gcs":
        backend = create_gcs_bucket(server)
        proxy = start_proxy(server.endpoint, plan)
        env = {**backend.env, "STORAGE_EMULATOR_HOST": address(proxy)}
        url, method = backend.url, "POST"
    elif kind == "s3":
        backend = create_s3_bucket(server)
        proxy = start_proxy(server.endpoint, plan)
        env, method = backend.env, "PUT"
        url = backend.url.replace(server.endpoint, address(proxy))
    else:
        backend = create_azure_container(server)
        host = server.endpoint.rsplit("/", 1)[0]
        proxy = start_proxy(host, plan)
        conn = backend.env["AZURE_STORAGE_CONNECTION_STRING"]
        env = {"AZURE_STORAGE_CONNECTION_STRING": conn.replace(host, address(proxy))}
        url, method = backend.url, "PUT"
    try:
        yield Proxied(kind, plan, url, env, True, backend.url, backend.env, method)
    finally:
        proxy.shutdown()


@pytest.fixture(params=["gcs", "s3", "azure", "http"])
def proxied(request: pytest.FixtureRequest, servers: dict[str, Any], tmp_path: Path
            ) -> Iterator[Proxied]:
    with _proxied(request.param, servers, tmp_path) as p:
        yield p


@pytest.fixture(params=["gcs", "s3", "azure"])
def writable(request: pytest.FixtureRequest, servers: dict[str, Any], tmp_path: Path
             ) -> Iterator[Proxied]:
    """The stores that take uploads (a store read over HTTP does not)."""
    with _proxied(request.param, servers, tmp_path) as p:
        yield p


def through(run: Runner, p: Proxied, tmp_path: Path) -> Runner:
    return partial(run, store=p.url, env=p.env, catalog=tmp_path / "proxied.sqlite")


def direct(run: Runner, p: Proxied, tmp_path: Path) -> Runner:
    return partial(run, store=p.direct_url, env=p.direct_env,
                   catalog=tmp_path / "direct.sqlite")


def seed(run: Runner, p: Proxied, tree: Path, tmp_path: Path) -> str:
    """A backup in the store, written around the proxy."""
    result = direct(run, p, tmp_path)("backup", str(tree), "--chunk-size", str(CHUNK))
    return str(result.ok().stdout.strip())


def manifests(p: Proxied, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    for key, value in p.direct_env.items():
        monkeypatch.setenv(key, value)
    store = open_store(p.direct_url)
    return sorted(i.key for i in store.list(MANIFEST_PREFIX) if i.key.endswith(".yaml"))


def test_errors_resets_and_cut_bodies_are_retried(run: Runner, proxied: Proxied, tree: Path,
                                                  tmp_path: Path) -> None:
    cli = through(run, proxied, tmp_path)
    plan = proxied.plan
    if proxied.writable:
        plan.fail_next, plan.fail_status, plan.reset_next = 3, 503, 2
        cli(*PATIENT, "backup", str(tree), "--chunk-size", str(CHUNK)).ok()
        assert plan.fail_next == plan.reset_next == 0
    else:
        seed(run, proxied, tree, tmp_path)
    plan.fail_next, plan.fail_status, plan.reset_next, plan.truncate_next = 2, 500, 2, 3
    dest = tmp_path / "dest"
    cli(*PATIENT, "restore", "latest", str(dest)).ok()
    assert plan.fail_next == plan.reset_next == plan.truncate_next == 0
    assert_same_tree(tree, dest)
    direct(run, proxied, tmp_path)("verify", "--all", "--deep").ok()


def test_a_dropped_answer_to_the_manifest_upload(run: Runner, writable: Proxied, tree: Path,
                                                 tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    plan = writable.plan
    plan.drop_next, plan.drop_match = 1, (writable.upload_method, "manifests/")
    result = through(run, writable, tmp_path)(*PATIENT, "backup", str(tree), "--chunk-size",
                                              str(CHUNK)).ok()
    assert plan.drop_next == 0  # the answer was dropped, the write had happened
    name = result.stdout.strip()
    assert manifests(writable, monkeypatch) == [f"{MANIFEST_PREFIX}{name}.yaml"]


def test_a_stall_is_cut_and_retried_a_trickle_fails_within_the_bound(
        run: Runner, proxied: Proxied, tree: Path, tmp_path: Path) -> None:
    name = seed(run, proxied, tree, tmp_path)
    cli = through(run, proxied, tmp_path)
    plan = proxied.plan
    cli(*BOUNDS, "list").ok()  # the catalog is synced: what follows reads blobs
    plan.stall_next, plan.stall_seconds = 1, 3.0
    dest = tmp_path / "dest"
    cli(*BOUNDS, "restore", name, str(dest)).ok()
    assert plan.stall_next == 0
    assert_same_tree(tree, dest)
    plan.trickle_always, plan.trickle_delay = True, 0.5
    started = time.monotonic()
    failed: Result = cli(*BOUNDS, "restore", name, str(tmp_path / "dest2"))
    elapsed = time.monotonic() - started
    failed.fails("no answer within 1 s", "gave up", code=1)
    assert elapsed < 4 + 1 + 8  # --retry-for + --request-timeout + start-up and slack
    dest2 = tmp_path / "dest2"  # nothing looks restored
    assert not dest2.exists() or (dest2 / ".pitreos-restore").exists()
