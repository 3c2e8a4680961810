"""An in-place restore's check of the local chunks (pitreos.chunktasks.check_chunks),
when the local file changes between the plan's look at it and its check task: the
restore has written nothing yet, and must say so in one line naming the file, never end
as an internal error. (A file removed or unreadable is the plan's OSError:
tests/e2e/test_worker_processes.py and test_hostile_input.py.)"""

import os
from pathlib import Path

import pytest

from pitreos.chunktasks import CheckTask, check_chunks
from pitreos.errors import RestoreError
from pitreos.hashing import blake3_hex
from pitreos.sparse import data_extents

STEP = 64 << 10


def _task_for(path: Path, chunks: list[bytes]) -> CheckTask:
    """The task a plan makes for ``path`` as it is now, restoring ``chunks`` over it."""
    size = sum(len(c) for c in chunks)
    return CheckTask(str(path), path.stat().st_size, size, STEP, 0,
                     tuple(blake3_hex(c) for c in chunks))


def test_a_file_as_planned_is_kept_and_a_changed_chunk_fetched(tmp_path: Path) -> None:
    chunks = [os.urandom(STEP), os.urandom(STEP), os.urandom(STEP // 2)]
    local = tmp_path / "state.bin"
    local.write_bytes(chunks[0] + os.urandom(STEP) + chunks[2])
    result = check_chunks(_task_for(local, chunks))
    assert (result.fetch, result.over_data, result.punch) == ((1,), (1,), ())
    assert (result.checked, result.kept, result.bytes_read) == (3, 2, 2 * STEP + STEP // 2)


def test_a_file_cut_shorter_before_its_task_has_the_lost_chunks_fetched(
        tmp_path: Path) -> None:
    chunks = [os.urandom(STEP) for _ in range(3)]
    local = tmp_path / "state.bin"
    local.write_bytes(b"".join(chunks))
    task = _task_for(local, chunks)
    os.truncate(local, STEP + 100)  # another program, after the plan's lstat
    result = check_chunks(task)
    assert (result.fetch, result.kept) == ((1, 2), 1)


def test_a_file_cut_shorter_while_its_task_reads_is_named(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    chunks = [os.urandom(STEP) for _ in range(3)]
    local = tmp_path / "state.bin"
    local.write_bytes(b"".join(chunks))
    task = _task_for(local, chunks)
    def extents_then_cut(fd: int, end: int, start: int = 0) -> list[tuple[int, int]]:
        extents = data_extents(fd, end, start)
        os.truncate(local, STEP + 100)  # another program, between the lseeks and a read
        return extents

    monkeypatch.setattr("pitreos.chunktasks.data_extents", extents_then_cut)
    with pytest.raises(RestoreError) as raised:
        check_chunks(task)
    message = str(raised.value)
    assert str(local) in message and "shrank" in message and "nothing was changed" in message
    assert "\n" not in message
