"""Backup and restore through the CLI on the local store: bytes, modes, links, holes."""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import yaml

from pitreos.manifest import load as load_manifest
from pitreos.sparse import allocated_bytes

from .helpers import (
    CHUNK,
    Runner,
    assert_no_more_disk,
    assert_same_tree,
    sparse_copy,
    write_at,
)

NAME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ--[\w.-]+$")


def backup(run: Runner, src: Path, *args: str) -> str:
    result = run("backup", str(src), "--chunk-size", str(CHUNK), *args).ok()
    name = result.stdout.strip()
    assert NAME_RE.match(name), result.stdout  # the name is all stdout carries
    return name


def restore_summary(stderr: str) -> dict[str, int]:
    m = re.search(r"chunks checked (\d+), kept (\d+), fetched (\d+), holed (\d+)", stderr)
    assert m, stderr
    return dict(zip(["checked", "kept", "fetched", "holed"], map(int, m.groups()), strict=True))


def test_backup_and_restore_to_empty_dir(run: Runner, tree: Path, tmp_path: Path) -> None:
    name = backup(run, tree)
    dst = tmp_path / "dst" / "nested"  # created with its parents
    result = run("restore", name, str(dst)).ok()
    assert_same_tree(tree, dst)
    assert_no_more_disk(tree, dst)
    assert not (dst / ".pitreos-restore").exists()
    # only data chunks were fetched: the sparse state file's holes were never sent
    fetched = restore_summary(result.stderr)["fetched"]
    assert 0 < fetched < 40 + 16
    # the state file's data sits in 4 chunks (3 of random data, 1 partial); others are holes
    assert allocated_bytes(dst / "state/shared_memory.bin") <= 4 * CHUNK


def test_store_holds_each_chunk_once_and_no_zero_chunks(run: Runner, tree: Path,
                                                        tmp_path: Path) -> None:
    write_at(tree / "small.txt", 0, b"x")
    (tree / "copy.bin").write_bytes((tree / "blocks/blocks.index").read_bytes())
    name = backup(run, tree)
    text = (tmp_path / f"store/manifests/{name}.yaml").read_bytes()
    manifest = load_manifest(text, name)
    blobs = list((tmp_path / "store/blobs").rglob("*"))
    stored = {p.name for p in blobs if p.is_file()}
    assert stored == {d.sha1 for d in manifest.digests()}  # the copy's chunks: stored once
    files = {e.path: e for e in manifest.files()}
    state = files["state/shared_memory.bin"].chunks
    assert state[0].digest is None and state[30].digest is None  # hole and zero chunk
    assert files["empty.bin"].chunks == []
    raw = yaml.safe_load(text)  # readable YAML: one line per chunk
    state_lines = next(f for f in raw["files"] if f["path"] == "state/shared_memory.bin")
    assert state_lines["chunks"].splitlines()[30] == f"{30 * CHUNK} -"


def test_restore_over_modified_copy_moves_only_differences(run: Runner, tree: Path,
                                                           tmp_path: Path) -> None:
    name = backup(run, tree)
    dst = tmp_path / "dst"
    sparse_copy(tree, dst)
    state = dst / "state/shared_memory.bin"
    write_at(state, 6 * CHUNK + 10, b"changed")  # a data chunk changed
    write_at(state, 12 * CHUNK, os.urandom(CHUNK))  # data where the backup has a hole
    with open(dst / "blocks/blocks.log", "ab") as f:  # longer than the backup
        f.write(b"tail" * 1000)
    os.truncate(dst / "blocks/blocks.index", CHUNK)  # shorter than the backup
    (dst / "small.txt").unlink()
    os.chmod(dst / "protected", 0o644)
    (dst / "extra.txt").write_text("not in the backup")
    (dst / "state/link").unlink()
    (dst / "state/link").symlink_to("elsewhere")
    result = run("restore", name, str(dst)).ok()
    summary = restore_summary(result.stderr)
    assert summary["fetched"] <= 6  # state chunk, log tail chunk, index chunks, small.txt
    assert summary["kept"] > 0 and summary["holed"] == 1
    assert "extra.txt" in result.stderr  # listed, not deleted
    assert (dst / "extra.txt").exists()
    run("restore", name, str(dst), "--delete").ok()
    assert_same_tree(tree, dst)
    assert_no_more_disk(tree, dst)


