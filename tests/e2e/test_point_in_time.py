"""Point in time: append-only files, node awareness, tags, choosing a backup, partial
and dry-run restores."""

import json
import os
import struct
import sys
from pathlib import Path

import pytest

from pitreos.backup import BackupOptions, run_backup
from pitreos.workspace import Workspace

from .helpers import (
    CHUNK,
    Runner,
    assert_same_tree,
    snapshot,
    sparse_copy,
    write_at,
    written_long_ago,
)
from .test_core import backup, restore_summary

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import gen_data


@pytest.fixture
def node(tmp_path: Path) -> Path:
    """A tiny node directory from the benchmark's generator (real header formats)."""
    root = tmp_path / "node"
    gen_data.generate(root, gen_data.Scale(8 << 20, 2 << 20, 2 << 20))
    return written_long_ago(root)


def head_of(root: Path) -> int:
    first: int = struct.unpack("<I", (root / "blocks/blocks.log").read_bytes()[4:8])[0]
    return first + (root / "blocks/blocks.index").stat().st_size // 8 - 1


def workspace(tmp_path: Path) -> Workspace:
    return Workspace.open((tmp_path / "store").as_uri(), catalog_path=tmp_path /
                          "catalog.sqlite", create=True)


def test_incremental_reads_only_the_appended_tail(node: Path, tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    options = BackupOptions(chunk_size=CHUNK, workers=2, incremental=True)
    run_backup(node, ws.repo, ws.catalog, options)
    log_size = (node / "blocks/blocks.log").stat().st_size
    index_size = (node / "blocks/blocks.index").stat().st_size
    gen_data.append_blocks(node / "blocks", 300_000)
    result = run_backup(node, ws.repo, ws.catalog, options)
    stats = result.stats
    appended = (node / "blocks/blocks.log").stat().st_size - log_size
    # the log; its index too once it holds a full chunk (smaller, it is read whole)
    assert stats.files_appended == 1 + (index_size >= CHUNK)
    assert stats.files_unchanged == 1  # the state file, not read at all
    # the log's tail, its previous partial chunk and two probe chunks, and the index
    bound = appended + 3 * CHUNK + (node / "blocks/blocks.index").stat().st_size
    assert stats.bytes_read <= bound
    assert stats.bytes_read < log_size // 2  # far less than the whole log
    entry = next(e for e in result.manifest.entries if e.path == "blocks/blocks.log")
    assert entry.appendonly
    dest = tmp_path / "dest"
    from pitreos.restore import RestoreOptions, execute_restore, plan_restore

    plan = plan_restore(result.manifest, dest, RestoreOptions())
    execute_restore(plan, ws.repo, RestoreOptions())
    assert_same_tree(node, dest)
    ws.close()


@pytest.mark.parametrize("change", ["shrink", "rewrite"])
def test_appendonly_file_shrunk_or_rewritten_falls_back(run: Runner, node: Path,
                                                       tmp_path: Path, change: str) -> None:
    backup(run, node, "--incremental")
    log = node / "blocks/blocks.log"
    if change == "shrink":
        os.truncate(log, log.stat().st_size - 100_000)
    else:
        write_at(log, 10, b"rewritten header")
    result = run("backup", str(node), "--chunk-size", str(CHUNK), "--incremental").ok()
    assert "backup.appendonly_full_pass" in result.stderr
    assert ("shrank" if change == "shrink" else "changed since") in result.stderr
    name = result.stdout.strip()
    dest = tmp_path / "dest"
    run("restore", name, str(dest)).ok()
    assert (dest / "blocks/blocks.log").read_bytes() == log.read_bytes()


def test_restore_fetches_only_the_missing_tail(run: Runner, node: Path,
                                               tmp_path: Path) -> None:
    stale = tmp_path / "stale"
    sparse_copy(node, stale)
    gen_data.append_blocks(node / "blocks", 400_000)
    name = backup(run, node)
    summary = restore_summary(run("restore", name, str(stale)).ok().stderr)
    tail_chunks = 400_000 // CHUNK + 2
    assert summary["fetched"] <= tail_chunks + 2  # log tail and index tail
    assert summary["kept"] > 20
    assert_same_tree(node, stale)


def test_local_appendonly_file_longer_than_backup_is_truncated(run: Runner, node: Path,
                                                               tmp_path: Path) -> None:
    name = backup(run, node)
    dest = tmp_path / "dest"
    sparse_copy(node, dest)
    with open(dest / "blocks/blocks.log", "ab") as f:
        f.write(b"blocks the backup does not have" * 1000)
    dry = run("restore", name, str(dest), "--dry-run").ok().stdout
    assert "truncate 30.3 KiB" in dry and "truncate 1 files" in dry
    run("restore", name, str(dest)).ok()
    assert_same_tree(node, dest)


def test_check_all_finds_damage_inside_an_appendonly_prefix(run: Runner, node: Path,
                                                            tmp_path: Path) -> None:
    name = backup(run, node)
    dest = tmp_path / "dest"
    sparse_copy(node, dest)
    write_at(dest / "blocks/blocks.log", 5 * CHUNK + 7, b"bit rot")  # not first nor last
    run("restore", name, str(dest), "--check-all").ok()
    assert_same_tree(node, dest)


def test_node_metadata_is_recorded_and_shown(run: Runner, node: Path, tmp_path: Path) -> None:
    name = backup(run, node, "--tag", "standard")
    listing = json.loads(run("list", "--json").ok().stdout)["backups"]
    meta = listing[0]["meta"]
    assert meta["block"] == head_of(node)  # a number
    assert meta["block_time"].startswith("20") and meta["block_time"].endswith("Z")
    assert meta["state_db"] == "CHAINB01" and meta["state_boost"] == "1.83.0"
    assert meta["state_compiler"] == "GCC 12 libstdc++ 12"
    shown = run("show", name).ok().stdout
    assert "only a matching build opens it" in shown and "linux/x86_64" in shown
    restored = run("restore", name, str(tmp_path / "dest")).ok()
    assert "note: state CHAINB01 was written by a nodeos built with GCC 12" in restored.stderr
    # --meta wins over a detected value
    override = backup(run, node, "--meta", "block=7")
    assert json.loads(run("list", "--json").ok().stdout)["backups"][0]["meta"]["block"] == 7
    assert override != name


def test_dirty_state_is_refused(run: Runner, node: Path, tmp_path: Path) -> None:
    write_at(node / "state/shared_memory.bin", 8, b"\x01")
    run("backup", str(node)).fails("dirty flag set", "--allow-dirty")
    assert not list((tmp_path / "store").rglob("*.yaml"))
    run("backup", str(node), "--allow-dirty").ok()


def test_finalizer_safety_left_out_by_default(run: Runner, node: Path, tmp_path: Path) -> None:
    (node / "finalizers").mkdir()
    (node / "finalizers/safety.dat").write_bytes(b"vote state")
    result = run("backup", str(node)).ok()
    assert "finalizer_safety_left_out" in result.stderr
    files = run("files", result.stdout.strip()).ok().stdout
    assert "safety.dat" not in files
    kept = run("backup", str(node), "--keep-finalizer-safety").ok().stdout.strip()
    assert "finalizers/safety.dat" in run("files", kept).ok().stdout


def test_truncated_or_disagreeing_index_is_reported(run: Runner, node: Path) -> None:
    index = node / "blocks/blocks.index"
    with open(index, "ab") as f:
        f.write(b"\x01\x02\x03")  # not a multiple of 8
    result = run("backup", str(node)).ok()
    assert "node.block_unknown" in result.stderr and "truncated" in result.stderr
    os.truncate(index, index.stat().st_size - 3 - 8)  # one block short of the log
    result = run("backup", str(node)).ok()
    assert "does not agree with" in result.stderr
    meta = json.loads(run("list", "--json").ok().stdout)["backups"][0]["meta"]
    assert "block" not in meta  # never a wrong block number


def test_choosing_by_tag_time_and_metadata(run: Runner, tree: Path, tmp_path: Path) -> None:
    names = {}
    for block, tag in ((100, "standard"), (200, "history"), (300, "standard")):
        (tree / "small.txt").write_text(f"at block {block}\n")
        names[block] = backup(run, tree, "--tag", tag, "--meta", f"block={block}",
                              "--meta", f"label=v{block}")
    listed = json.loads(run("list", "--json").ok().stdout)["backups"]
    created = {r["meta"]["block"]: r["created"] for r in listed}

    def restored(*args: str) -> str:
        dest = tmp_path / "dest"
        run("restore", *args, str(dest)).ok()
        return (dest / "small.txt").read_text()

    assert restored("--tag", "standard") == "at block 300\n"
    assert restored("--tag", "history") == "at block 200\n"
    assert restored("--where", "block<=250") == "at block 200\n"
    assert restored("--where", "block<250", "--tag", "standard") == "at block 100\n"
    assert restored("--where", "block!=300", "--where", "block>100") == "at block 200\n"
    assert restored("--where", "label=v100") == "at block 100\n"  # string equality
    assert restored("--before", created[200]) == "at block 200\n"
    assert restored("--before", "0s") == "at block 300\n"
    run("restore", "--before", "3650d", str(tmp_path / "x")).fails("no backup matches")
    run("restore", "--where", "block>999", str(tmp_path / "x")).fails("no backup matches")
    tagged = run("list", "--tag", "history").ok().stdout.split()
    assert names[200] in tagged and names[100] not in tagged
    where = run("list", "--where", "block>=200").ok().stdout
    assert names[100] not in where and names[300] in where


@pytest.mark.parametrize("args,fragment", [
    (["--where", "block"], "invalid --where 'block'"),
    (["--where", "block<="], "invalid --where"),
    (["--where", "=5"], "invalid --where"),
    (["--before", "yesterday"], "invalid --before 'yesterday'"),
    (["--before", "2026-11-26T10:00:00"], "give a time zone"),
    (["--tag", "bad tag"], "invalid tag"),
])
def test_invalid_filters(run: Runner, tree: Path, tmp_path: Path, args: list[str],
                         fragment: str) -> None:
    backup(run, tree)
    run("restore", *args, str(tmp_path / "d")).fails(fragment, code=2)
    run("list", *args).fails(fragment, code=2)
    assert not (tmp_path / "d").exists()


def test_partial_backup_and_restore(run: Runner, node: Path, tmp_path: Path) -> None:
    only_state = backup(run, node, "--include", "state/**")
    files = run("files", only_state).ok().stdout
    assert "state/shared_memory.bin" in files and "blocks" not in files
    full = backup(run, node)
    dest = tmp_path / "dest"
    result = run("restore", full, str(dest), "--include", "state/**").ok()
    assert (dest / "state/shared_memory.bin").exists() and not (dest / "blocks").exists()
    assert "not in the backup" not in result.stderr
    dest2 = tmp_path / "dest2"
    run("restore", full, str(dest2), "--exclude", "blocks/blocks.log").ok()
    assert (dest2 / "blocks/blocks.index").exists()
    assert not (dest2 / "blocks/blocks.log").exists()


def test_globs_that_match_nothing_are_warned(run: Runner, node: Path, tmp_path: Path) -> None:
    result = run("backup", str(node), "--include", "stat/**", "--exclude", "nope").ok()
    assert result.stderr.count("glob_matches_nothing") == 2
    name = backup(run, node)
    result = run("restore", name, str(tmp_path / "d"), "--include", "nothing/**").ok()
    assert "glob_matches_nothing" in result.stderr


def test_files_lists_apparent_and_data_size(run: Runner, node: Path) -> None:
    name = backup(run, node)
    line = next(x for x in run("files", name).ok().stdout.splitlines()
                if x.endswith("state/shared_memory.bin"))
    apparent, data = map(int, line.split()[:2])
    assert apparent == 8 << 20 and 0 < data < apparent


def test_dry_run_changes_nothing(run: Runner, tree: Path, tmp_path: Path) -> None:
    name = backup(run, tree)
    dest = tmp_path / "dest"
    sparse_copy(tree, dest)
    write_at(dest / "state/shared_memory.bin", 6 * CHUNK, b"changed")
    write_at(dest / "state/shared_memory.bin", 12 * CHUNK, b"data in a hole")
    (dest / "extra.txt").write_text("extra")
    before = snapshot(dest)
    out = run("restore", name, str(dest), "--dry-run").ok().stdout
    assert ("state/shared_memory.bin: fetch 1 chunks (64.0 KiB of data), hole 1 chunks "
            "(64.0 KiB)") in out
    assert "deleted with --delete): extra.txt" in out
    assert snapshot(dest) == before
    assert not (dest / ".pitreos-restore").exists()


def test_hooks_run_around_backup_and_restore(run: Runner, node: Path, tmp_path: Path) -> None:
    """The nodeos recipe's shape: stop, back up, start; the after hook always runs, and
    learns the result; a failing before hook stops everything."""
    log = tmp_path / "hooks.log"
    before = f'echo "before $PITREOS_OPERATION $PITREOS_DIRECTORY" >> {log}'
    after = f'echo "after $PITREOS_RESULT $PITREOS_BACKUP" >> {log}'
    name = run("backup", str(node), "--run-before", before, "--run-after",
               after).ok().stdout.strip()
    assert log.read_text().splitlines() == [f"before backup {node}", f"after success {name}"]
    log.unlink()
    dest = tmp_path / "dest"
    run("restore", name, str(dest), "--run-before", before, "--run-after", after).ok()
    assert log.read_text().splitlines() == [f"before restore {dest}", f"after success {name}"]
    log.unlink()
    write_at(node / "state/shared_memory.bin", 8, b"\x01")  # dirty: the backup fails
    run("backup", str(node), "--run-after", after).fails("dirty flag set", code=1)
    assert log.read_text().splitlines() == ["after failure "]
    log.unlink()
    stopped = run("backup", str(node), "--allow-dirty", "--run-before",
                  "echo 'nodeos would not stop' >&2; exit 3", "--run-after", after)
    stopped.fails("--run-before command failed with exit 3: nodeos would not stop", code=1)
    assert not log.exists()  # nothing ran after a failed before hook
    assert len(run("list").ok().stdout.splitlines()) == 1
