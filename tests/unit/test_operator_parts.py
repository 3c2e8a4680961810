"""The parts behind the operator's options: interval progress, the metrics file's merge,
the environment names of the options, the sparse map of an export."""

import time
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from pitreos import config, metrics
from pitreos.cli import cli
from pitreos.export import regions
from pitreos.hashing import ChunkDigest
from pitreos.manifest import Chunk, Entry
from pitreos.progress import IntervalProgress, describe, iec


def test_interval_progress_says_it_is_alive_even_when_nothing_moves() -> None:
    events: list[dict[str, Any]] = []
    progress = IntervalProgress(0.05, events.append)
    progress.start("verify", 100, "blobs")
    time.sleep(0.3)  # nothing advances: events come all the same
    idle = len(events)
    assert idle >= 2 and events[0]["done"] == 0 and events[0]["seconds_left"] is None
    progress.advance(50)
    time.sleep(0.15)
    progress.finish()
    after = len(events)
    time.sleep(0.15)
    assert len(events) == after  # finished: no more events
    last = events[-1]
    assert last["done"] == 50 and last["percent"] == 50.0 and last["unit"] == "blobs"
    assert describe(last).startswith("verify: 50 blobs of 100 blobs (50.0%)")


def test_interval_progress_past_an_estimated_total_reads_as_done() -> None:
    """A restore's check estimates its total from the space the local files take; a
    check that reads more is shown at 100%, never past it."""
    progress = IntervalProgress(60, lambda fields: None)
    progress.start("check", 100)
    progress.advance(130)
    fields = progress.fields()
    progress.finish()
    assert (fields["done"], fields["total"], fields["percent"]) == (130, 130, 100.0)
    assert describe(fields).startswith("check: 130 B of 130 B (100.0%)")


def test_iec_units() -> None:
    assert [iec(n) for n in (0, 1023, 1024, 5 << 20, 3 << 40)] == [
        "0 B", "1023 B", "1.0 KiB", "5.0 MiB", "3.0 TiB"]


def _samples(path: Path) -> dict[tuple[str, str, str], float]:
    return {(s.name, s.labels["operation"], s.labels["tag"]): s.value
            for family in text_string_to_metric_families(path.read_text())
            for s in family.samples}


def test_metrics_keep_other_series_and_the_last_success(tmp_path: Path) -> None:
    path = tmp_path / "pitreos.prom"
    metrics.write(path, metrics.Run("backup", "a", {"head_block": 42.0}), ok=True,
                  duration=1.0, now=1000.0)
    metrics.write(path, metrics.Run("gc", ""), ok=True, duration=2.0, now=1100.0)
    metrics.write(path, metrics.Run("backup", "a"), ok=False, duration=3.0, now=1200.0)
    got = _samples(path)
    assert got[("pitreos_last_success_timestamp_seconds", "backup", "a")] == 1000.0
    assert got[("pitreos_last_run_timestamp_seconds", "backup", "a")] == 1200.0
    assert got[("pitreos_last_run_success", "backup", "a")] == 0.0
    assert got[("pitreos_head_block", "backup", "a")] == 42.0
    assert got[("pitreos_last_run_success", "gc", "")] == 1.0
    path.write_text("garbage {{{\n")  # a damaged file is replaced, not a failure
    metrics.write(path, metrics.Run("verify"), ok=True, duration=1.0, now=1300.0)
    assert set(_samples(path)) >= {("pitreos_last_run_success", "verify", "")}


def test_every_option_has_environment_names_that_hooks_do_not_use() -> None:
    hook_variables = {"PITREOS_OPERATION", "PITREOS_DIRECTORY", "PITREOS_BACKUP",
                      "PITREOS_RESULT", "PITREOS_ERROR"}
    for name, command in config.commands(cli):
        for param in command.params:
            key = config.long_name(param)
            if key is None or key == "help" or not param.expose_value:
                continue
            assert isinstance(param.envvar, list) and param.envvar, (name, key)
            assert not hook_variables & set(param.envvar), (name, key)
            assert param.envvar[-1] == "PITREOS_" + key.upper().replace("-", "_")


def test_export_regions_merge_adjacent_data_chunks() -> None:
    digest = ChunkDigest("a" * 40, "b" * 64)
    entry = Entry("f", "file", 0o644, 0, size=10, chunks=[
        Chunk(0, digest), Chunk(3, digest), Chunk(6, None), Chunk(8, digest)])
    assert regions(entry) == [(0, 6), (8, 2)]
    assert regions(Entry("e", "file", 0o644, 0, size=0)) == []
    assert entry.data_size == 8
