"""Choosing backups and parsing the flags that choose them."""

from datetime import UTC, datetime, timedelta

import pytest

from pitreos.catalog import BackupRecord
from pitreos.errors import BackupNotFound, UsageError
from pitreos.select import BackupFilter, choose, parse_duration, parse_time, parse_where


def record(name: str, tag: str, hour: int, block: str) -> BackupRecord:
    return BackupRecord(name=name, tag=tag, created=datetime(2026, 11, 26, hour, tzinfo=UTC),
                        chunk_size=1 << 20, tool="pitreos", file_count=1, apparent_size=1,
                        data_size=1, meta={"block": block})


RECORDS = [record("a", "standard", 1, "900"), record("b", "standard", 2, "1000"),
           record("c", "history", 3, "1100")]


def test_latest_and_by_name() -> None:
    assert choose(RECORDS, "latest", BackupFilter()).name == "c"
    assert choose(RECORDS, "latest", BackupFilter(tag="standard")).name == "b"
    assert choose(RECORDS, "a", BackupFilter()).name == "a"
    with pytest.raises(BackupNotFound):
        choose(RECORDS, "zz", BackupFilter())
    with pytest.raises(BackupNotFound, match="does not match"):
        choose(RECORDS, "a", BackupFilter(tag="history"))


def test_where_compares_numbers_as_numbers() -> None:
    below = BackupFilter(where=(parse_where("block<=999"),))
    assert choose(RECORDS, "latest", below).name == "a"  # "1000" < "999" as text
    assert parse_where(" block >= 5 ").key == "block"
    with pytest.raises(UsageError, match="invalid --where"):
        parse_where("block<=")


def test_before_takes_times_and_durations() -> None:
    assert choose(RECORDS, "latest",
                  BackupFilter(before=parse_time("2026-11-26T02:30:00Z", "--before"))).name == "b"
    now = datetime(2026, 11, 26, 12, tzinfo=UTC)
    assert parse_time("1d2h", "--before", now) == now - timedelta(days=1, hours=2)
    assert parse_duration("90m", "--grace") == timedelta(minutes=90)
    for bad in ("yesterday", "2026-11-26T02:00:00"):
        with pytest.raises(UsageError, match="--before"):
            parse_time(bad, "--before")
