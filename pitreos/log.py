"""Logging: structlog events with fields, carried by the standard library's ``logging``.

A library user sees nothing unless they configure logging: the ``pitreos`` logger has a
:class:`logging.NullHandler`, and events go to ``logging`` (never to stdout), so an
application's own handlers and levels decide. :func:`configure` is what the CLI calls:
a handler on stderr that renders events as console lines or JSON.

structlog is imported only when an event is actually emitted (a level that is enabled)
or rendered: importing it costs about 100 ms (``python -X importtime``, structlog 25.x
with its dev renderer), a third of the CLI's start-up, and most runs log nothing.
"""

import logging
import sys
from typing import Any

ROOT_LOGGER = "pitreos"
logging.getLogger(ROOT_LOGGER).addHandler(logging.NullHandler())


class Logger:
    """What :func:`get_logger` returns: ``info`` and ``warning`` (and ``debug``,
    ``error``) with an event name and fields, as structlog's bound logger takes them;
    the structlog logger behind it is made on the first event that is not dropped."""

    def __init__(self, name: str) -> None:
        self._logging = logging.getLogger(name)
        self._structlog: Any = None

    def _emit(self, level: int, method: str, event: str, fields: dict[str, Any]) -> None:
        if not self._logging.isEnabledFor(level):
            return  # dropped: one level check, no structlog
        if self._structlog is None:
            import structlog

            self._structlog = structlog.wrap_logger(
                self._logging, wrapper_class=structlog.stdlib.BoundLogger, processors=[
                    structlog.stdlib.filter_by_level, structlog.stdlib.add_log_level,
                    structlog.stdlib.ProcessorFormatter.wrap_for_formatter])
        getattr(self._structlog, method)(event, **fields)

    def debug(self, event: str, **fields: Any) -> None:
        self._emit(logging.DEBUG, "debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._emit(logging.INFO, "info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._emit(logging.WARNING, "warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._emit(logging.ERROR, "error", event, fields)


def get_logger(name: str) -> Logger:
    """A logger writing structlog events to the standard library logger ``name``,
    whatever the application did (or did not do) with structlog's global configuration."""
    return Logger(name)


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stderr handler whose structlog formatter is built on the first record."""

    def __init__(self, json: bool) -> None:
        super().__init__(sys.stderr)
        self._json = json
        self._ready = False

    def format(self, record: logging.LogRecord) -> str:
        if not self._ready:
            import structlog

            renderer: Any = (structlog.processors.JSONRenderer() if self._json
                             else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()))
            self.setFormatter(structlog.stdlib.ProcessorFormatter(
                processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                            structlog.processors.TimeStamper(fmt="iso", utc=True), renderer],
                foreign_pre_chain=[structlog.stdlib.add_log_level],
            ))
            self._ready = True
        return super().format(record)


def configure(verbosity: int = 0, json: bool = False, *, quiet: bool = False) -> None:
    """For the CLI: warnings by default; ``-v`` adds info events, ``-vv`` debug events;
    ``quiet`` keeps errors only; ``json`` renders one JSON object a line."""
    level = logging.ERROR if quiet else {0: logging.WARNING, 1: logging.INFO}.get(
        verbosity, logging.DEBUG)
    root = logging.getLogger(ROOT_LOGGER)
    root.handlers = [_Handler(json)]
    root.setLevel(level)
    root.propagate = False
