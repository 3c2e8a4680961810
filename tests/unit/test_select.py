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


def test_where_refuses_a_number_compared_with_text_and_odd_operators() -> None:
    for text in ("block<=5k", "block<=abc"):
        with pytest.raises(UsageError, match="a number with text"):
            BackupFilter(where=(parse_where(text),)).apply(RECORDS)
    with pytest.raises(UsageError, match="invalid --where"):
        parse_where("block=<5")
    with pytest.raises(UsageError, match="no backup has metadata 'blok'; did you mean 'block'"):
        BackupFilter(where=(parse_where("blok>=5"),)).apply(RECORDS)


def test_unique_prefixes_and_near_misses() -> None:
    records = [record("2026-11-25T10-00-00Z--standard", "standard", 1, "1"),
               record("2026-11-25T12-00-00Z--standard", "standard", 2, "2"),
               record("2026-11-26T10-00-00Z--standard", "standard", 3, "3")]
    assert choose(records, "2026-11-26", BackupFilter()).name.startswith("2026-11-26T10")
    with pytest.raises(BackupNotFound, match="names 2 backups"):
        choose(records, "2026-11-25T1", BackupFilter())
    with pytest.raises(BackupNotFound, match="did you mean 'latest'"):
        choose(records, "lastest", BackupFilter())
    with pytest.raises(BackupNotFound, match="did you mean 'standard'"):
        choose(records, "latest", BackupFilter(tag="standrd"))
