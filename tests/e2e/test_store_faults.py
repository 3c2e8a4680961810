"""Object stores misbehaving: retries, bounded failure, truncated bodies, bad buckets,
wrong credentials, a missing optional extra."""

import time
from pathlib import Path
from typing import Any

import pytest

from pitreos.errors import StoreNotFound
from pitreos.manifest import RESTORE_MARKER
from pitreos.stores import open_store

from .faults import FaultPlan, ProxiedGCS, address, start_proxy, start_static
from .helpers import CHUNK, Runner, assert_same_tree
from .servers import unique_bucket


def _published(run: Runner, tree: Path, tmp_path: Path, plan: FaultPlan) -> tuple[str, Any]:
    """Back up ``tree`` to a local store, serve it over HTTP behind a faulty proxy."""
    run("backup", str(tree), "--chunk-size", str(CHUNK)).ok()
    static = start_static(tmp_path / "store")
    proxy = start_proxy(address(static), plan)
    return address(proxy), (static, proxy)


def test_server_that_fails_then_recovers(run: Runner, tree: Path, tmp_path: Path) -> None:
    plan = FaultPlan()
    url, servers = _published(run, tree, tmp_path, plan)
    try:
        plan.fail_next = 4
        dest = tmp_path / "dest"
        run("restore", "latest", str(dest), store=url, catalog=tmp_path / "c.sqlite").ok()
        assert_same_tree(tree, dest)
        assert plan.fail_next == 0  # the failures happened and were retried
    finally:
        for s in servers:
            s.shutdown()


def test_server_that_keeps_failing(run: Runner, tree: Path, tmp_path: Path) -> None:
    plan = FaultPlan()
    url, servers = _published(run, tree, tmp_path, plan)
    try:
        run("list", store=url, catalog=tmp_path / "c.sqlite").ok()
        plan.fail_always = True
        started = time.monotonic()
        dest = tmp_path / "dest"
        run("--retry-for", "5s", "restore", "latest", str(dest), store=url,
            catalog=tmp_path / "c.sqlite").fails(url, "HTTP 500", "gave up after",
                                                 "--retry-for sets how long")
        assert time.monotonic() - started < 5 + 10  # bounded by --retry-for
        assert not (dest / "state").exists() or (dest / ".pitreos-restore").exists()
    finally:
        for s in servers:
            s.shutdown()


def test_blob_truncated_in_transit(run: Runner, tree: Path, tmp_path: Path) -> None:
    """The proxy cuts blob bodies and fixes up Content-Length: only the hash check can
    tell, and the blob is fetched again."""
    plan = FaultPlan()
    url, servers = _published(run, tree, tmp_path, plan)
    try:
        plan.truncate_next = 3
        dest = tmp_path / "dest"
        result = run("-v", "restore", "latest", str(dest), store=url,
                     catalog=tmp_path / "c.sqlite").ok()
        assert "blob.refetch" in result.stderr
        assert plan.truncate_next == 0
        assert_same_tree(tree, dest)
    finally:
        for s in servers:
            s.shutdown()


def test_gcs_server_errors_during_backup(run: Runner, tree: Path, tmp_path: Path,
                                         gcs_behind_proxy: ProxiedGCS) -> None:
    """fake-gcs-server behind the proxy: writes fail a few times, the backup succeeds;
    when they keep failing, the backup fails and leaves no manifest."""
    plan, url, env = gcs_behind_proxy.plan, gcs_behind_proxy.backend.url, gcs_behind_proxy.env
    plan.fail_next = 5
    run("backup", str(tree), "--chunk-size", str(CHUNK), store=url, env=env).ok()
    assert plan.fail_next == 0
    plan.fail_always = True
    (tree / "new.bin").write_bytes(b"fresh data" * 1000)
    run("--retry-for", "5s", "backup", str(tree), "--chunk-size", str(CHUNK),
        store=url, env=env).fails(url, "gave up")
    plan.fail_always = False
    listing = run("list", store=url, env=env,
                  catalog=tmp_path / "fresh.sqlite").ok().stdout.splitlines()
    assert len(listing) == 1  # the failed backup left no manifest


