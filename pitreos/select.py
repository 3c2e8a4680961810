"""Choosing backups: by name, ``latest``, tag, time (``--before``) and metadata (``--where``).

The catalog answers every query; no manifest is read from the store.
"""

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from .catalog import BackupRecord
from .errors import BackupNotFound, UsageError

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

    def holds(self, meta: dict[str, str]) -> bool:
        if self.key not in meta:
            return False
        left, right = _as_number(meta[self.key]), _as_number(self.value)
        if isinstance(left, float) and isinstance(right, float):
            return _OPERATORS[self.op](left, right)
        return _OPERATORS[self.op](meta[self.key], self.value)


def _as_number(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def parse_where(text: str) -> Condition:
    """``key<op>value`` with op one of = != < <= > >= (numeric when both are numbers)."""
    match = _WHERE_RE.fullmatch(text)
    if match is None or not match.group(3):
        raise UsageError(
            f"invalid --where {text!r}: use KEY OP VALUE with OP one of = != < <= > >=, "
            "e.g. 'block<=123456'"
        )
    return Condition(*match.groups())


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
            and all(c.holds(record.meta) for c in self.where)
        )

    def apply(self, records: list[BackupRecord]) -> list[BackupRecord]:
        return [r for r in records if self.matches(r)]


def choose(records: list[BackupRecord], name: str, backup_filter: BackupFilter) -> BackupRecord:
    """The backup called ``name``, or for ``latest`` the newest that matches the filter."""
    if name != "latest":
        for record in records:
            if record.name == name:
                if not backup_filter.matches(record):
                    raise BackupNotFound(f"backup {name} does not match the filters given")
                return record
        raise BackupNotFound(f"no backup named {name!r}; see 'pitreos list'")
    matching = backup_filter.apply(records)
    if not matching:
        raise BackupNotFound("no backup matches the filters given; see 'pitreos list'")
    return max(matching, key=lambda r: (r.created, r.name))
