"""Logging: structlog events with fields, carried by the standard library's ``logging``.

A library user sees nothing unless they configure logging: the ``pitreos`` logger has a
:class:`logging.NullHandler`, and events go to ``logging`` (never to stdout), so an
application's own handlers and levels decide. :func:`configure` is what the CLI calls:
a handler on stderr that renders events as console lines or JSON.
"""

import logging
import sys

import structlog

ROOT_LOGGER = "pitreos"
logging.getLogger(ROOT_LOGGER).addHandler(logging.NullHandler())

_PROCESSORS: tuple[structlog.types.Processor, ...] = (
    structlog.stdlib.filter_by_level,  # first: a dropped event costs one level check
    structlog.stdlib.add_log_level,
    structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A structlog logger writing to the standard library logger ``name``, whatever the
    application did (or did not do) with structlog's global configuration."""
    logger: structlog.stdlib.BoundLogger = structlog.wrap_logger(
        logging.getLogger(name), processors=list(_PROCESSORS),
        wrapper_class=structlog.stdlib.BoundLogger)
    return logger


def configure(verbosity: int = 0, json: bool = False, *, quiet: bool = False) -> None:
    """For the CLI: warnings by default; ``-v`` adds info events, ``-vv`` debug events;
    ``quiet`` keeps errors only; ``json`` renders one JSON object a line."""
    level = logging.ERROR if quiet else {0: logging.WARNING, 1: logging.INFO}.get(
        verbosity, logging.DEBUG)
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.TimeStamper(fmt="iso", utc=True), renderer],
        foreign_pre_chain=[structlog.stdlib.add_log_level],
    ))
    root = logging.getLogger(ROOT_LOGGER)
    root.handlers = [handler]
    root.setLevel(level)
    root.propagate = False
