"""One bad manifest never locks out a store, and never costs another backup its blobs."""

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pitreos.errors import PitreosError
from pitreos.hashing import digest
from pitreos.repository import manifest_key
from pitreos.restore import RestoreOptions, execute_restore, plan_restore
from pitreos.stores import open_store
from pitreos.workspace import Workspace

from .helpers import CHUNK, Runner, written_long_ago
from .servers import Backend


def edit(store: Backend, name: str, change: Any, new_name: str | None = None) -> None:
    objects = open_store(store.url)
    doc = yaml.safe_load(objects.get(manifest_key(name)))
    change(doc)
    if new_name is not None:
        doc["name"] = new_name
    objects.put(manifest_key(new_name or name), yaml.safe_dump(doc, sort_keys=False).encode(),
                overwrite=True)


def two_backups(cli: Runner, tmp_path: Path) -> tuple[Path, str, str]:
    src = tmp_path / "src"
    src.mkdir()
    (src / "shared").write_bytes(b"shared chunk " * 5000)
    first = cli("backup", str(src), "--chunk-size", str(CHUNK), "--tag", "a").ok()
    (src / "unique").write_bytes(b"only the second backup has this " * 3000)
    second = cli("backup", str(src), "--chunk-size", str(CHUNK), "--tag", "b").ok()
    return src, first.stdout.strip(), second.stdout.strip()


def blob_count(store: Backend) -> int:
    return len(list(open_store(store.url).list("blobs/")))


def test_a_conflicting_manifest_is_quarantined(cli: Runner, store: Backend,
                                              tmp_path: Path) -> None:
    _, first, second = two_backups(cli, tmp_path)

    def conflict(doc: dict[str, Any]) -> None:  # 'shared' listed with another blake3
        entry = next(e for e in doc["files"] if e["path"] == "shared")
        start, sha1, _ = entry["chunks"].splitlines()[0].split()
        rest = entry["chunks"].splitlines()[1:]
        entry["chunks"] = "\n".join([f"{start} {sha1} {'0' * 64}", *rest]) + "\n"

    edit(store, second, conflict)
    blobs = blob_count(store)
    fresh = tmp_path / "fresh.sqlite"  # a machine that meets both manifests
    synced = cli("catalog", "sync", "--rebuild", catalog=fresh).ok()
    assert "catalog.manifest_quarantined" in synced.stderr and second in synced.stderr
    assert cli("list", catalog=fresh).ok().stdout.split()[0] == first
    cli("restore", first, str(tmp_path / "dest"), catalog=fresh).ok()
    cli("verify", "--all", catalog=fresh).fails(second, "conflicting", code=1)
    cli("gc", "--keep-last", "5", "--grace", "0s", catalog=fresh).ok()
    assert blob_count(store) == blobs  # the quarantined manifest's blobs all stay


def test_an_unreadable_manifest_stops_gc_from_deleting_blobs(cli: Runner, store: Backend,
                                                             tmp_path: Path) -> None:
    _, first, second = two_backups(cli, tmp_path)
    newer = second.replace("--b", "--c")

    def from_a_newer_pitreos(doc: dict[str, Any]) -> None:
        doc["pitreos_manifest"] = 99

    edit(store, second, from_a_newer_pitreos, new_name=newer)
    open_store(store.url).delete(manifest_key(second))
    blobs = blob_count(store)
    gc = cli("gc", "--keep-last", "5", "--grace", "0s").ok()
    assert "no blob deleted" in gc.stderr and newer in gc.stderr
    assert blob_count(store) == blobs
    cli("restore", first, str(tmp_path / "dest")).ok()


def test_a_file_from_year_2300_backs_up_and_restores(cli: Runner, store: Backend,
                                                     tmp_path: Path) -> None:
    """Its mtime does not fit SQLite's 64-bit integers: the manifest keeps it exactly,
    the catalog stores what it can, and every command goes on working."""
    src = tmp_path / "src"
    src.mkdir()
    future = src / "future"
    future.write_bytes(b"from the future")
    far = 10_413_792_000 * 10**9 + 123  # 2300-01-01, past 2**63 ns
    os.utime(future, ns=(far, far))
    assert future.stat().st_mtime_ns == far
    name = cli("backup", str(src), "--incremental").ok().stdout.strip()
    again = cli("backup", str(src), "--incremental").ok()
    assert "read 15 B" in again.stderr  # read again rather than trusted: never wrong
    assert len(cli("list").ok().stdout.splitlines()) == 2
    cli("catalog", "sync", "--rebuild").ok()
    cli("restore", name, str(tmp_path / "dest")).ok()
    assert (tmp_path / "dest/future").stat().st_mtime_ns == far


