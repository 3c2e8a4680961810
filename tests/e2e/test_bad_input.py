"""Every bad input of the core issue: a one-line error, a non-zero exit, nothing lost."""

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pitreos.backup import BackupOptions, run_backup
from pitreos.errors import SourceChanged
from pitreos.workspace import Workspace

from .helpers import (
    CHUNK,
    Result,
    Runner,
    assert_same_tree,
    big_source,
    stop_signals_at_default,
)
from .test_core import backup


def manifests(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "store/manifests").glob("*.yaml"))


def blob_files(tmp_path: Path) -> list[Path]:
    return sorted(p for p in (tmp_path / "store/blobs").rglob("*") if p.is_file())


def test_missing_source_dir(run: Runner, tmp_path: Path) -> None:
    run("backup", str(tmp_path / "nope")).fails("nope", "does not exist", code=2)


def test_source_is_a_file(run: Runner, tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    run("backup", str(tmp_path / "f")).fails("is not a directory", code=2)


def test_unreadable_source_dir(run: Runner, tmp_path: Path) -> None:
    """As root, the CLI runs in a user namespace, which keeps uid 0 but drops the
    capability to override permissions, so mode 000 really denies it."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    os.chmod(src, 0)
    try:
        if os.geteuid() == 0:
            env = {**os.environ, "PITREOS_STORE": (tmp_path / "store").as_uri(),
                   "PITREOS_CATALOG": str(tmp_path / "catalog.sqlite")}
            proc = subprocess.run(
                ["unshare", "--user", sys.executable, "-m", "pitreos", "backup", str(src)],
                env=env, capture_output=True, text=True, cwd=tmp_path)
            result = Result(proc.returncode, proc.stdout, proc.stderr)
        else:
            result = run("backup", str(src))
        result.fails(f"cannot read directory {src}", code=2)
    finally:
        os.chmod(src, 0o700)


@pytest.mark.parametrize("url,fragment", [
    ("ftp://host/x", "unknown store URL scheme 'ftp'"),
    ("file://otherhost/x", "invalid store URL"),
    ("file:relative", "invalid store URL"),
])
def test_store_url_that_does_not_parse(run: Runner, tree: Path, url: str,
                                       fragment: str) -> None:
    run("backup", str(tree), store=url).fails(fragment, code=2)


def test_store_that_does_not_exist(run: Runner, tmp_path: Path) -> None:
    url = (tmp_path / "missing-store").as_uri()
    run("list", store=url).fails(url, "no pitreos store at", "pitreos init", code=10)
    run("restore", "latest", str(tmp_path / "d"), store=url).fails("no pitreos store",
                                                                   code=10)
    assert not (tmp_path / "missing-store").exists()  # read commands create nothing


def test_unknown_backup_name(run: Runner, tree: Path, tmp_path: Path) -> None:
    backup(run, tree)
    run("restore", "2020-01-01T00-00-00Z--nope", str(tmp_path / "d")).fails(
        "no backup named '2020-01-01T00-00-00Z--nope'")
    run("show", "nope").fails("no backup named")
    assert not (tmp_path / "d").exists()


def test_no_backup_at_all(run: Runner, tmp_path: Path) -> None:
    run("restore", "latest", str(tmp_path / "d")).fails("no backup matches")


def plant_manifest(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / "store/manifests" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


MANIFEST_HEAD = """pitreos_manifest: {version}
name: {name}
tool: pitreos test
created: '2026-01-01T00:00:00Z'
tag: x
chunk_size: 65536
meta: {{}}
files:
"""


def test_manifest_that_does_not_parse(run: Runner, tree: Path, tmp_path: Path) -> None:
    backup(run, tree)
    name = "2026-01-01T00-00-00Z--x"
    plant_manifest(tmp_path, name, "pitreos_manifest: 1\nfiles: [unclosed\n")
    listing = run("list").ok()  # other backups stay usable; the bad one is reported
    assert "manifest_unreadable" in listing.stderr and name in listing.stderr
    run("restore", name, str(tmp_path / "d")).fails(f"manifest {name} does not parse")


def test_manifest_with_unknown_version(run: Runner, tmp_path: Path) -> None:
    name = "2026-01-01T00-00-00Z--x"
    plant_manifest(tmp_path, name, MANIFEST_HEAD.format(version=7, name=name))
    run("show", name).fails("format version 7", "upgrade pitreos")


@pytest.mark.parametrize("entries,fragment", [
    ("- {path: ../evil, type: dir, mode: '0755', mtime: '2026-01-01T00:00:00Z'}",
     "unsafe path '../evil'"),
    ("- {path: /etc/evil, type: dir, mode: '0755', mtime: '2026-01-01T00:00:00Z'}",
     "unsafe path '/etc/evil'"),
    ("- {path: a/../../evil, type: dir, mode: '0755', mtime: '2026-01-01T00:00:00Z'}",
     "unsafe path"),
    ("- {path: a, type: symlink, target: /etc, mode: '0777', mtime: '2026-01-01T00:00:00Z'}\n"
     "- {path: a/passwd, type: file, size: 0, chunks: [], mode: '0644',"
     " mtime: '2026-01-01T00:00:00Z'}",
     "lies below a, which is not a directory"),
])
def test_manifest_paths_that_escape(run: Runner, tmp_path: Path, entries: str,
                                    fragment: str) -> None:
    name = "2026-01-01T00-00-00Z--x"
    plant_manifest(tmp_path, name, MANIFEST_HEAD.format(version=1, name=name) + entries + "\n")
    dest = tmp_path / "dest"
    run("restore", name, str(dest)).fails(fragment)
    assert not dest.exists()


def test_restore_does_not_write_through_a_local_symlink(run: Runner, tree: Path,
                                                        tmp_path: Path) -> None:
    """A local symlink where the backup has a directory is replaced, never followed."""
    name = backup(run, tree)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "shared_memory.bin").write_bytes(b"must stay")
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "state").symlink_to(outside)
    run("restore", name, str(dest)).ok()
    assert (outside / "shared_memory.bin").read_bytes() == b"must stay"
    assert not (dest / "state").is_symlink()
    assert_same_tree(tree, dest)


@pytest.mark.parametrize("mode", ["full", "incremental", "incremental, files touched"])
def test_missing_blob_fails_then_sync_and_backup_heal(run: Runner, tree: Path,
                                                      tmp_path: Path, mode: str) -> None:
    """Once a sync saw the blob missing, the next backup stores it again: a full one, an
    incremental one of unchanged files, and one whose files changed only their mtime
    (every chunk the same as in the previous backup)."""
    name = backup(run, tree)
    victim = blob_files(tmp_path)[0]
    victim.unlink()
    dest = tmp_path / "dest"
    run("restore", name, str(dest)).fails(victim.name, "not found", "run the same restore again")
    assert (dest / ".pitreos-restore").exists()  # does not look restored
    sync = run("catalog", "sync").ok()
    assert "1 missing" in sync.stderr
    if mode.endswith("touched"):
        for path in tree.rglob("*"):
            if path.is_file() and not path.is_symlink():
                os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    # stores the missing blob again: the catalog no longer claims it
    latest = backup(run, tree, *(["--incremental"] if mode != "full" else []))
    assert victim.exists()
    run("restore", latest, str(dest)).ok()  # a second restore finishes the job
    assert not (dest / ".pitreos-restore").exists()
    assert_same_tree(tree, dest)


def test_corrupt_blob_is_never_written(run: Runner, tree: Path, tmp_path: Path) -> None:
    name = backup(run, tree)
    for victim in blob_files(tmp_path):
        data = bytearray(victim.read_bytes())
        data[-1] ^= 0xFF
        victim.write_bytes(bytes(data))
    dest = tmp_path / "dest"
    result = run("restore", name, str(dest)).fails("restore of", "failed", "blob")
    assert "expected" in result.stderr or "does not decompress" in result.stderr
    # every blob failed its check, so nothing was written: files opened so far hold zeros
    opened = [p for p in dest.rglob("*") if p.is_file() and p.name != ".pitreos-restore"]
    assert opened, "the restore failed before opening any file: the check saw nothing"
    for path in opened:
        assert not path.read_bytes().strip(b"\0"), path
    assert (dest / ".pitreos-restore").exists()


def test_blob_under_another_chunks_name(run: Runner, tree: Path, tmp_path: Path) -> None:
    """A manifest and its blob renamed to a sha1 that is not the chunk's: a restore
    writes the right bytes (the blake3 recorded proves them, as for every chunk it
    writes). `verify --deep` and `copy`, which vouch for blobs under their names,
    refuse it: copy whether it would send the blob or finds it at the destination."""
    name = backup(run, tree)
    data = (tree / "small.txt").read_bytes()
    real, fake = hashlib.sha1(data).hexdigest(), hashlib.sha1(b"another chunk").hexdigest()
    blob = tmp_path / "store/blobs" / real[:2] / real
    renamed = tmp_path / "store/blobs" / fake[:2] / fake
    renamed.parent.mkdir(exist_ok=True)
    blob.rename(renamed)
    (manifest,) = manifests(tmp_path)
    text = manifest.read_text()
    assert text.count(real) == 1
    manifest.write_text(text.replace(real, fake))
    (tmp_path / "catalog.sqlite").unlink()  # its rows name the real sha1
    run("restore", name, str(tmp_path / "dest")).ok()
    assert_same_tree(tree, tmp_path / "dest")
    result = run("verify", name, "--deep").fails("1 blobs damaged", code=1)
    assert f"holds data with sha1 {real}" in result.stdout + result.stderr
    for held in (False, True):
        other, other_catalog = tmp_path / f"other-{held}", tmp_path / f"other-{held}.sqlite"
        run("init", store=other.as_uri(), catalog=other_catalog).ok()
        if held:  # there already, unknown to the destination's catalog
            (other / "blobs" / fake[:2]).mkdir(parents=True)
            (other / "blobs" / fake[:2] / fake).write_bytes(renamed.read_bytes())
        run("copy", name, "--to", other.as_uri(), "--to-catalog",
            str(other_catalog)).fails(f"holds data with sha1 {real}", code=1)
        assert run("list", store=other.as_uri(), catalog=other_catalog).ok().stdout == ""


def test_sha1_collision_in_catalog(run: Runner, tree: Path, tmp_path: Path) -> None:
    """A catalog row with the right sha1 and a wrong blake3 stops the backup."""
    data = (tree / "small.txt").read_bytes()
    sha1 = hashlib.sha1(data).hexdigest()
    run("list").ok()  # creates the catalog
    db = sqlite3.connect(tmp_path / "catalog.sqlite")
    db.execute("INSERT INTO blobs (sha1, blake3, size, added_unix) VALUES (?, ?, ?, 0)",
               (sha1, "ab" * 32, len(data)))
    db.commit()
    db.close()
    result = run("backup", str(tree), "--chunk-size", str(CHUNK)).fails(
        "sha1 collision", sha1, "ab" * 32, str(tree / "small.txt"), "offset 0")
    assert result.stdout == ""
    assert manifests(tmp_path) == []


def test_sha1_collision_in_store(run: Runner, tree: Path, tmp_path: Path) -> None:
    """A blob in the store (unknown to the catalog) whose blake3 differs."""
    data = (tree / "small.txt").read_bytes()
    sha1 = hashlib.sha1(data).hexdigest()
    planted = tmp_path / "store/blobs" / sha1[:2] / sha1
    planted.parent.mkdir(parents=True)
    planted.write_bytes(b"PTB1\x00" + bytes.fromhex("cd" * 32) + b"other data")
    run("backup", str(tree), "--chunk-size", str(CHUNK)).fails("sha1 collision", sha1,
                                                               "cd" * 32)
    assert planted.read_bytes().endswith(b"other data")  # nothing overwritten
    assert manifests(tmp_path) == []


def test_destination_is_a_file(run: Runner, tree: Path, tmp_path: Path) -> None:
    name = backup(run, tree)
    (tmp_path / "file").write_text("x")
    run("restore", name, str(tmp_path / "file")).fails("is not a directory", code=2)
    assert (tmp_path / "file").read_text() == "x"


def test_file_changing_during_backup(tmp_path: Path, tree: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer appends to a file while it is read: the backup fails, no manifest."""
    import pitreos.chunktasks as chunktasks_module
    from pitreos.sparse import read_nonzero as real_read

    victim = tree / "blocks/blocks.log"

    def read_while_writing(fd: int, start: int, length: int,
                           extents: list[tuple[int, int]]) -> bytes | bytearray | None:
        with open(victim, "ab") as f:
            f.write(b"new block")
        return real_read(fd, start, length, extents)

    monkeypatch.setattr(chunktasks_module, "read_nonzero", read_while_writing)
    ws = Workspace.open((tmp_path / "store").as_uri(), catalog_path=tmp_path / "c.sqlite",
                        create=True)
    with pytest.raises(SourceChanged, match=r"blocks\.log changed while it was backed up"):
        run_backup(tree, ws.repo, ws.catalog, BackupOptions(chunk_size=CHUNK, workers=2))
    assert ws.repo.manifest_names() == []
    assert ws.catalog.backup_names() == set()
    ws.close()


def test_corrupt_catalog(run: Runner, tree: Path, tmp_path: Path) -> None:
    backup(run, tree)
    (tmp_path / "catalog.sqlite").write_bytes(b"this is not a database" * 100)
    for suffix in ("-wal", "-shm"):
        Path(f"{tmp_path / 'catalog.sqlite'}{suffix}").unlink(missing_ok=True)
    run("list").fails("catalog", "catalog sync --rebuild")
    run("catalog", "sync", "--rebuild").ok()
    assert len(run("list").ok().stdout.splitlines()) == 1


def test_catalog_from_newer_schema(run: Runner, tree: Path, tmp_path: Path) -> None:
    backup(run, tree)
    db = sqlite3.connect(tmp_path / "catalog.sqlite")
    db.execute("PRAGMA user_version = 99")
    db.commit()
    db.close()
    run("list").fails("schema version 99", "upgrade pitreos")


def _start(tmp_path: Path, *args: str, under: tuple[str, ...] = ()) -> subprocess.Popen[str]:
    """pitreos with ``args``, run by the command ``under`` (e.g. nohup) when given."""
    env = {**os.environ, "PITREOS_STORE": (tmp_path / "store").as_uri(),
           "PITREOS_CATALOG": str(tmp_path / "catalog.sqlite")}
    return subprocess.Popen([*under, sys.executable, "-m", "pitreos", "--parallel", "1", *args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path, preexec_fn=stop_signals_at_default)


def _signal_when(proc: subprocess.Popen[str], ready: Callable[[], bool],
                 signum: signal.Signals) -> tuple[str, str]:
    """Send ``signum`` once ``ready`` (the command still running); its output."""
    deadline = time.monotonic() + 60
    while not ready():
        assert proc.poll() is None, "finished before the signal could be sent"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    return out, err


def _interrupt_when(proc: subprocess.Popen[str], ready: Callable[[], bool]) -> tuple[str, str]:
    out, err = _signal_when(proc, ready, signal.SIGINT)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err
    return out, err


def test_ctrl_c_during_backup_and_restore(tmp_path: Path, run: Runner) -> None:
    src = big_source(tmp_path, 384)
    # backup: interrupted once the first blobs are stored
    proc = _start(tmp_path, "backup", str(src), "--chunk-size", "1MiB")
    out, _ = _interrupt_when(proc, lambda: len(blob_files(tmp_path)) >= 3)
    assert out == "" and manifests(tmp_path) == []
    assert run("list").ok().stdout == ""  # no partial manifest is listed
    name = run("backup", str(src), "--chunk-size", "1MiB").ok().stdout.strip()
    # restore: interrupted once the file has started to fill
    dest = tmp_path / "dest"
    proc = _start(tmp_path, "restore", name, str(dest))
    target = dest / "data.bin"
    _interrupt_when(proc, lambda: target.exists() and target.stat().st_blocks > 8192)
    assert (dest / ".pitreos-restore").exists()
    assert target.stat().st_mode & 0o777 == 0o600  # not yet given its recorded mode
    run("restore", name, str(dest)).ok()
    assert not (dest / ".pitreos-restore").exists()
    assert_same_tree(src, dest)


def test_a_backup_under_nohup_outlives_its_terminal(tmp_path: Path, run: Runner) -> None:
    """nohup starts a command with SIGHUP ignored, so that closing the terminal (which
    sends SIGHUP) does not stop it: pitreos keeps it ignored and finishes the backup."""
    src = big_source(tmp_path, 192)
    proc = _start(tmp_path, "backup", str(src), "--chunk-size", "1MiB", under=("nohup",))
    # the terminal closes once the first blobs are stored
    out, err = _signal_when(proc, lambda: len(blob_files(tmp_path)) >= 3, signal.SIGHUP)
    assert proc.returncode == 0, err
    listed = run("list").ok().stdout.splitlines()
    assert len(listed) == 1 and out.strip() and out.strip() in listed[0]
    assert len(manifests(tmp_path)) == 1


def _caught_signals(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return int(line.split()[1], 16)
    return 0


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupted_while_starting(tmp_path: Path, signum: int, code: int) -> None:
    """The signal arrives while the CLI and its libraries are still being imported (as
    soon as pitreos's entry point has installed its handlers): one line, no traceback."""
    env = {**os.environ, "PITREOS_STORE": (tmp_path / "store").as_uri(),
           "PITREOS_CATALOG": str(tmp_path / "c.sqlite")}
    proc = subprocess.Popen([sys.executable, "-m", "pitreos", "list"], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=stop_signals_at_default)
    deadline = time.monotonic() + 30
    while not _caught_signals(proc.pid) & (1 << (signal.SIGTERM - 1)):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.001)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == code, err
    assert "Traceback" not in err
    assert len([line for line in err.splitlines() if line.startswith("pitreos: ")]) == 1, err


def test_a_stop_signal_as_the_cli_takes_over_the_handlers(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The CLI replaces the start-up handlers with its own. A signal that lands as it
    does (delivered to the new handler before the CLI's error handling starts: seen once
    in the test above, exit 1 and a traceback) ends in the CLI's one line and exit
    code."""
    from pitreos.cli import app
    from pitreos.launch import catch_stop_signals

    def install_then_stop(handler: Callable[[int, Any], None]) -> None:
        catch_stop_signals(handler)
        os.kill(os.getpid(), signal.SIGTERM)  # the new handler runs on the next bytecode

    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGHUP)}
    monkeypatch.setattr(app, "catch_stop_signals", install_then_stop)
    monkeypatch.setattr(sys, "argv", ["pitreos", "list"])
    try:
        with pytest.raises(SystemExit) as exited:
            app.main()
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)
    err = capsys.readouterr().err
    assert exited.value.code == 143, err
    assert err.startswith("pitreos: stopped by SIGTERM") and len(err.splitlines()) == 1, err