def test_gcs_refusals_of_object_requests_name_the_cause(
        run: Runner, tree: Path, tmp_path: Path, gcs_behind_proxy: ProxiedGCS) -> None:
    """A 403 on the object requests (which bypass the SDK) is access denied, exit 12, at
    once: on writes the backup leaves no manifest, on reads the restore leaves nothing
    that looks restored; a 429 is transient and retried."""
    plan, url, env = gcs_behind_proxy.plan, gcs_behind_proxy.backend.url, gcs_behind_proxy.env
    run("backup", str(tree), "--chunk-size", str(CHUNK), store=url, env=env).ok()
    plan.fail_always, plan.fail_status, plan.fail_match = True, 403, "^/upload/"
    (tree / "new.bin").write_bytes(b"fresh data" * 1000)
    started = time.monotonic()
    run("backup", str(tree), "--chunk-size", str(CHUNK), store=url, env=env).fails(
        "access denied: the credentials lack a permission", code=12)
    plan.fail_match = "^/download/.*blobs%2F"  # the manifest is read, a blob is not
    dest = tmp_path / "dest"
    run("restore", "latest", str(dest), store=url, env=env,
        catalog=tmp_path / "fresh.sqlite").fails(
        "cannot read blobs/", "access denied: the credentials lack a permission", code=12)
    assert time.monotonic() - started < 30  # neither was retried for --retry-for
    assert (dest / RESTORE_MARKER).exists()  # what it wrote says it is unfinished
    plan.fail_always, plan.fail_status, plan.fail_next = False, 429, 3
    listing = run("list", store=url, env=env,
                  catalog=tmp_path / "fresh.sqlite").ok().stdout.splitlines()
    assert len(listing) == 1  # the refused backup left no manifest
    run("restore", "latest", str(dest), store=url, env=env,
        catalog=tmp_path / "fresh.sqlite").ok()
    assert plan.fail_next == 0  # three downloads were throttled, and retried
    (tree / "new.bin").unlink()
    assert_same_tree(tree, dest)


def test_gcs_refusing_anonymous_access_says_no_credentials_were_found(
        run: Runner, tree: Path, tmp_path: Path, gcs_behind_proxy: ProxiedGCS) -> None:
    """Without credentials pitreos asks GCS anonymously; a private bucket answers 401.
    That is access denied (exit 12) naming the missing credentials, on the SDK's listing
    and on the object requests alike, not "Anonymous credentials cannot be refreshed"
    (exit 1)."""
    plan, url, env = gcs_behind_proxy.plan, gcs_behind_proxy.backend.url, gcs_behind_proxy.env
    run("backup", str(tree), "--chunk-size", str(CHUNK), store=url, env=env).ok()
    plan.fail_always, plan.fail_status, plan.fail_match = True, 401, "^/storage/"
    run("list", store=url, env=env, catalog=tmp_path / "a.sqlite").fails(
        "cannot open store", "no Google credentials were found", code=12)
    plan.fail_match = "^/download/.*blobs%2F"  # the manifest is read, a blob is not
    run("restore", "latest", str(tmp_path / "dest"), store=url, env=env,
        catalog=tmp_path / "b.sqlite").fails(
        "cannot read blobs/", "no Google credentials were found", code=12)