def test_second_restore_is_a_no_op(run: Runner, tree: Path, tmp_path: Path) -> None:
    name = backup(run, tree)
    dst = tmp_path / "dst"
    run("restore", name, str(dst)).ok()
    summary = restore_summary(run("restore", name, str(dst)).ok().stderr)
    assert summary["fetched"] == 0 and summary["holed"] == 0 and summary["kept"] > 0
    assert_same_tree(tree, dst)


def test_latest_and_list(run: Runner, tree: Path, tmp_path: Path) -> None:
    first = backup(run, tree, "--tag", "standard")
    (tree / "small.txt").write_text("second version\n")
    second = backup(run, tree, "--tag", "standard", "--meta", "block=42")
    assert first != second
    listing = run("list").ok().stdout.splitlines()
    assert [line.split()[0] for line in listing] == [second, first]  # newest first
    assert "block=42" in listing[0]
    dst = tmp_path / "dst"
    run("restore", str(dst)).ok()  # 'latest' is the default
    assert (dst / "small.txt").read_text() == "second version\n"
    shown = run("show", first).ok().stdout
    assert "files: 7," in shown and "unique blobs:" in shown
    assert len(shown.splitlines()) < 20  # a summary, not every chunk
    whole = run("show", "--manifest", first).ok().stdout
    assert "pitreos_manifest: 1" in whole and "chunks: |" in whole


def test_unchanged_backup_stores_nothing_new(run: Runner, tree: Path, tmp_path: Path) -> None:
    backup(run, tree)
    blobs = {p.name for p in (tmp_path / "store/blobs").rglob("*") if p.is_file()}
    result = run("backup", str(tree), "--chunk-size", str(CHUNK)).ok()
    assert "stored 0 new blobs" in result.stderr
    assert {p.name for p in (tmp_path / "store/blobs").rglob("*") if p.is_file()} == blobs


def test_many_files_under_a_low_open_file_limit(tmp_path: Path) -> None:
    """300 files with a limit of 64 open files: files are opened as the work reaches
    them and closed after, never all at once."""
    import resource
    import subprocess
    import sys

    src = tmp_path / "many"
    for i in range(300):
        (src / f"d{i % 7}").mkdir(parents=True, exist_ok=True)
        (src / f"d{i % 7}/f{i}").write_bytes(os.urandom(100 + i) * (1 + i % 3))

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    env = {**os.environ, "PITREOS_STORE": (tmp_path / "store").as_uri(),
           "PITREOS_CATALOG": str(tmp_path / "c.sqlite")}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, "-m", "pitreos", *args], env=env,
                              capture_output=True, text=True, preexec_fn=limited,
                              cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        return proc

    cli("init")
    name = cli("backup", str(src), "--chunk-size", str(CHUNK)).stdout.strip()
    dest = tmp_path / "dest"
    cli("restore", name, str(dest))
    assert_same_tree(src, dest)
    for i in range(0, 300, 10):  # in place, with local data to check in every file
        (dest / f"d{i % 7}/f{i}").write_bytes(b"stale")
    cli("restore", name, str(dest))
    assert_same_tree(src, dest)


def test_global_options_work_after_the_command(tree: Path, tmp_path: Path) -> None:
    """`pitreos backup DIR --store URL` as well as `pitreos --store URL backup DIR`;
    given after the command, a global option wins."""
    store = (tmp_path / "elsewhere").as_uri()
    catalog = str(tmp_path / "elsewhere.sqlite")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PITREOS_")}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pitreos", *args], env=env,
                              capture_output=True, text=True, cwd=tmp_path)

    assert cli("init", "--store", store).returncode == 0
    made = cli("backup", str(tree), "--chunk-size", str(CHUNK), "--store", store,
               "--catalog", catalog, "-v")
    assert made.returncode == 0, made.stderr
    assert "backup.done" in made.stderr  # -v after the command counts
    name = made.stdout.strip()
    listed = cli("--store", (tmp_path / "nowhere").as_uri(), "list", "--store", store,
                 "--catalog", catalog)
    assert listed.returncode == 0 and listed.stdout.split()[0] == name, listed.stderr
    restored = cli("restore", name, str(tmp_path / "dest"), "--store", store,
                   "--catalog", catalog)
    assert restored.returncode == 0, restored.stderr
    assert_same_tree(tree, tmp_path / "dest")


