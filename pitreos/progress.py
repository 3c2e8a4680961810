"""Progress reporting: the engine calls a :class:`Progress`; the CLI draws it with rich."""

from typing import Protocol


class Progress(Protocol):
    def start(self, phase: str, total_bytes: int) -> None: ...

    def advance(self, nbytes: int) -> None: ...

    def finish(self) -> None: ...


class NoProgress:
    """Progress that shows nothing (library use, or stderr not a terminal)."""

    def start(self, phase: str, total_bytes: int) -> None:
        pass

    def advance(self, nbytes: int) -> None:
        pass

    def finish(self) -> None:
        pass


class RichProgress:
    """A progress bar on stderr, for terminals."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )
        from rich.progress import Progress as Bar

        self._bar = Bar(
            TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
            TransferSpeedColumn(), TimeRemainingColumn(),
            console=Console(stderr=True), transient=True,
        )
        self._task: object = None

    def start(self, phase: str, total_bytes: int) -> None:
        self._bar.start()
        self._task = self._bar.add_task(phase, total=total_bytes)

    def advance(self, nbytes: int) -> None:
        # called from worker threads: rich's Progress is thread-safe
        self._bar.advance(self._task, nbytes)  # type: ignore[arg-type]

    def finish(self) -> None:
        self._bar.stop()
