"""Helpers shared by the tests: CLI results, sparse files, tree comparisons."""

import json
import os
import signal
import stat
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import referencing

from pitreos.sparse import allocated_bytes

CHUNK = 64 * 1024  # small chunks, so small files span many


def written_long_ago(root: Path) -> Path:
    """Date ``root`` (and all under it) an hour back, as a node's files are when a
    backup finds them: a file modified within 2 s of a backup's scan is read again by the
    next backup (pitreos.backup.plan.RACY_WINDOW_NS), which tests of what an incremental
    backup skips must not meet by accident."""
    then = time.time_ns() - 3600 * 10**9
    for path in [root, *(root.rglob("*") if root.is_dir() else [])]:
        os.utime(path, ns=(then, then), follow_symlinks=False)
    return root


def big_source(tmp_path: Path, mib: int) -> Path:
    """A directory holding one file of ``mib`` MiB of random bytes (a multiple of 8):
    long enough to back up that a test can act while it runs."""
    src = tmp_path / "big"
    src.mkdir()
    with open(src / "data.bin", "wb") as f:
        for _ in range(mib // 8):
            f.write(os.urandom(8 << 20))
    return src


def stop_signals_at_default() -> None:
    """A ``preexec_fn``: the child starts with Ctrl-C, SIGTERM and SIGHUP at their
    default actions. A shell without job control starts background jobs with SIGINT
    ignored, ``nohup`` ignores SIGHUP, and pitreos rightly keeps a signal ignored that it
    was started ignoring: a test that sends one must not inherit how its runner was
    started."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    def ok(self) -> "Result":
        assert self.returncode == 0, f"exit {self.returncode}\n{self.stderr}"
        return self

    def fails(self, *fragments: str, code: int | None = None) -> "Result":
        """A clean failure: non-zero exit, one-line error naming what is wrong."""
        assert self.returncode != 0, f"expected a failure, got exit 0\n{self.stderr}"
        if code is not None:
            assert self.returncode == code, self.stderr
        assert "Traceback" not in self.stderr, self.stderr
        errors = [line for line in self.stderr.splitlines() if line.startswith("pitreos: ")]
        assert len(errors) == 1, self.stderr
        for fragment in fragments:
            assert fragment in errors[0], f"{fragment!r} not in {errors[0]!r}"
        return self


Runner = Callable[..., Result]


def write_at(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)



def make_sparse(path: Path, size: int, runs: list[tuple[int, bytes]]) -> None:
    """A file of ``size`` bytes, holes everywhere but the given ``(offset, data)`` runs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.truncate(size)
    for offset, data in runs:
        write_at(path, offset, data)



def snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """What a restore must reproduce: type, mode, content, link target, file mtimes."""
    out: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if rel == ".pitreos-restore":
                continue
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("symlink", os.readlink(path), st.st_mtime_ns)
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode), st.st_mtime_ns)
            else:
                out[rel] = ("file", stat.S_IMODE(st.st_mode), st.st_mtime_ns,
                            path.read_bytes())
    return out



def assert_same_tree(src: Path, dst: Path) -> None:
    a, b = snapshot(src), snapshot(dst)
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key] == b[key], key



def assert_no_more_disk(src: Path, dst: Path) -> None:
    """Every restored file uses no more disk than the original (holes kept)."""
    for path in src.rglob("*"):
        if path.is_file() and not path.is_symlink():
            restored = dst / path.relative_to(src)
            assert allocated_bytes(restored) <= allocated_bytes(path), path


def sparse_copy(src: Path, dst: Path) -> None:
    """Copy a tree keeping holes (shutil.copytree would fill them with zeros)."""
    subprocess.run(["cp", "-a", "--sparse=always", str(src), str(dst)], check=True)


def make_node(root: Path) -> Path:
    """A small nodeos data directory: a clean chainbase state file (sparse, data after
    the header), a blocks log and index that agree."""
    import random
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
    import gen_data

    state = root / "state/shared_memory.bin"
    make_sparse(state, 24 * CHUNK, [(0, gen_data.chainbase_header()),
                                    (3 * CHUNK, os.urandom(2 * CHUNK)),
                                    (17 * CHUNK + 5, os.urandom(CHUNK))])
    gen_data.write_blocks(root / "blocks", 3 * CHUNK, random.Random(7))
    return root


def dirty_byte(path: Path) -> int:
    with open(path, "rb") as f:
        f.seek(8)
        return f.read(1)[0]


SCHEMAS = Path(__file__).resolve().parents[2] / "schema" / "json"


def _registry() -> referencing.Registry[Any]:
    resources = []
    for path in SCHEMAS.glob("*.schema.json"):
        schema = json.loads(path.read_text())
        resource = referencing.Resource.from_contents(schema)
        resources += [(schema["$id"], resource), (path.name, resource)]
    return referencing.Registry().with_resources(resources)


REGISTRY = _registry()


def document(result: Result, schema: str) -> dict[str, Any]:
    """The --json document on stdout, checked against its schema (and the envelope)."""
    doc: dict[str, Any] = json.loads(result.stdout)
    spec = json.loads((SCHEMAS / f"{schema}.schema.json").read_text())
    jsonschema.Draft202012Validator(spec, registry=REGISTRY).validate(doc)
    assert doc["exit_code"] == result.returncode
    assert doc["ok"] is (result.returncode == 0)
    return doc
