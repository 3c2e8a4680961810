"""The one bounded parallel map: every result once, a bounded window, a feed extended
while iterating, and no task running after the caller gave up."""

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pitreos.parallel import (
    EARLY_SERVER_MIN_CORES,
    Feed,
    WorkerPool,
    backup_in_processes,
    call,
    imap_ordered,
    imap_unordered,
    starts_server_early,
)

from .occupancy import Occupancy


def test_every_item_once() -> None:
    assert sorted(imap_unordered(lambda x: x * 2, range(100), workers=4)) == [
        x * 2 for x in range(100)]


def test_items_are_taken_lazily_within_the_window() -> None:
    taken: list[int] = []
    running = Occupancy()

    def items() -> Iterator[int]:
        for i in range(50):
            taken.append(i)
            yield i

    def task(i: int) -> int:
        with running:
            time.sleep(0.001)
        return i

    results = imap_unordered(task, items(), workers=3, window=5)
    first = next(results)
    assert len(taken) <= 5  # no more than the window taken before a result
    assert sorted([first, *results]) == list(range(50))
    assert running.most <= 3


@pytest.mark.parametrize(("weights", "budget", "most"), [
    ([1] * 40, 0, 1),  # nothing fits beside another: one at a time
    ([3] * 40, 10, 3),  # three fit
    ([20 if i % 7 == 0 else 2 for i in range(40)], 10, 5),  # a heavy one goes alone
    ([1] * 40, 1000, 8),  # the weights never bind: the window (twice 4 workers) does
])
def test_ordered_results_stay_within_a_weight_budget(weights: list[int], budget: int,
                                                     most: int) -> None:
    """Items admitted and not yet let go of by the caller (in flight, finished early, or
    just yielded) weigh at most ``budget`` together, or are one alone; results come in
    order, every one."""
    lock = threading.Lock()
    held = [0]
    highest = [0]
    ahead = [0]
    counted: list[int] = []

    def task(i: int) -> int:
        with lock:
            held[0] += weights[i]
            ahead[0] += 1
            highest[0] = max(highest[0], held[0])
            counted.append(ahead[0])
        time.sleep(0.002 if i % 3 else 0.01)  # some finish out of order
        return i

    seen = []
    for i in imap_ordered(task, range(40), workers=4, weigh=weights.__getitem__,
                          budget=budget):
        seen.append(i)
        with lock:
            held[0] -= weights[i]
            ahead[0] -= 1
    assert seen == list(range(40))
    assert highest[0] <= max(budget, max(weights))
    assert max(counted) <= most


def test_a_feed_extended_while_iterating_is_drained() -> None:
    feed: Feed[int] = Feed(range(5))
    seen = []
    for value in imap_unordered(lambda x: x, feed, workers=2):
        seen.append(value)
        if value < 5:
            feed.push(value + 100)  # pushed items come before the rest
    assert sorted(seen) == [0, 1, 2, 3, 4, 100, 101, 102, 103, 104]


def test_an_error_stops_the_map_and_cancels_pending_tasks() -> None:
    started: list[int] = []

    def task(i: int) -> int:
        started.append(i)
        if i == 3:
            raise ValueError("task 3 failed")
        time.sleep(0.01)
        return i

    with pytest.raises(ValueError, match="task 3 failed"):
        for _ in imap_unordered(task, range(1000), workers=2):
            pass
    count = len(started)
    time.sleep(0.05)
    assert len(started) == count < 1000  # nothing ran after the error surfaced


def test_a_map_stopped_early_on_a_shared_pool_leaves_it_serving() -> None:
    """Stopping one map cancels its pending tasks and waits for its running ones; the
    pool (a restore's check, then its writes) goes on serving the next map."""
    started: list[int] = []

    def task(i: int) -> int:
        started.append(i)
        time.sleep(0.005)
        return i

    with WorkerPool(2) as pool:
        results = pool.imap_unordered(task, range(1000))
        next(results)
        results.close()  # the caller gave up
        count = len(started)
        time.sleep(0.05)
        assert len(started) == count < 10  # nothing of the first map ran after
        assert sorted(pool.imap_unordered(lambda x: x * 2, range(20))) == [
            x * 2 for x in range(20)]


def test_call_runs_mixed_tasks() -> None:
    tasks = [lambda: 1, lambda: "two"]
    assert sorted(map(str, imap_unordered(call, tasks, workers=2))) == ["1", "two"]