def test_gcs_requests_go_through_the_proxy_the_environment_names(
        run: Runner, tree: Path, tmp_path: Path, gcs_behind_proxy: ProxiedGCS) -> None:
    """HTTP_PROXY and NO_PROXY hold for every request to GCS, the object requests
    included: with the endpoint a name that never resolves, only the proxy (which
    forwards what it is sent) reaches it."""
    plan, url, proxy = gcs_behind_proxy.plan, gcs_behind_proxy.backend.url, \
        gcs_behind_proxy.address
    env = {**gcs_behind_proxy.backend.env,
           "STORAGE_EMULATOR_HOST": "http://gcs.pitreos.invalid:4443",
           "HTTP_PROXY": proxy, "http_proxy": proxy, "NO_PROXY": "", "no_proxy": ""}
    run("backup", str(tree), "--chunk-size", str(CHUNK), store=url, env=env).ok()
    assert {"GET", "POST"} <= set(plan.methods)  # the listing and the uploads
    dest = tmp_path / "dest"
    run("restore", "latest", str(dest), store=url, env=env,
        catalog=tmp_path / "fresh.sqlite").ok()
    assert_same_tree(tree, dest)
    bypassed = {**env, "NO_PROXY": "gcs.pitreos.invalid", "no_proxy": "gcs.pitreos.invalid"}
    requests_before = plan.requests
    run("--retry-for", "1s", "list", store=url, env=bypassed,
        catalog=tmp_path / "other.sqlite").fails(url, code=1)
    assert plan.requests == requests_before


def test_bucket_that_does_not_exist(run: Runner, servers: dict[str, Any],
                                    tmp_path: Path) -> None:
    missing = unique_bucket()
    cases = {
        "gcs": f"gs://{missing}/x",
        "s3": f"s3://{missing}/x?endpoint={servers['s3'].endpoint}",
        "azure": f"azblob://{missing}/x",
    }
    for name, url in cases.items():
        run("list", store=url, env=servers[name].env,
            catalog=tmp_path / f"{name}.sqlite").fails(url, "does not exist", code=10)


def test_a_bucket_gone_under_a_write_is_a_missing_store(servers: dict[str, Any],
                                                        monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    """A write to a bucket or container that is gone (deleted while a backup runs) is
    "store does not exist" (exit 10), as on opening, not a bare HTTP 404 (exit 1). Not
    S3: SeaweedFS creates a bucket on the first write to it."""
    missing = unique_bucket()
    for name, url in (("gcs", f"gs://{missing}/x"), ("azure", f"azblob://{missing}/x")):
        for key, value in servers[name].env.items():
            monkeypatch.setenv(key, value)
        with pytest.raises(StoreNotFound, match="does not exist"):
            open_store(url, retry_for=1).put("blobs/ab/x", b"data")


def test_wrong_credentials(run: Runner, servers: dict[str, Any], tmp_path: Path) -> None:
    from .servers import create_azure_container, create_s3_bucket

    s3 = create_s3_bucket(servers["s3"])
    bad_secret = "wrong-secret-value-123"
    result = run("list", store=s3.url, env={**s3.env, "AWS_SECRET_ACCESS_KEY": bad_secret},
                 catalog=tmp_path / "s3.sqlite").fails("access denied", "credentials", code=12)
    assert bad_secret not in result.stderr
    azure = create_azure_container(servers["azure"])
    conn = azure.env["AZURE_STORAGE_CONNECTION_STRING"]
    key = conn.split("AccountKey=")[1].split(";")[0]
    wrong_key = "A" * (len(key) - 2) + "=="
    result = run("list", store=azure.url,
                 env={"AZURE_STORAGE_CONNECTION_STRING": conn.replace(key, wrong_key)},
                 catalog=tmp_path / "az.sqlite").fails("access denied", code=12)
    assert wrong_key not in result.stderr and key not in result.stderr


def test_no_aws_credentials_says_so(run: Runner, servers: dict[str, Any],
                                    tmp_path: Path) -> None:
    """Without any AWS credentials (none in the environment, no files, no instance
    metadata) the S3 store says so, exit 12, instead of an unsigned request's 403."""
    from .servers import create_s3_bucket

    s3 = create_s3_bucket(servers["s3"])
    env = {key: value for key, value in s3.env.items() if not key.startswith("AWS_")}
    env.update({"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "",
                "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
                "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_EC2_METADATA_DISABLED": "true"})
    run("list", store=s3.url, env=env, catalog=tmp_path / "c.sqlite").fails(
        "no AWS credentials found", code=12)


def test_missing_optional_extra(run: Runner, tmp_path: Path) -> None:
    """boto3 made unimportable: a one-line hint to install the extra."""
    shadow = tmp_path / "shadow/boto3"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'boto3'\", name='boto3')\n")
    run("list", store="s3://bucket/prefix",
        env={"PYTHONPATH": str(tmp_path / "shadow")}).fails(
        "needs the optional 's3' extra", "pip install 'pitreos[s3]'", code=2)