def test_quiet_prints_nothing_on_success_and_one_line_on_failure(run: Runner, tree: Path,
                                                                 tmp_path: Path) -> None:
    """What a cron job mails: nothing when all went well."""
    for args in (["backup", str(tree), "--chunk-size", str(CHUNK)],
                 ["backup", str(tree), "--chunk-size", str(CHUNK), "--incremental"],
                 ["gc", "--keep-last", "1", "--grace", "0s"],
                 ["verify", "--all"],
                 ["restore", "latest", str(tmp_path / "dest")]):
        quiet = run("-q", *args).ok()
        assert quiet.stdout == "" and quiet.stderr == "", args
    assert_same_tree(tree, tmp_path / "dest")
    run("backup", str(tmp_path / "missing"), "-q").fails("does not exist", code=2)
    kept = run("gc", "--keep-last", "1", "--grace", "0s").ok()
    assert "keep " not in kept.stdout  # per-backup lines only with -v
    assert "keep " in run("gc", "--keep-last", "1", "--grace", "0s", "-v").ok().stdout


def test_one_backup_of_a_directory_at_a_time_on_a_host(run: Runner, tree: Path,
                                                       tmp_path: Path) -> None:
    """A real lock held by another process: the second run fails at once, or after
    --wait, with exit 11; once the first ends, it runs."""
    from pitreos.locallock import lock_path

    path = lock_path(tmp_path / "catalog.sqlite", "backup", tree)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time\n"
         "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, b'pid 4242 (the other run)')\n"
         "print('locked', flush=True); time.sleep(60)", str(path)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        run("backup", str(tree)).fails("another pitreos backup of", "the other run", code=11)
        started = time.monotonic()
        run("backup", str(tree), "--wait", "1s").fails("--wait DURATION", code=11)
        assert time.monotonic() - started >= 1
        other = tmp_path / "other"
        other.mkdir()
        (other / "f").write_text("another directory: no conflict")
        run("backup", str(other)).ok()
    finally:
        holder.kill()
        holder.wait()
    run("backup", str(tree), "--wait", "5s").ok()


def test_diff_and_dump(run: Runner, tree: Path, tmp_path: Path) -> None:
    first = backup(run, tree)
    original = (tree / "state/shared_memory.bin").read_bytes()
    write_at(tree / "state/shared_memory.bin", 5 * CHUNK, b"changed page")
    (tree / "small.txt").unlink()
    (tree / "new.txt").write_text("new file\n")
    second = backup(run, tree)
    changes = run("diff", first, second).ok()
    lines = changes.stdout.splitlines()
    assert "+    new.txt  (1 chunks, 9 B)" in lines
    assert "-    small.txt  (1 chunks, 21 B)" in lines
    assert any(line.startswith("M    state/shared_memory.bin  (1 chunks,") for line in lines)
    assert "1 added, 1 removed, 1 changed" in changes.stderr
    assert run("diff", second, second).ok().stdout == ""
    dumped = subprocess.run(
        [sys.executable, "-m", "pitreos", "dump", first, "state/shared_memory.bin"],
        capture_output=True, cwd=tmp_path,
        env={**os.environ, "PITREOS_STORE": (tmp_path / "store").as_uri(),
             "PITREOS_CATALOG": str(tmp_path / "catalog.sqlite")})
    assert dumped.returncode == 0, dumped.stderr
    assert dumped.stdout == original  # the first backup's bytes, holes as zeros
    run("dump", first, "state/shared_memory.bim").fails("did you mean", code=2)
