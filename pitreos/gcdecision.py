"""What gc deletes, decided without touching a store: pure functions over records, unit
tested on their own (tests/unit/test_gcdecision.py). :mod:`pitreos.gc` carries them out.
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, Protocol, TypeVar

from .catalog import BackupRecord


@dataclass(frozen=True)
class RetentionPolicy:
    """A backup kept by any rule stays. ``None``: the rule is not used."""

    last: int | None = None
    hourly: int | None = None
    daily: int | None = None
    weekly: int | None = None
    monthly: int | None = None
    every_blocks: int | None = None  # one backup per this many blocks of head height

    def rules(self) -> list[tuple[str, int, Callable[[datetime], str] | None]]:
        """(name, how many, period key) for each rule in use; keep-last has no period."""
        periods: dict[str, Callable[[datetime], str]] = {
            "hourly": lambda t: t.strftime("%Y-%m-%dT%H"),
            "daily": lambda t: t.strftime("%Y-%m-%d"),
            "weekly": lambda t: "{}-W{:02d}".format(*t.isocalendar()[:2]),
            "monthly": lambda t: t.strftime("%Y-%m"),
        }
        rules: list[tuple[str, int, Callable[[datetime], str] | None]] = []
        if self.last is not None:
            rules.append(("last", self.last, None))
        for name, key in periods.items():
            count = getattr(self, name)
            if count is not None:
                rules.append((name, count, key))
        return rules


def plan_retention(records: list[BackupRecord], policy: RetentionPolicy) -> dict[str, list[str]]:
    """For backups of one tag: the names kept, each with the rules that keep it.

    keep-last N keeps the N newest; keep-daily N keeps the newest backup of each of the
    N most recent days that have one (likewise hourly, weekly, monthly).
    """
    newest_first = sorted(records, key=lambda r: (r.created, r.name), reverse=True)
    kept: dict[str, list[str]] = {}
    for name, count, period in policy.rules():
        seen: set[str] = set()
        for record in newest_first:
            bucket = record.name if period is None else period(record.created)
            if bucket in seen:
                continue
            if len(seen) >= count:
                break
            seen.add(bucket)
            kept.setdefault(record.name, []).append(
                f"{name} {len(seen)}" if period is None else f"{name} {bucket}")
    if policy.every_blocks:
        _keep_every_blocks(newest_first, policy.every_blocks, kept)
    return kept


def _keep_every_blocks(newest_first: list[BackupRecord], step: int,
                       kept: dict[str, list[str]]) -> None:
    """The newest backup of each range of ``step`` blocks of head height that has one
    (backups without a recorded head block are not kept by this rule)."""
    ranges: set[int] = set()
    for record in newest_first:
        block = record.meta.get("block", "")
        if not block.isdigit():
            continue
        first = int(block) // step * step
        if first in ranges:
            continue
        ranges.add(first)
        kept.setdefault(record.name, []).append(f"blocks {first}-{first + step - 1}")


class ListedBlob(Protocol):
    """A blob as a listing of the store shows it."""

    @property
    def sha1(self) -> str: ...

    @property
    def modified(self) -> datetime: ...


B = TypeVar("B", bound=ListedBlob)


@dataclass(frozen=True)
class BlobDecision(Generic[B]):
    delete: list[B]
    too_young: int  # unreferenced, but younger than the grace period


def deletable(listing: Iterable[B], referenced: set[str], cutoff: datetime) -> BlobDecision[B]:
    """The blobs of ``listing`` that gc deletes: referenced by no kept backup, and
    stored before ``cutoff`` (younger ones may be about to be referenced by a backup
    running elsewhere: the grace period)."""
    delete: list[B] = []
    too_young = 0
    for blob in listing:
        if blob.sha1 in referenced:
            continue
        if blob.modified < cutoff:
            delete.append(blob)
        else:
            too_young += 1
    return BlobDecision(delete, too_young)