def test_gcs_body_truncated_in_transit(run: Runner, tree: Path, tmp_path: Path,
                                      gcs_behind_proxy: ProxiedGCS) -> None:
    """A GCS body cut short behind a consistent Content-Length fails the client's crc32c
    check: it is fetched again, as on every backend, and the restore succeeds."""
    plan, url, env = gcs_behind_proxy.plan, gcs_behind_proxy.backend.url, gcs_behind_proxy.env
    run("backup", str(tree), "--chunk-size", str(CHUNK), store=url, env=env).ok()
    plan.truncate_next = 3
    dest = tmp_path / "dest"
    run("restore", "latest", str(dest), store=url, env=env,
        catalog=tmp_path / "fresh.sqlite").ok()
    assert plan.truncate_next == 0  # three bodies were cut, and fetched again
    assert_same_tree(tree, dest)


def test_a_clock_off_by_hours_is_reported_as_such(run: Runner, servers: dict[str, Any],
                                                 tmp_path: Path) -> None:
    """S3 refuses requests signed more than 15 minutes off its clock: the error says to
    set the clock, at once (no retrying), instead of blaming the credentials."""
    import libfaketime

    from .servers import create_s3_bucket

    s3 = create_s3_bucket(servers["s3"])
    _, faked = libfaketime.get_reload_information()
    started = time.monotonic()
    run("list", store=s3.url, env={**s3.env, **faked, "FAKETIME": "+2h"},
        catalog=tmp_path / "c.sqlite").fails("clock differs", "RequestTimeTooSkewed", code=1)
    assert time.monotonic() - started < 20  # not retried for --retry-for


def test_s3_object_requests_fail_and_recover_as_boto3s_did(
        run: Runner, tree: Path, tmp_path: Path, servers: dict[str, Any]) -> None:
    """pitreos signs and sends S3's object requests itself, not through boto3 (half its
    CPU per request). SeaweedFS behind the fault proxy: a 503 is retried; a 301 (the
    bucket lives in another region) hands the requests to boto3, which follows such
    redirects; a body cut in transit fails the CRC32 check and is fetched again; a 403
    is access denied (exit 12) at once."""
    from .servers import create_s3_bucket

    backend = create_s3_bucket(servers["s3"])
    plan = FaultPlan()
    proxy = start_proxy(servers["s3"].endpoint, plan)
    try:
        url = backend.url.replace(servers["s3"].endpoint, address(proxy))
        plan.fail_next, plan.fail_status, plan.fail_match = 3, 503, "/blobs/"
        result = run("-v", "backup", str(tree), "--chunk-size", str(CHUNK), store=url,
                     env=backend.env).ok()
        assert plan.fail_next == 0 and result.stderr.count("store.retry") == 3
        plan.fail_next, plan.fail_status = 1, 301
        (tree / "new.bin").write_bytes(b"fresh data" * 1000)
        result = run("backup", str(tree), "--chunk-size", str(CHUNK), store=url,
                     env=backend.env).ok()
        assert plan.fail_next == 0 and "s3.other_region" in result.stderr
        plan.truncate_next = 3
        dest = tmp_path / "dest"
        result = run("-v", "restore", "latest", str(dest), store=url, env=backend.env,
                     catalog=tmp_path / "fresh.sqlite").ok()
        assert plan.truncate_next == 0
        assert result.stderr.count("body damaged in transit: crc32") == 3
        assert_same_tree(tree, dest)
        plan.fail_always, plan.fail_status = True, 403
        run("restore", "latest", str(tmp_path / "dest2"), store=url, env=backend.env,
            catalog=tmp_path / "fresh.sqlite").fails(
            "cannot read blobs/", "access denied (HTTP 403)", code=12)
    finally:
        proxy.shutdown()
