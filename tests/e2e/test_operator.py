"""What an operator drops into cron, systemd or Kubernetes: init, config profiles and the
environment, --json against its schemas, --metrics-file, progress off a terminal,
export as a sparse tar, and gc's soft-delete warning."""

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pitreos.sparse import allocated_bytes

from .faults import ProxiedGCS
from .helpers import CHUNK, SCHEMAS, Result, Runner, document, make_node, write_at
from .servers import CREATORS, Backend, azure_account, create_gcs_bucket, s3_client

# init


def test_a_store_must_be_initialized(run: Runner, tree: Path, tmp_path: Path) -> None:
    url = (tmp_path / "typo").as_uri()
    run("backup", str(tree), store=url).fails("no pitreos store at", "pitreos init",
                                              code=10)
    assert not (tmp_path / "typo").exists()  # nothing created by the mistake
    for command in (("list",), ("verify", "--all"), ("gc", "--keep-last", "1"), ("stats",)):
        run(*command, store=url).fails("no pitreos store at", code=10)
    made = document(run("--json", "init", "--chunk-size", "256KiB", store=url).ok(), "init")
    assert made["chunk_size"] == 256 << 10 and made["store"] == url
    run("init", store=url).fails("already a pitreos store", code=1)
    name = run("backup", str(tree), store=url).ok().stdout.strip()
    shown = document(run("show", name, "--json", store=url).ok(), "show")
    assert shown["chunk_size"] == 256 << 10  # the store's default chunk size


def test_an_empty_prefix_of_a_bucket_is_no_store(run: Runner, servers: dict[str, Any]
                                                  ) -> None:
    backend = create_gcs_bucket(servers["gcs"])
    typo = backend.url + "-typo"
    run("list", store=typo, env=backend.env).fails(f"no pitreos store at {typo}", code=10)
    run("init", store=typo, env=backend.env).ok()
    assert run("list", store=typo, env=backend.env).ok().stdout == ""