def test_names_that_are_not_utf8_back_up_and_restore_byte_for_byte(
        cli: Runner, store: Backend, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    raw = bytes(src)
    os.mkdir(raw + b"/dir-\xff")
    with open(raw + b"/dir-\xff/caf\xe9.txt", "wb") as f:
        f.write(b"latin-1 name")
    os.symlink(b"dir-\xff/caf\xe9.txt", raw + b"/link-\xfe")
    written_long_ago(src)
    name = cli("backup", str(src), "--incremental").ok().stdout.strip()
    again = cli("backup", str(src), "--incremental").ok()
    assert "read 0 B" in again.stderr  # the catalog knew them: nothing read again
    assert "dir-\\xff/caf\\xe9.txt" in cli("files", name).ok().stdout  # shown escaped
    cli("catalog", "sync", "--rebuild").ok()
    dest = tmp_path / "dest"
    cli("restore", name, str(dest)).ok()
    out = bytes(dest)
    assert sorted(os.listdir(out)) == [b"dir-\xff", b"link-\xfe"]
    assert os.listdir(out + b"/dir-\xff") == [b"caf\xe9.txt"]
    assert os.readlink(out + b"/link-\xfe") == b"dir-\xff/caf\xe9.txt"
    with open(out + b"/dir-\xff/caf\xe9.txt", "rb") as f:
        assert f.read() == b"latin-1 name"


def test_a_destination_that_cannot_be_read_is_one_line(store: Backend, cli: Runner,
                                                       tmp_path: Path) -> None:
    """As root, the CLI runs in a user namespace (uid 0 without the capability to
    override permissions), so mode 000 really denies it."""
    import subprocess
    import sys

    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"x" * 1000)
    name = cli("backup", str(src)).ok().stdout.strip()
    dest = tmp_path / "dest"
    cli("restore", name, str(dest)).ok()
    os.chmod(dest / "f", 0)
    env = {**os.environ, **store.env, "PITREOS_STORE": store.url,
           "PITREOS_CATALOG": str(tmp_path / "catalog.sqlite")}
    command = [sys.executable, "-m", "pitreos", "restore", name, str(dest)]
    if os.geteuid() == 0:
        command = ["unshare", "--user", *command]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("pitreos: ")]
    assert len(lines) == 1 and "Permission denied" in lines[0] and "nothing was changed" in \
        lines[0], proc.stderr


MANIFESTS = Path(__file__).resolve().parents[1] / "data" / "manifests"
FUZZ_VALUES = ["", "~", "-1", ".inf", "[1, [2]]", "{a: 1}", "2026-02-30", "!!binary aGk=",
               "'0o777'", "true", "99999999999999999999999999", "&a [*a]", "'../../etc'",
               "/abs", "'a/../../b'", "'.pitreos-restore'", "!!int x", "0x10"]


def sync_and_restore(text: str) -> bool:
    """A store holding this manifest (and the blob good.yaml references): sync, list and
    restore it; True when it restored. Only pitreos errors may come out; it must be
    quick, and nothing outside the destination may change."""
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        (root / "outside").mkdir()
        (root / "outside/sentinel").write_text("untouched")
        ws = Workspace.open((root / "store").as_uri(), catalog_path=root / "c.sqlite",
                            create=True, workers=2)
        chunk = b"x" * 100
        ws.repo.put_blob(digest(chunk).sha1, ws.repo.encode_blob(chunk, digest(chunk)))
        name = "2026-11-26T02-00-00Z--default"
        (root / "store/manifests").mkdir(parents=True, exist_ok=True)
        (root / f"store/manifests/{name}.yaml").write_text(text)
        started = time.monotonic()
        restored = False
        try:
            ws.sync(list_blobs=True)
            ws.catalog.backups()
            manifest = ws.choose(name)
            options = RestoreOptions(workers=2)
            execute_restore(plan_restore(manifest, root / "dest", options), ws.repo, options)
            restored = True
        except PitreosError:
            pass
        finally:
            ws.close()
        assert time.monotonic() - started < 5
        assert {p.name for p in root.iterdir()} <= {"c.sqlite", "c.sqlite-shm",
                                                    "c.sqlite-wal", "dest", "outside",
                                                    "store"}
        assert [p.name for p in (root / "outside").iterdir()] == ["sentinel"]
        assert (root / "outside/sentinel").read_text() == "untouched"
        return restored


def test_the_unfuzzed_manifest_restores() -> None:
    assert sync_and_restore((MANIFESTS / "good.yaml").read_text())


@settings(max_examples=150, deadline=10_000, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_fuzzed_manifests_in_a_store_never_crash_sync_or_escape_a_restore(
        data: st.DataObject) -> None:
    lines = (MANIFESTS / "good.yaml").read_text().splitlines()
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(lines) - 1))
        key = lines[at].split(":", 1)[0]
        lines[at] = f"{key}: {data.draw(st.sampled_from(FUZZ_VALUES))}"
    sync_and_restore("\n".join(lines) + "\n")
