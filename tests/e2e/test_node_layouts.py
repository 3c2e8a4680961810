"""Spring 1.x layouts (tools/gen_data.py write_spring_node, formats in docs/nodeos.md):
the chain's identity, retained stride files, pruned logs, snapshots, caches, checks of a
restored node, and retention by block height."""

import json
import os
import random
import shutil
import struct
import sys
from pathlib import Path
from typing import Any

import pytest

from pitreos.sparse import allocated_bytes

from .helpers import (
    Runner,
    assert_same_tree,
    document,
    snapshot,
    write_at,
    written_long_ago,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import gen_data

OTHER_CHAIN = bytes.fromhex("73e4385a2708e6d7048834fbc1079f2fabb17b3c125b146af438971e90716c4d")
SNAPSHOTS = (1040, 1090)


@pytest.fixture
def spring(tmp_path: Path) -> Path:
    root = tmp_path / "node"
    gen_data.write_spring_node(root, random.Random(3), first_block=1001, snapshots=SNAPSHOTS)
    return written_long_ago(root)


def backup(run: Runner, src: Path, *args: str) -> str:
    return run("backup", str(src), "--chunk-size", "64KiB", *args).ok().stdout.strip()


def meta_of(run: Runner, name: str) -> dict[str, Any]:
    doc = json.loads(run("show", name, "--json").ok().stdout)
    meta: dict[str, Any] = doc["meta"]
    return meta


def test_the_chain_is_recorded_shown_and_never_mixed(run: Runner, spring: Path,
                                                     tmp_path: Path) -> None:
    name = backup(run, spring)
    chain = gen_data.CHAIN_ID.hex()
    meta = meta_of(run, name)
    assert meta["chain_id"] == chain and meta["first_block"] == 1001
    assert f"chain_id={chain}" in run("list").ok().stdout
    # a node of another chain in the destination: refused before anything changes
    other = tmp_path / "other"
    gen_data.write_blocks(other / "blocks", 100_000, random.Random(4), 5000, OTHER_CHAIN)
    before = snapshot(other)
    run("restore", name, str(other)).fails("belongs to chain", OTHER_CHAIN.hex(),
                                           "--force", code=1)
    assert snapshot(other) == before
    run("restore", name, str(other), "--force", "--delete").ok()
    assert_same_tree(spring, other)
    # the same chain: an in-place restore goes ahead
    run("restore", name, str(other)).ok()


def test_the_local_nodeos_version_is_recorded(run: Runner, spring: Path,
                                              tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "nodeos"  # a real program on the PATH that answers as nodeos does
    fake.write_text("#!/bin/sh\n[ \"$1\" = --full-version ] && echo v1.1.2-3f8e4c1 || "
                    "exit 2\n")
    fake.chmod(0o755)
    path = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    name = run("backup", str(spring), env=path).ok().stdout.strip()
    assert meta_of(run, name)["nodeos_version"] == "v1.1.2-3f8e4c1"
    checked = run("check-node", str(spring), "--json", env=path).ok()
    assert json.loads(checked.stdout)["check"]["local_nodeos"] == "v1.1.2-3f8e4c1"


def test_retained_stride_files_are_immutable(run: Runner, spring: Path) -> None:
    backup(run, spring, "--incremental")
    retained = spring / "blocks/retained/blocks-951-1000.log"
    # copied back with its mtime (a new inode): the same file, not read again
    shutil.copy2(retained, retained.with_suffix(".tmp"))
    os.replace(retained.with_suffix(".tmp"), retained)
    again = json.loads(run("backup", str(spring), "--incremental", "--chunk-size", "64KiB",
                           "--json").ok().stdout)
    assert again["files_unchanged"] == again["files"]
    assert again["bytes_read"] == 0
    # changed in place (it never is, by nodeos): damage, reported, no backup written
    listed = run("list").ok().stdout
    write_at(retained, 100, b"bit rot")
    run("backup", str(spring), "--incremental").fails(
        "blocks/retained/blocks-951-1000.log", "never written again", code=1)
    assert run("list").ok().stdout == listed


def test_retained_state_history_files_are_immutable_too(run: Runner, spring: Path) -> None:
    backup(run, spring, "--incremental")
    history = spring / "state-history/retained/trace_history-901-950.index"
    with open(history, "ab") as f:
        f.write(b"\0" * 8)  # grown, as nodeos never grows a retained piece
    listed = run("list").ok().stdout
    run("backup", str(spring), "--incremental").fails(
        "state-history/retained/trace_history-901-950.index", "never written again", code=1)
    assert run("list").ok().stdout == listed


def test_a_pruned_log_backs_up_and_checks(run: Runner, spring: Path, tmp_path: Path) -> None:
    gen_data.append_blocks(spring / "blocks", 2 << 20)  # a log of 2.3 MiB
    written_long_ago(spring)
    head = meta_of(run, backup(run, spring, "--incremental"))["block"]
    blocks = (spring / "blocks/blocks.index").stat().st_size // 8
    gen_data.prune_blocks(spring / "blocks", keep=blocks * 3 // 4)  # the first quarter goes
    pruned = json.loads(run("backup", str(spring), "--incremental", "--chunk-size", "64KiB",
                            "--json").ok().stdout)
    assert pruned["meta"]["block"] == head  # read through the holes and the count
    # the tail past the holes is not read again: the chunks the holes reach, one probe
    log_size = (spring / "blocks/blocks.log").stat().st_size
    assert pruned["bytes_read"] < log_size // 4, pruned
    dest = tmp_path / "dest"
    run("restore", pruned["backup"], str(dest)).ok()
    assert (dest / "blocks/blocks.log").read_bytes() == \
        (spring / "blocks/blocks.log").read_bytes()
    assert allocated_bytes(dest / "blocks/blocks.log") < log_size * 9 // 10  # holes kept
    checked = document(run("check-node", str(dest), "--against", pruned["backup"],
                           "--json").ok(), "check-node")["check"]
    assert checked["head_block"] == head and checked["problems"] == []
    assert checked["blocks_checked"] == blocks * 3 // 4


def test_snapshots_are_found_by_block(run: Runner, spring: Path, tmp_path: Path) -> None:
    every = backup(run, spring, "--tag", "all")
    assert meta_of(run, every)["snapshot_block"] == max(SNAPSHOTS)
    latest = backup(run, spring, "--tag", "latest", "--latest-snapshot-only")
    files = json.loads(run("files", latest, "--json").ok().stdout)["entries"]
    snapshots = [e["path"] for e in files if e["path"].startswith("snapshots/snapshot-")]
    assert len(snapshots) == 1 and snapshots[0][len("snapshots/snapshot-"):][:8] == \
        f"{max(SNAPSHOTS):08x}"
    found = json.loads(run("list", "--json", "--where", f"snapshot_block>={max(SNAPSHOTS)}",
                           "--tag", "latest").ok().stdout)["backups"]
    assert [b["name"] for b in found] == [latest]
    dest = tmp_path / "only-snapshots"
    run("restore", latest, str(dest), "--include", "snapshots/**").ok()
    assert sorted(p.name for p in dest.rglob("*") if p.is_file()) == \
        [Path(snapshots[0]).name]


def test_caches_are_left_out_and_left_alone(run: Runner, spring: Path,
                                            tmp_path: Path) -> None:
    name = backup(run, spring, "--exclude-caches")
    paths = {e["path"] for e in json.loads(run("files", name, "--json").ok().stdout)
             ["entries"]}
    assert "state/code_cache.bin" not in paths and "state/chain_head.dat" in paths
    dest = tmp_path / "dest"
    shutil.copytree(spring, dest)
    local_cache = (dest / "state/code_cache.bin").read_bytes()
    write_at(dest / "state/chain_head.dat", 0, b"stale")
    restored = run("restore", name, str(dest), "--delete").ok()
    assert "code_cache" not in restored.stderr
    assert (dest / "state/code_cache.bin").read_bytes() == local_cache
    assert (dest / "state/chain_head.dat").read_bytes() == \
        (spring / "state/chain_head.dat").read_bytes()


def test_check_node_finds_what_nodeos_would_trip_on(run: Runner, spring: Path,
                                                    tmp_path: Path) -> None:
    name = backup(run, spring)
    dest = tmp_path / "dest"
    restored = document(run("restore", name, str(dest), "--check", "--json").ok(), "restore")
    assert restored["check"]["problems"] == [] and restored["check"]["head_block"] > 1000
    # an index entry that points elsewhere than its block's entry
    index = dest / "blocks/blocks.index"
    with open(index, "r+b") as f:
        f.seek(8 * 50)
        offset = struct.unpack("<Q", f.read(8))[0]
        f.seek(8 * 50)
        f.write(struct.pack("<Q", offset + 3))
    failed = run("check-node", str(dest), "--json")
    failed.fails("the index disagrees with", "block 1051", code=1)
    assert document(failed, "check-node")["check"]["problems"]
    run("restore", name, str(dest), "--check").ok()  # the restore repairs it
    # the head is not the backup's
    gen_data.append_blocks(dest / "blocks", 20_000)
    run("check-node", str(dest), "--against", name).fails("the backup at block", code=1)
    # a dirty state
    run("restore", name, str(dest)).ok()
    write_at(dest / "state/shared_memory.bin", 8, b"\x01")
    run("check-node", str(dest)).fails("dirty flag set", code=1)


def test_gc_keeps_one_backup_per_range_of_blocks(run: Runner, spring: Path) -> None:
    names: list[str] = []
    for blocks in (0, 30_000, 30_000, 30_000):  # heads about 1118, 1240, 1360, 1480
        if blocks:
            gen_data.append_blocks(spring / "blocks", blocks, seed=len(names))
        names.append(backup(run, spring))
    heads = [meta_of(run, n)["block"] for n in names]
    assert heads == sorted(heads) and len(set(heads)) == 4
    plan = json.loads(run("gc", "--keep-every-blocks", "10000", "--dry-run",
                          "--json").ok().stdout)
    # every head in one range of 10,000 blocks: only the newest backup stays
    assert list(plan["kept"]) == [names[-1]]
    assert sorted(plan["deleted_backups"]) == sorted(names[:-1])
    done = json.loads(run("gc", "--keep-every-blocks", "200", "--grace", "0s",
                          "--json").ok().stdout)
    kept = set(done["kept"])
    for name, head in zip(names, heads, strict=True):
        newest_of_range = all(h // 200 != head // 200 for h in heads[names.index(name) + 1:])
        assert (name in kept) == newest_of_range, (name, head, heads)


def test_a_seed_saves_what_it_holds_and_never_what_it_gets_wrong(run: Runner, spring: Path,
                                                                 tmp_path: Path) -> None:
    name = backup(run, spring)
    seed = tmp_path / "old-node"  # the node as it was, one block ago and a page changed
    shutil.copytree(spring, seed)
    write_at(seed / "state/shared_memory.bin", 4096, os.urandom(4096))  # wrong bytes
    without = json.loads(run("restore", name, str(tmp_path / "plain"), "--json")
                         .ok().stdout)
    seeded = json.loads(run("restore", name, str(tmp_path / "seeded"), "--seed", str(seed),
                            "--json").ok().stdout)
    assert_same_tree(spring, tmp_path / "seeded")
    assert seeded["chunks_fetched"] == without["chunks_fetched"]
    assert seeded["chunks_seeded"] == seeded["chunks_fetched"] - 1  # all but the changed
    assert seeded["stored_bytes_fetched"] < without["stored_bytes_fetched"] // 10
    # a seed file with the right size and wrong bytes everywhere gives nothing
    bad = tmp_path / "bad-seed"
    shutil.copytree(spring, bad)
    for path in bad.rglob("*"):
        if path.is_file():
            path.write_bytes(os.urandom(path.stat().st_size))
    none = json.loads(run("restore", name, str(tmp_path / "from-bad"), "--seed", str(bad),
                          "--json").ok().stdout)
    assert none["chunks_seeded"] == 0
    assert_same_tree(spring, tmp_path / "from-bad")
    run("restore", name, str(tmp_path / "x"), "--seed", str(tmp_path / "missing")).fails(
        "--seed", code=2)


def test_a_failed_check_fails_the_restore_before_the_after_hook(run: Runner, spring: Path,
                                                               tmp_path: Path) -> None:
    wrong = backup(run, spring, "--meta", "block=999")  # a head the directory will not have
    outcome = tmp_path / "outcome"
    restored = run("restore", wrong, str(tmp_path / "dest"), "--check", "--json",
                   "--run-after", f"echo $PITREOS_RESULT > {outcome}")
    restored.fails("ends at block", "the backup at block 999", code=1)
    assert outcome.read_text().strip() == "failure"
    doc = document(restored, "restore")
    assert doc["files"] > 0 and doc["check"]["problems"]  # the restore's counts and why