def test_the_default_store_needs_no_init(tree: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PITREOS_")}
    env |= {"XDG_DATA_HOME": str(tmp_path / "data"), "XDG_CACHE_HOME": str(tmp_path / "cache"),
            "XDG_CONFIG_HOME": str(tmp_path / "config")}

    def pitreos(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pitreos", *args], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)

    before = pitreos("list")  # before the first backup: nothing to list yet, and how
    assert before.returncode == 10
    assert before.stderr.startswith("pitreos: error: no backups yet: the default store ")
    assert "is created by the first `pitreos backup`" in before.stderr
    assert not (tmp_path / "data/pitreos/store").exists()
    assert pitreos("backup", str(tree)).returncode == 0
    assert (tmp_path / "data/pitreos/store/pitreos-store.json").is_file()
    assert pitreos("restore", "latest", str(tmp_path / "dst")).returncode == 0
    assert (tmp_path / "dst/small.txt").read_bytes() == (tree / "small.txt").read_bytes()


# config and environment


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_profiles_and_environment_precedence(run: Runner, tree: Path, tmp_path: Path,
                                             store_url: str) -> None:
    other = (tmp_path / "other").as_uri()
    run("init", store=other).ok()
    config = _config(tmp_path, f"""
[profile.node]
store = "{other}"
tag = "standard"
exclude = ["empty.bin", "dangling"]

[profile.node.gc]
keep-last = 1
grace = "0s"
""")
    catalog = tmp_path / "other.sqlite"

    def node(*args: str, env: dict[str, str] | None = None) -> Result:
        """With the profile; the runner's PITREOS_STORE emptied (as unset)."""
        return run("--config", str(config), "--profile", "node", *args, catalog=catalog,
                   env={"PITREOS_STORE": "", **(env or {})})

    # the profile's store and tag, and its exclude list
    name = node("backup", str(tree)).ok().stdout.strip()
    assert name.endswith("--standard")
    entries = document(node("files", name, "--json").ok(), "files")["entries"]
    paths = {e["path"] for e in entries}
    assert "small.txt" in paths and "empty.bin" not in paths and "dangling" not in paths
    assert len(run("list", store=other, catalog=catalog).ok().stdout.splitlines()) == 1
    assert run("list").ok().stdout == ""  # the default test store got nothing
    # environment beats profile, flag beats environment
    shown = document(node("config", "show", "--json",
                          env={"PITREOS_STORE": store_url, "PITREOS_TAG": "fromenv"}).ok(),
                     "config-show")
    rows = {(r["key"], tuple(r["commands"])): r for r in shown["settings"]}
    assert shown["profile"] == "node"
    assert rows[("store", ())] == {"key": "store", "value": store_url,
                                   "source": "env PITREOS_STORE", "commands": []}
    assert rows[("config", ())]["source"] == "flag"
    assert rows[("keep-last", ("gc",))]["source"].startswith("profile node")
    assert any(r["key"] == "tag" and r["source"] == "env PITREOS_TAG"
               for r in shown["settings"])
    from_profile = document(node("config", "show", "--json").ok(), "config-show")
    assert {r["key"]: r for r in from_profile["settings"]}["store"]["source"] == \
        f"profile node ({config})"
    flag = document(node("--store", store_url, "config", "show", "--json",
                         env={"PITREOS_STORE": other}).ok(), "config-show")
    assert {r["key"]: r for r in flag["settings"]}["store"] == {
        "key": "store", "value": store_url, "source": "flag", "commands": []}
    # PITREOS_GC_KEEP_LAST beats the profile's gc table: keep 2, so nothing is deleted
    node("backup", str(tree)).ok()
    kept = document(node("gc", "--json", env={"PITREOS_GC_KEEP_LAST": "2"}).ok(), "gc")
    assert kept["deleted_backups"] == []
    gone = document(node("gc", "--json").ok(), "gc")
    assert len(gone["deleted_backups"]) == 1  # the profile's keep-last = 1
    # a flag beats both
    assert document(node("gc", "--json", "--keep-last", "0", "--allow-empty").ok(),
                    "gc")["deleted_backups"]
    # a profile named default applies without --profile
    _config(tmp_path, f'[profile.default]\nstore = "{other}"\n')
    assert run("--config", str(config), "list", catalog=catalog,
               env={"PITREOS_STORE": ""}).ok().stdout == ""  # gc above deleted them all
    assert run("--config", str(config), "config", "show", catalog=catalog,
               env={"PITREOS_STORE": ""}).ok().stdout.count("profile default") == 1


@pytest.mark.parametrize(("text", "fragments"), [
    ("[profile.p]\nkeep-lst = 3\n", ("[profile.p] unknown key 'keep-lst'",
                                     "did you mean 'keep-last'")),
    ("[profile.p]\nkeep-last = 'many'\n", ("[profile.p] keep-last", "not a valid integer")),
    ("[profile.p]\nincremental = 'yes'\n", ("[profile.p] incremental must be true or false",)),
    ("[profile.p.gcc]\nkeep-last = 1\n", ("table 'gcc' that is no command",
                                          "did you mean 'gc'")),
    ("[profile.p.gc]\nincremental = true\n", ("[profile.p.gc] unknown key 'incremental'",)),
    ("[profile.q]\n", ("has no profile 'p'",)),
    ("[profile.p\n", ("is not valid TOML",)),
    ("store = 'x'\n", ("unknown table or key 'store'",)),
])
def test_a_bad_config_is_one_line_naming_file_and_key(run: Runner, tmp_path: Path, text: str,
                                                       fragments: tuple[str, ...]) -> None:
    config = _config(tmp_path, text)
    result = run("--config", str(config), "--profile", "p", "list")
    result.fails(str(config), *fragments, code=2)


def test_a_missing_config_file_or_profile(run: Runner, tmp_path: Path) -> None:
    run("--config", str(tmp_path / "nope.toml"), "list").fails("does not exist", code=2)
    run("list", env={"PITREOS_PROFILE": "p", "XDG_CONFIG_HOME": str(tmp_path)}).fails(
        "no profile 'p'", code=2)


# --json


def test_json_of_every_command_matches_its_schema(run: Runner, tmp_path: Path) -> None:
    node = make_node(tmp_path / "node")
    first = document(run("--json", "backup", str(node), "--chunk-size", str(CHUNK)).ok(),
                     "backup")
    assert isinstance(first["meta"]["block"], int)  # numbers typed as numbers
    assert isinstance(first["bytes_read"], int) and first["bytes_read"] > 0
    write_at(node / "state/shared_memory.bin", 5 * CHUNK, os.urandom(100))
    second = document(run("backup", str(node), "--json", "--chunk-size", str(CHUNK)).ok(),
                      "backup")
    old, new = first["backup"], second["backup"]
    listed = document(run("list", "--json", "--where", "block>=1").ok(), "list")
    assert [b["name"] for b in listed["backups"]] == [new, old]
    assert isinstance(listed["backups"][0]["meta"]["block"], int)
    document(run("show", old, "--json").ok(), "show")
    document(run("files", old, "--json").ok(), "files")
    changed = document(run("diff", old, new, "--json").ok(), "diff")
    assert changed["counts"]["changed"] == 1 and changed["chunks"] == 1
    dest = tmp_path / "restored"
    plan = document(run("restore", old, str(dest), "--dry-run", "--json").ok(), "restore")
    done = document(run("restore", old, str(dest), "--json").ok(), "restore")
    assert plan["bytes_to_fetch"] == done["bytes_fetched"] > 0  # the same measure
    document(run("verify", "--all", "--deep", "--json").ok(), "verify")
    document(run("stats", "--json").ok(), "stats")
    document(run("unlock", "--json").ok(), "unlock")
    document(run("catalog", "sync", "--json").ok(), "catalog-sync")
    document(run("catalog", "check", "--json").ok(), "catalog-check")
    document(run("export", old, "-o", str(tmp_path / "x.tar"), "--json").ok(), "export")
    other = (tmp_path / "other").as_uri()
    run("init", store=other).ok()
    document(run("copy", old, "--to", other, "--json").ok(), "copy")
    document(run("gc", "--keep-last", "1", "--grace", "0s", "--json").ok(), "gc")
    document(run("config", "show", "--json").ok(), "config-show")
    document(run("--json", "init", store=(tmp_path / "third").as_uri()).ok(), "init")
    # failures are documents too, with the exit code and the one-line error
    for args, code in ((("restore", "nosuchbackup", str(dest)), 1),
                       (("list", "--where", "block<=abc"), 2),
                       (("dump", new, "config.ini"), 2), (("--no-such-flag",), 2)):
        failed = json.loads(run("--json", *args).stdout)
        jsonschema.Draft202012Validator(json.loads(
            (SCHEMAS / "envelope.schema.json").read_text())).validate(failed)
        assert failed["ok"] is False and failed["exit_code"] == code and failed["error"]
    # a failing verify still carries the damage it found
    blobs = [p for p in (tmp_path / "store/blobs").rglob("*") if p.is_file()]
    assert blobs
    for path in blobs:
        path.unlink()
    damaged = run("verify", "--all", "--json")
    found = document(damaged, "verify")
    assert damaged.returncode == 1 and found["damage"] and found["broken_backups"]


def test_json_stdout_is_the_document_only(run: Runner, tree: Path) -> None:
    result = run("backup", str(tree), "--json").ok()
    json.loads(result.stdout)  # not the name line as well
    assert "backed up" not in result.stderr  # the summary is in the document


# --metrics-file


def _metrics(path: Path) -> dict[tuple[str, str, str], float]:
    out = {}
    for family in text_string_to_metric_families(path.read_text()):
        for sample in family.samples:
            out[(sample.name, sample.labels["operation"], sample.labels["tag"])] = sample.value
    return out


def test_metrics_file(run: Runner, tmp_path: Path) -> None:
    node = make_node(tmp_path / "node")
    prom = tmp_path / "textfile" / "pitreos.prom"
    flag = ("--metrics-file", str(prom))
    run(*flag, "backup", str(node), "--tag", "standard").ok()
    first = _metrics(prom)
    key = ("pitreos_last_success_timestamp_seconds", "backup", "standard")
    assert first[("pitreos_last_run_success", "backup", "standard")] == 1
    assert first[("pitreos_last_run_bytes_read", "backup", "standard")] > 0
    assert first[("pitreos_head_block", "backup", "standard")] > 0
    # another tag and other operations add their series; a failure keeps the last success
    run(*flag, "backup", str(node), "--tag", "history").ok()
    run(*flag, "backup", str(tmp_path / "missing"), "--tag", "standard").fails(code=2)
    run(*flag, "verify", "--all").ok()
    run(*flag, "gc", "--keep-last", "1").ok()
    run(*flag, "restore", "--tag", "standard", str(tmp_path / "dst")).ok()
    after = _metrics(prom)
    assert after[("pitreos_last_run_success", "backup", "standard")] == 0
    assert after[key] == first[key]
    assert after[("pitreos_head_block", "backup", "standard")] == \
        first[("pitreos_head_block", "backup", "standard")]
    assert after[("pitreos_last_run_success", "backup", "history")] == 1
    assert after[("pitreos_last_run_success", "verify", "")] == 1
    assert after[("pitreos_last_run_success", "gc", "")] == 1
    assert after[("pitreos_last_run_bytes_written", "restore", "standard")] > 0
    assert sorted(p.name for p in prom.parent.iterdir()) == ["pitreos.prom",
                                                             "pitreos.prom.lock"]


def test_metrics_file_that_cannot_be_written(run: Runner, tree: Path, tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    run("--metrics-file", str(tmp_path / "afile/x.prom"), "backup", str(tree)).fails(
        "--metrics-file", code=2)


# progress off a terminal


def test_progress_lines_off_a_terminal(run: Runner, tree: Path, tmp_path: Path,
                                       gcs_behind_proxy: ProxiedGCS
                                       ) -> None:
    plan, url, env = gcs_behind_proxy.plan, gcs_behind_proxy.backend.url, gcs_behind_proxy.env
    name = run("backup", str(tree), "--chunk-size", str(CHUNK), store=url,
               env=env).ok().stdout.strip()
    # one blob stalls: the restore is alive all the same
    plan.stall_next, plan.stall_seconds, plan.stall_match = 1, 3.5, "blobs%2F.*alt=media"
    restored = run("restore", name, str(tmp_path / "dst"), "--progress-interval", "1s",
                   "--parallel", "1", store=url, env=env).ok()
    lines = [ln for ln in restored.stderr.splitlines() if ln.startswith("pitreos: restore:")]
    assert len(lines) >= 2, restored.stderr
    assert "MiB" in lines[0] or "KiB" in lines[0] or " B " in lines[0]
    plan.stall_next = 1
    as_json = run("--log-json", "verify", "--all", "--deep", "--progress-interval", "1s",
                  "--parallel", "1", store=url, env=env).ok()
    events = [json.loads(ln) for ln in as_json.stderr.splitlines() if ln.startswith("{")]
    progress = [e for e in events if e.get("event") == "progress"]
    assert progress and progress[0]["unit"] == "blobs" and progress[0]["total"] > 0
    plan.stall_next = 1
    quiet = run("-q", "verify", "--all", "--deep", "--progress-interval", "1s", "--parallel",
                "1", store=url, env=env).ok()
    assert quiet.stderr == ""


# export


def test_export_is_a_sparse_tar_that_gnu_tar_extracts(run: Runner, tree: Path,
                                                      tmp_path: Path) -> None:
    gnu_tar = shutil.which("tar")
    assert gnu_tar is not None
    assert "GNU tar" in subprocess.run([gnu_tar, "--version"], capture_output=True,
                                       text=True, check=True).stdout
    big = tree / "state/big_sparse.bin"  # 64 MiB apparent, 2 chunks of data
    with open(big, "wb") as f:
        f.truncate(64 << 20)
    write_at(big, 1 << 20, os.urandom(CHUNK))
    write_at(big, (64 << 20) - CHUNK, os.urandom(CHUNK))  # data at the very end
    name = run("backup", str(tree), "--chunk-size", str(CHUNK)).ok().stdout.strip()
    stream = subprocess.run([sys.executable, "-m", "pitreos", "export", name],
                            env={**os.environ, "PITREOS_STORE": (tmp_path / "store").as_uri(),
                                 "PITREOS_CATALOG": str(tmp_path / "catalog.sqlite")},
                            capture_output=True, check=True, cwd=tmp_path).stdout
    data = sum(allocated_bytes(p) for p in tree.rglob("*") if p.is_file()
               and not p.is_symlink())
    assert len(stream) < data + 64 * 1024  # holes are not in the stream
    out = tmp_path / "extracted"
    out.mkdir()
    subprocess.run([gnu_tar, "-xf", "-", "-C", str(out)], input=stream, check=True)
    for path in tree.rglob("*"):
        rel = path.relative_to(tree)
        got = out / rel
        if path.is_symlink():
            assert os.readlink(got) == os.readlink(path)
        elif path.is_file():
            assert got.read_bytes() == path.read_bytes(), rel
            assert (got.stat().st_mode & 0o7777) == (path.stat().st_mode & 0o7777), rel
            assert allocated_bytes(got) <= allocated_bytes(path) + CHUNK, rel
        else:
            assert got.is_dir(), rel
    assert allocated_bytes(out / "state/big_sparse.bin") <= 3 * CHUNK
    # -o FILE: the same stream, and no .part file left behind
    run("export", name, "-o", str(tmp_path / "node.tar")).ok()
    assert (tmp_path / "node.tar").read_bytes() == stream
    assert not (tmp_path / "node.tar.part").exists()


def test_export_that_fails_leaves_no_file(run: Runner, tree: Path, tmp_path: Path) -> None:
    name = run("backup", str(tree)).ok().stdout.strip()
    for blob in (tmp_path / "store/blobs").rglob("*"):
        if blob.is_file():
            blob.write_bytes(b"damaged")
    run("export", name, "-o", str(tmp_path / "node.tar")).fails(code=1)
    assert not (tmp_path / "node.tar").exists()
    assert not (tmp_path / "node.tar.part").exists()


# gc and GCS soft delete


def _soft_delete(method: str, path: str, body: bytes) -> bytes:
    """What GCS answers for a bucket with soft delete on (fake-gcs-server has none)."""
    bucket_path = path.split("?")[0].rstrip("/")
    if method == "GET" and bucket_path.count("/") == 4 and "/storage/v1/b/" in bucket_path:
        doc = json.loads(body)
        doc["softDeletePolicy"] = {"retentionDurationSeconds": "604800"}
        return json.dumps(doc).encode()
    return body


def backups_changing_a_chunk(run: Runner, tree: Path, url: str, env: dict[str, str],
                             count: int = 2) -> None:
    """``count`` backups of ``tree``, a chunk changed after each: a gc that keeps only
    the last one has a blob to delete."""
    for _ in range(count):
        run("backup", str(tree), store=url, env=env).ok()
        write_at(tree / "small.txt", 0, os.urandom(8))


def gc_keeping_the_last(run: Runner, url: str, env: dict[str, str]
                        ) -> tuple[Result, dict[str, Any]]:
    """``gc --keep-last 1 --grace 0s --json``, which must delete a blob; its output and
    its document. It starts in the store's next whole second: S3 and Azure give times in
    whole seconds, so a blob written in the second in which gc reads the store's clock
    is not older than a grace of 0s, and is kept (seen when the backups and the gc ran
    within one second)."""
    time.sleep(1.01 - time.time() % 1)
    result = run("gc", "--keep-last", "1", "--grace", "0s", "--json", store=url, env=env)
    found = document(result.ok(), "gc")
    assert found["blobs_deleted"] >= 1, json.dumps(found) + result.stderr
    return result, found


def test_gc_warns_of_gcs_soft_delete(run: Runner, tree: Path, tmp_path: Path,
                                     gcs_behind_proxy: ProxiedGCS
                                     ) -> None:
    plan, url, env = gcs_behind_proxy.plan, gcs_behind_proxy.backend.url, gcs_behind_proxy.env
    backups_changing_a_chunk(run, tree, url, env)
    plain, found = gc_keeping_the_last(run, url, env)
    assert found["deleted_kept_seconds"] is None
    assert "soft delete" not in plain.stderr
    backups_changing_a_chunk(run, tree, url, env, count=1)
    plan.rewrite = _soft_delete
    warned, found = gc_keeping_the_last(run, url, env)
    assert found["blobs_deleted"] >= 1 and found["deleted_kept_seconds"] == 604800
    assert "soft delete" in warned.stderr and "7.0 more days" in warned.stderr


def _keep_deleted_s3(server: Any, backend: Backend, days: int | None) -> Callable[[], None]:
    """Versioning on the backend's bucket, with a lifecycle rule expiring noncurrent
    versions after ``days`` (None: no rule); returns how to undo it (nothing: the bucket
    is the test's own)."""
    client = s3_client(server)
    bucket = backend.url.removeprefix("s3://").split("/")[0]
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    if days is not None:
        client.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={
            "Rules": [{"ID": "old-versions", "Status": "Enabled", "Filter": {"Prefix": ""},
                       "NoncurrentVersionExpiration": {"NoncurrentDays": days}}]})
    return lambda: None


def _keep_deleted_azure(server: Any, backend: Backend, days: int | None
                        ) -> Callable[[], None]:
    """Blob soft delete on the (test server's, shared) account; returns how to undo it."""
    from azure.storage.blob import RetentionPolicy

    account = azure_account(server)
    account.set_service_properties(delete_retention_policy=RetentionPolicy(
        enabled=True, days=days))
    return lambda: account.set_service_properties(
        delete_retention_policy=RetentionPolicy(enabled=False))


@pytest.mark.parametrize(("kind", "days", "by", "how_long"), [
    ("s3", 7, "versioning", "for 7.0 more days"),
    ("s3", None, "versioning", "until they are removed by hand: no lifecycle rule"),
    ("azure", 3, "soft delete", "for 3.0 more days"),
])
def test_gc_warns_of_s3_versioning_and_azure_soft_delete(
        run: Runner, tree: Path, servers: dict[str, Any], kind: str, days: int | None,
        by: str, how_long: str) -> None:
    server = servers[kind]
    backend = CREATORS[kind](server)
    url, env = backend.url, backend.env
    backups_changing_a_chunk(run, tree, url, env)
    plain, found = gc_keeping_the_last(run, url, env)
    assert found["deleted_kept_by"] is None and found["deleted_kept_seconds"] is None
    assert "keeps deleted objects" not in plain.stderr
    undo = {"s3": _keep_deleted_s3, "azure": _keep_deleted_azure}[kind](server, backend, days)
    try:
        backups_changing_a_chunk(run, tree, url, env)
        warned, found = gc_keeping_the_last(run, url, env)
    finally:
        undo()
    assert found["deleted_kept_by"] == by
    assert found["deleted_kept_seconds"] == (days * 86400 if days else None)
    assert f"keeps deleted objects ({by})" in warned.stderr and how_long in warned.stderr


def test_gc_succeeds_when_the_bucket_settings_cannot_be_read(
        run: Runner, tree: Path, gcs_behind_proxy: ProxiedGCS) -> None:
    """Credentials that may delete objects but not read the bucket's settings (GCS's
    Storage Object Admin lacks storage.buckets.get): gc does its work, and the check of
    what the bucket keeps of deleted objects is a warning that could not be made."""
    plan, url, env = gcs_behind_proxy.plan, gcs_behind_proxy.backend.url, gcs_behind_proxy.env
    backups_changing_a_chunk(run, tree, url, env)
    plan.fail_match, plan.fail_always, plan.fail_status = r"/b/[^/?]+/?(\?|$)", True, 403
    result, found = gc_keeping_the_last(run, url, env)
    assert found["blobs_deleted"] >= 1 and found["deleted_kept_seconds"] is None
    assert "could not tell whether the bucket" in result.stderr
    assert "access denied" in result.stderr
    assert len(run("list", store=url, env=env).ok().stdout.splitlines()) == 1


def test_a_store_made_before_init_keeps_working(run: Runner, tree: Path,
                                                tmp_path: Path) -> None:
    name = run("backup", str(tree)).ok().stdout.strip()
    (tmp_path / "store/pitreos-store.json").unlink()  # as pitreos 0.1 left its stores
    assert run("list").ok().stdout.split()[0] == name
    run("backup", str(tree)).ok()
    run("restore", name, str(tmp_path / "dst")).ok()
    run("init").ok()  # describes it, keeping its backups
    assert len(run("list").ok().stdout.splitlines()) == 2


def test_progress_bars_in_a_terminal(run: Runner, tmp_path: Path, store_url: str) -> None:
    """Under a real pseudo-terminal (util-linux `script`), every long command draws a
    bar with its phase."""
    script = shutil.which("script")
    assert script is not None, "util-linux script is needed to give pitreos a terminal"
    src = tmp_path / "src"
    src.mkdir()
    (src / "data.bin").write_bytes(os.urandom(4 << 20))
    other = (tmp_path / "other").as_uri()
    run("init", store=other).ok()
    env = {**os.environ, "PITREOS_STORE": store_url,
           "PITREOS_CATALOG": str(tmp_path / "catalog.sqlite"), "COLUMNS": "120"}

    def in_terminal(*args: str) -> str:
        command = " ".join([sys.executable, "-m", "pitreos", *args])
        done = subprocess.run([script, "-qfec", command, "/dev/null"], env=env,
                              cwd=tmp_path, capture_output=True, timeout=120)
        assert done.returncode == 0, done.stdout.decode(errors="replace")
        return done.stdout.decode(errors="replace")

    name = run("backup", str(src)).ok().stdout.strip()
    (src / "data.bin").write_bytes(os.urandom(4 << 20))
    phases = {
        ("backup", str(src)): "backup",
        ("restore", name, str(tmp_path / "dst")): "restore",
        ("verify", "--all", "--deep"): "verify: download and check",
        ("copy", name, "--to", other, "--to-catalog", str(tmp_path / "o.sqlite")): "copy",
        ("catalog", "sync"): "catalog sync: list blobs",
        ("gc", "--keep-last", "1", "--grace", "0s"): "gc: delete blobs",
    }
    for args, phase in phases.items():
        shown = in_terminal(*args)
        assert phase in shown and "\u2501" in shown, (args, shown[-500:])