def test_a_consumer_that_gives_up_stops_the_map_at_once() -> None:
    """The consumer's own error (a collision found on the main thread) closes the map
    as the error leaves the loop: pending tasks are cancelled, running ones waited for."""
    started: list[int] = []
    lock = threading.Lock()

    def task(i: int) -> int:
        with lock:
            started.append(i)
        time.sleep(0.005)
        return i

    def consume() -> None:
        for value in imap_unordered(task, range(1000), workers=2):
            if value >= 5:
                raise RuntimeError("consumer gave up")

    with pytest.raises(RuntimeError):
        consume()
    count = len(started)
    time.sleep(0.05)
    assert len(started) == count < 50


def test_worker_processes_import_no_catalog_or_cli_libraries(tmp_path: Path) -> None:
    """Each pool's server imports the task module before its first worker starts: what
    that module pulls in is paid by every restore and backup in processes (the catalog's
    sqlite3 and platformdirs, nodeos's subprocess: ~45 ms of a 230 ms pool start)."""
    code = ("import sys, pitreos.chunktasks; print(' '.join(sorted(m for m in "
            "('pitreos.catalog', 'sqlite3', 'platformdirs', 'subprocess', 'click', 'rich', "
            "'yaml') if m in sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, check=True)
    assert done.stdout.split() == []


WORKER_PROBE = """
import sys

def zstandard_loaded(_: int) -> bool:
    return "zstandard" in sys.modules

if __name__ == "__main__":
    from pitreos.parallel import imap_unordered

    assert "zstandard" not in sys.modules  # the coordinator imports it on first use
    print(*imap_unordered(zstandard_loaded, range(4), workers=2, processes=True))
"""


def test_worker_processes_start_with_zstandard_imported(tmp_path: Path) -> None:
    """The blob codec imports zstandard on first use (start-up): the pool's server
    preloads it, so that no worker imports it again as its first task begins."""
    probe = tmp_path / "probe.py"
    probe.write_text(WORKER_PROBE)
    done = subprocess.run([sys.executable, str(probe)], capture_output=True, text=True,
                          cwd=tmp_path, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True"] * 4


def test_the_worker_server_starts_early_only_for_a_local_store_with_cores_to_spare() -> None:
    assert starts_server_early(cores=16, workers=None, local_store=True)
    assert starts_server_early(cores=EARLY_SERVER_MIN_CORES, workers=8, local_store=True)
    assert not starts_server_early(cores=EARLY_SERVER_MIN_CORES - 1, workers=None,
                                   local_store=True)
    assert not starts_server_early(cores=16, workers=1, local_store=True)
    assert not starts_server_early(cores=16, workers=None, local_store=False)


def test_below_four_cores_only_new_bytes_send_a_backup_to_processes() -> None:
    mib = 1 << 20
    # a rescan (1 GiB of chunks with a previous digest) and 50 MiB new, 256 MiB threshold
    rescan = {"to_read": 1074 * mib, "new": 50 * mib, "threshold": 256 * mib}
    assert not backup_in_processes(cores=2, **rescan)
    assert not backup_in_processes(cores=EARLY_SERVER_MIN_CORES - 1, **rescan)
    assert backup_in_processes(cores=EARLY_SERVER_MIN_CORES, **rescan)
    assert backup_in_processes(cores=16, **rescan)
    # new data over the threshold: processes on any core count
    assert backup_in_processes(cores=2, to_read=300 * mib, new=300 * mib, threshold=256 * mib)
    assert backup_in_processes(cores=2, to_read=1074 * mib, new=256 * mib,
                               threshold=256 * mib)
    # under the threshold: threads on any core count
    assert not backup_in_processes(cores=16, to_read=10 * mib, new=10 * mib,
                                   threshold=256 * mib)


def test_on_wait_is_called_before_the_caller_waits() -> None:
    """A task that can finish only once the caller waits for it (a sync's fetch, while
    the catalog's lock must be let go of first)."""
    released = threading.Event()

    def task(item: int) -> bool:
        return released.wait(timeout=5)  # False: on_wait never came

    assert list(imap_unordered(task, [1], workers=2, on_wait=released.set)) == [True]
    released.clear()
    assert list(imap_ordered(task, [1, 2], workers=2, on_wait=released.set)) == [True, True]
