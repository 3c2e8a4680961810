"""gc's decision, without a store: which backups a policy keeps, which blobs go."""

from datetime import UTC, datetime, timedelta

from pitreos.catalog import BackupRecord
from pitreos.gcdecision import RetentionPolicy, deletable, plan_retention
from pitreos.repository import StoredBlob


def record(name: str, created: datetime) -> BackupRecord:
    return BackupRecord(name=name, tag="t", created=created, chunk_size=1, tool="",
                        file_count=0, apparent_size=0, data_size=0, meta={})


def test_retention_rules() -> None:
    start = datetime(2026, 11, 1, tzinfo=UTC)
    # every 2 hours for 40 days
    records = [record(f"b{i:04d}", start + timedelta(hours=2 * i)) for i in range(480)]
    newest = records[-1].name
    assert set(plan_retention(records, RetentionPolicy(last=3))) == {
        "b0479", "b0478", "b0477"}
    daily = plan_retention(records, RetentionPolicy(daily=2))
    assert set(daily) == {"b0479", "b0467"}  # newest of the last two days
    assert daily["b0479"] == ["daily 2026-12-10"]
    hourly = plan_retention(records, RetentionPolicy(hourly=5))
    assert len(hourly) == 5  # one backup per hour that has one
    weekly = plan_retention(records, RetentionPolicy(weekly=3))
    assert len(weekly) == 3 and newest in weekly
    monthly = plan_retention(records, RetentionPolicy(monthly=6))
    assert set(monthly) == {"b0479", "b0359"}  # December, and the last of November
    both = plan_retention(records, RetentionPolicy(last=1, monthly=2))
    assert both[newest] == ["last 1", "monthly 2026-12"]  # kept by two rules
    assert plan_retention(records, RetentionPolicy()) == {}
    assert plan_retention(records, RetentionPolicy(last=0)) == {}


NOW = datetime(2026, 11, 26, 12, tzinfo=UTC)


def blob(sha1: str, age: timedelta) -> StoredBlob:
    return StoredBlob(sha1, 100, NOW - age)


def test_deletable_takes_old_unreferenced_blobs_only() -> None:
    listing = [blob("a" * 40, timedelta(days=2)), blob("b" * 40, timedelta(days=2)),
               blob("c" * 40, timedelta(hours=1)), blob("d" * 40, timedelta(days=3))]
    decision = deletable(listing, referenced={"a" * 40}, cutoff=NOW - timedelta(hours=24))
    assert [b.sha1 for b in decision.delete] == ["b" * 40, "d" * 40]
    assert decision.too_young == 1


def test_deletable_never_takes_a_referenced_blob_whatever_its_age() -> None:
    listing = [blob(f"{i:040d}", timedelta(days=i)) for i in range(10)]
    referenced = {b.sha1 for b in listing}
    decision = deletable(listing, referenced, cutoff=NOW)
    assert decision.delete == [] and decision.too_young == 0


def test_deletable_with_no_grace_takes_every_unreferenced_blob() -> None:
    listing = [blob(f"{i:040d}", timedelta(seconds=1)) for i in range(5)]
    assert len(deletable(listing, set(), cutoff=NOW).delete) == 5
