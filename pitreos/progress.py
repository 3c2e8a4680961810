"""Progress reporting: the engine calls a :class:`Progress`; the CLI chooses how it shows.

In a terminal, a rich progress bar. Off a terminal (journald, Kubernetes logs, cron
mail), a one-line event every N seconds, from a timer thread so that a phase that makes
no progress (a long listing, a stalled link) still says that it is alive.
"""

import threading
import time
from collections.abc import Callable
from typing import Any, Literal, Protocol

Unit = Literal["bytes", "blobs", "manifests"]


class Progress(Protocol):
    def start(self, phase: str, total: int, unit: Unit = "bytes") -> None:
        """``total`` may be an estimate (a restore's check: the space the local files
        take); a phase that does more than it is shown as done as far as it went."""

    def advance(self, amount: int) -> None: ...

    def finish(self) -> None: ...


class NoProgress:
    """Progress that shows nothing (library use, -q)."""

    def start(self, phase: str, total: int, unit: Unit = "bytes") -> None:
        pass

    def advance(self, amount: int) -> None:
        pass

    def finish(self) -> None:
        pass


def iec(n: float) -> str:
    """Bytes in IEC units (KiB, MiB, GiB): the one unit system of every output."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"


def amount(n: float, unit: Unit) -> str:
    return iec(n) if unit == "bytes" else f"{n:.0f} {unit}"


class IntervalProgress:
    """A progress event every ``interval`` seconds, handed to ``emit`` as fields:
    ``phase``, ``done``, ``total``, ``unit``, ``percent``, ``per_second``,
    ``seconds_left`` (None when unknown)."""

    def __init__(self, interval: float, emit: Callable[[dict[str, Any]], None]) -> None:
        self._interval = interval
        self._emit = emit
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._phase, self._unit = "", "bytes"
        self._total = self._done = 0
        self._started = 0.0

    def start(self, phase: str, total: int, unit: Unit = "bytes") -> None:
        self.finish()
        with self._lock:
            self._phase, self._total, self._unit, self._done = phase, total, unit, 0
            self._started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick, name="pitreos-progress",
                                        daemon=True)
        self._thread.start()

    def advance(self, amount: int) -> None:
        with self._lock:
            self._done += amount

    def finish(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None

    def fields(self) -> dict[str, Any]:
        with self._lock:
            done, total = self._done, self._total
            elapsed = time.monotonic() - self._started
        if total:
            total = max(total, done)  # an estimate that fell short
        rate = done / elapsed if elapsed > 0 else 0.0
        left = (total - done) / rate if rate > 0 and total >= done else None
        return {"phase": self._phase, "done": done, "total": total, "unit": self._unit,
                "percent": round(100 * done / total, 1) if total else None,
                "per_second": round(rate, 1), "seconds_left": round(left) if left else None}

    def _tick(self) -> None:
        while not self._stop.wait(self._interval):
            self._emit(self.fields())


def describe(fields: dict[str, Any]) -> str:
    """An :class:`IntervalProgress` event as one line for people."""
    unit: Unit = fields["unit"]
    line = f"{fields['phase']}: {amount(fields['done'], unit)}"
    if fields["total"]:
        line += f" of {amount(fields['total'], unit)} ({fields['percent']}%)"
    line += f", {amount(fields['per_second'], unit)}/s"
    if fields["seconds_left"] is not None:
        line += f", about {fields['seconds_left']} s left"
    return line


class RichProgress:
    """A progress bar on stderr, for terminals."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import Progress as Bar

        self._console = Console(stderr=True)
        self._bar: Bar | None = None
        self._task: Any = None

    def start(self, phase: str, total: int, unit: Unit = "bytes") -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )
        from rich.progress import Progress as Bar

        self.finish()
        columns: tuple[Any, ...] = ((DownloadColumn(binary_units=True),
                                     TransferSpeedColumn()) if unit == "bytes"
                                    else (MofNCompleteColumn(), TextColumn(unit)))
        self._bar = Bar(TextColumn("{task.description}"), BarColumn(), *columns,
                        TimeRemainingColumn(), console=self._console, transient=True)
        self._bar.start()
        self._task = self._bar.add_task(phase, total=total)

    def advance(self, amount: int) -> None:
        # called from worker threads: rich's Progress is thread-safe
        if self._bar is not None:
            self._bar.advance(self._task, amount)

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
