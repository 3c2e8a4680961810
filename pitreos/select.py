"""Choosing backups: by name, ``latest``, tag, time (``--before``) and metadata (``--where``).

The catalog answers every query; no manifest is read from the store.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from .errors import BackupNotFound, UsageError

if TYPE_CHECKING:  # the catalog (sqlite-utils) is not imported to parse a flag
    from .catalog import BackupRecord

_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "<=": operator.le, ">=": operator.ge, "!=": operator.ne,
    "=": operator.eq, "<": operator.lt, ">": operator.gt,
}
_WHERE_RE = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_.-]*)\s*(<=|>=|!=|=|<|>)\s*(.*?)\s*")
_DURATION_RE = re.compile(r"(\d+)([smhdw])")
_DURATIONS_RE = re.compile(r"(?:\d+[smhdw])+")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


@dataclass(frozen=True, slots=True)
class Condition:
    key: str
    op: str
    value: str

    def holds(self, meta: dict[str, str], backup: str) -> bool:
        """Numbers compare as numbers, text as text; a number compared with text is an
        error (``block<=5k`` must not pick a backup by comparing strings)."""
        if self.key not in meta:
            return False
        left, right = _as_number(meta[self.key]), _as_number(self.value)
        if isinstance(left, float) != isinstance(right, float):
            raise UsageError(
                f"invalid --where {self}: {self.key} is {meta[self.key]!r} in backup "
                f"{backup}, which does not compare with {self.value!r} (a number with text)")
        if isinstance(left, float) and isinstance(right, float):
            return _OPERATORS[self.op](left, right)
        return _OPERATORS[self.op](meta[self.key], self.value)

    def __str__(self) -> str:
        return f"'{self.key}{self.op}{self.value}'"


def _as_number(text: str) -> float | str:
    try:
        value = float(text)
    except ValueError:
        return text
    return value if math.isfinite(value) else text


def parse_where(text: str) -> Condition:
    """``key<op>value`` with op one of = != < <= > >= (numeric when both are numbers)."""
    match = _WHERE_RE.fullmatch(text)
    if match is None or not match.group(3) or match.group(3)[0] in "<>=!":
        raise UsageError(
            f"invalid --where {text!r}: use KEY OP VALUE with OP one of = != < <= > >=, "
            "e.g. 'block<=123456'"
        )
    return Condition(*match.groups())


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    import difflib  # here, for a mistake: ~2 ms of every start-up otherwise (importtime)

    close = difflib.get_close_matches(word, sorted(set(choices)), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def parse_time(text: str, flag: str, now: datetime | None = None) -> datetime:
    """RFC 3339 (``2026-11-26T10:00:00Z``) or a duration ago (``2h``, ``1d12h``)."""
    if _DURATIONS_RE.fullmatch(text):
        return (now or datetime.now(UTC)) - parse_duration(text, flag)
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise UsageError(
            f"invalid {flag} {text!r}: use RFC 3339 (2026-11-26T10:00:00Z) or a duration "
            "such as 2h, 90m, 1d"
        ) from exc
    if when.tzinfo is None:
        raise UsageError(f"invalid {flag} {text!r}: give a time zone (Z or +HH:MM)")
    return when


def parse_duration(text: str, flag: str) -> timedelta:
    if not _DURATIONS_RE.fullmatch(text):
        raise UsageError(f"invalid {flag} {text!r}: use a duration such as 0s, 30m, 6h, 2d")
    delta = timedelta()
    for amount, unit in _DURATION_RE.findall(text):
        delta += timedelta(**{_UNITS[unit]: int(amount)})
    return delta


@dataclass(frozen=True)
class BackupFilter:
    tag: str | None = None
    before: datetime | None = None
    where: tuple[Condition, ...] = field(default_factory=tuple)

    def matches(self, record: BackupRecord) -> bool:
        return (
            (self.tag is None or record.tag == self.tag)
            and (self.before is None or record.created <= self.before)
            and all(c.holds(record.meta, record.name) for c in self.where)
        )

    def apply(self, records: list[BackupRecord]) -> list[BackupRecord]:
        """The records that match; a tag or metadata key that no backup has is an error
        (a typo must not silently match nothing)."""
        if records and self.tag is not None and all(r.tag != self.tag for r in records):
            raise BackupNotFound(f"no backup has tag {self.tag!r}"
                                 f"{did_you_mean(self.tag, (r.tag for r in records))}")
        keys = {k for r in records for k in r.meta}
        for condition in self.where:
            if records and condition.key not in keys:
                raise UsageError(f"invalid --where {condition}: no backup has metadata "
                                 f"{condition.key!r}{did_you_mean(condition.key, keys)}")
        return [r for r in records if self.matches(r)]


def choose(records: list[BackupRecord], name: str, backup_filter: BackupFilter) -> BackupRecord:
    """The backup called ``name`` (or the only one whose name starts so), or for
    ``latest`` the newest that matches the filter."""
    if name != "latest":
        exact = [r for r in records if r.name == name]
        found = exact or [r for r in records if r.name.startswith(name)]
        if len(found) > 1:
            shown = ", ".join(sorted(r.name for r in found)[:5])
            raise BackupNotFound(f"{name!r} names {len(found)} backups ({shown}"
                                 f"{', ...' if len(found) > 5 else ''}): give more of the name")
        if not found:
            hint = did_you_mean(name, [*(r.name for r in records), "latest"])
            raise BackupNotFound(f"no backup named {name!r}{hint}; see 'pitreos list'")
        record = found[0]
        if not backup_filter.matches(record):
            raise BackupNotFound(f"backup {record.name} does not match the filters given")
        return record
    matching = backup_filter.apply(records)
    if not matching:
        raise BackupNotFound("no backup matches the filters given; see 'pitreos list'")
    return max(matching, key=lambda r: (r.created, r.name))
