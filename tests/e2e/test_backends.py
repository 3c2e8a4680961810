"""One end-to-end suite, run against every backend on a real server on loopback."""

import shutil
from functools import partial
from pathlib import Path

from .helpers import (
    CHUNK,
    Runner,
    assert_no_more_disk,
    assert_same_tree,
    sparse_copy,
    write_at,
)
from .servers import Backend
from .test_core import restore_summary


def test_end_to_end(run: Runner, backend: Backend, tree: Path, tmp_path: Path) -> None:
    cli = partial(run, store=backend.url, env=backend.env)
    first = cli("backup", str(tree), "--chunk-size", str(CHUNK), "--tag", "standard")
    first_name = first.ok().stdout.strip()
    stale = tmp_path / "stale"
    sparse_copy(tree, stale)  # a node left at the first backup
    write_at(tree / "state/shared_memory.bin", 6 * CHUNK, b"new state")
    with open(tree / "blocks/blocks.log", "ab") as f:
        f.write(b"appended block" * 1000)
    second = cli("backup", str(tree), "--chunk-size", str(CHUNK), "--tag", "standard",
                 "--incremental").ok()
    assert "stored 2 new blobs" in second.stderr  # the changed state chunk, the log tail
    second_name = second.stdout.strip()
    listing = cli("list").ok().stdout.split()
    assert listing.index(second_name) < listing.index(first_name)
    assert "files: 7," in cli("show", second_name).ok().stdout
    assert "# files: 7," in cli("show", "--manifest", second_name).ok().stdout
    # in-place restore over the stale copy moves only what changed
    restored = cli("restore", second_name, str(stale)).ok()
    summary = restore_summary(restored.stderr)
    assert summary["fetched"] == 2 and summary["kept"] > 2
    assert_same_tree(tree, stale)
    assert_no_more_disk(tree, stale)
    # a fresh machine: catalog sync from the store alone, then restore to an empty dir
    fresh_catalog = tmp_path / "fresh.sqlite"
    sync = cli("catalog", "sync", catalog=fresh_catalog).ok()
    assert "2 backups added" in sync.stderr and "0 missing" in sync.stderr
    empty = tmp_path / "empty"
    cli("restore", "latest", str(empty), catalog=fresh_catalog).ok()
    assert_same_tree(tree, empty)
    # copy to a local store, sending only the blobs it lacks, then restore from there
    other = tmp_path / "other-store"
    run("init", store=other.as_uri()).ok()
    copied = cli("copy", first_name, "--to", other.as_uri(), "--to-catalog",
                 str(tmp_path / "other.sqlite")).ok()
    assert "0 already there" in copied.stderr
    copied = cli("copy", second_name, "--to", other.as_uri(), "--to-catalog",
                 str(tmp_path / "other.sqlite")).ok()
    assert "2 blobs" in copied.stderr  # only the two new ones
    from_copy = tmp_path / "from-copy"
    run("restore", second_name, str(from_copy), store=other.as_uri(),
        catalog=tmp_path / "other-restore.sqlite").ok()
    assert_same_tree(tree, from_copy)
    shutil.rmtree(from_copy)


def test_http_store_read_only(run: Runner, tree: Path, tmp_path: Path) -> None:
    """A store published by a plain static web server: list and restore, no writes."""
    from .faults import address, start_static

    name = run("backup", str(tree), "--chunk-size", str(CHUNK)).ok().stdout.strip()
    server = start_static(tmp_path / "store")
    try:
        url = address(server)
        catalog = tmp_path / "http.sqlite"
        assert run("list", store=url, catalog=catalog).ok().stdout.split()[0] == name
        dest = tmp_path / "dest"
        run("restore", "latest", str(dest), store=url, catalog=catalog).ok()
        assert_same_tree(tree, dest)
        run("backup", str(tree), store=url, catalog=catalog).fails("read-only", url)
        missing = f"{url}/no-such-prefix"
        run("list", store=missing, catalog=tmp_path / "m.sqlite").fails(
            "no pitreos store at", code=10)
    finally:
        server.shutdown()
