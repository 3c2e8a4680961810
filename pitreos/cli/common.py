"""What every command shares: the global settings, the output rules, and the option
groups that several commands take.

Output rules: stdout carries the result (names, listings; with ``--json`` one JSON
document and nothing else); stderr carries summaries and notes for people (nothing with
``-q`` or ``--json``), progress, warnings and the one-line error.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from .. import log as logsetup
from ..errors import StoreNotFound, UsageError
from ..progress import IntervalProgress, NoProgress, Progress, RichProgress, describe, iec
from ..select import BackupFilter, parse_duration, parse_time, parse_where

if TYPE_CHECKING:
    from .. import metrics
    from ..config import Profile
    from ..workspace import Workspace

F = TypeVar("F", bound=Callable[..., Any])
_SIZE_RE = re.compile(r"(\d+)\s*([KMG]i?B?|B)?", re.IGNORECASE)
_INTEGER_RE = re.compile(r"-?(0|[1-9][0-9]{0,17})")


@dataclass
class Settings:
    """Global options, passed to every command. They are accepted before the command
    (``pitreos --store URL backup DIR``) and after it (``pitreos backup DIR --store
    URL``); given after, they win."""

    store: str = ""
    catalog: Path | None = None
    parallel: int | None = None
    cache: Path | None = None
    retry_for: str = "5m"
    request_timeout: str = "2m"
    verbose: int = 0
    log_json: bool = False
    quiet: bool = False
    json: bool = False
    metrics_file: Path | None = None
    progress_interval: str = "30s"
    config: Path | None = None
    profile: str | None = None
    # not options: the run's state
    loaded_profile: Profile | None = None
    from_flag_after: set[str] = field(default_factory=set)  # given after the command
    command: str = ""
    started: float = field(default_factory=time.monotonic)
    result: dict[str, Any] = field(default_factory=dict)  # the --json document's fields

    @contextmanager
    def workspace(self, *, create: bool = False, sync: bool = True,
                  compression_level: int = 3, store: str | None = None,
                  catalog: Path | None = None, rebuild_catalog: bool = False
                  ) -> Iterator[Workspace]:
        from ..workspace import Workspace

        timeout = parse_duration(self.request_timeout, "--request-timeout").total_seconds()
        if timeout <= 0:
            raise UsageError(f"invalid --request-timeout {self.request_timeout!r}: must be "
                             "positive")
        try:
            ws = Workspace.open(store or self.store,
                                catalog_path=catalog if store else self.catalog, create=create,
                                workers=self.parallel, compression_level=compression_level,
                                cache_dir=self.cache, rebuild_catalog=rebuild_catalog,
                                retry_for=self.retry_seconds(), request_timeout=timeout)
        except StoreNotFound as exc:
            if store is None and self.on_default_store:
                # the embedded default needs no init: say what creates it, not init
                raise StoreNotFound(
                    f"no backups yet: the default store {self.store} is created by the "
                    "first `pitreos backup` (or by `pitreos init`)") from exc
            raise
        try:
            if sync:
                ws.sync(progress=self.progress())
            yield ws
        finally:
            ws.close()

    def start_worker_server(self) -> None:
        """For backup and restore: start the worker processes' server now where the
        work will likely need it and cores are to spare (parallel.EARLY_SERVER_MIN_CORES
        says what this saved), before the store is opened and the work planned."""
        from .. import cores, parallel
        from ..stores import is_remote_url

        if parallel.starts_server_early(cores=cores.usable_cores(), workers=self.parallel,
                                        local_store=not is_remote_url(self.store)):
            parallel.start_process_server()

    @property
    def on_default_store(self) -> bool:
        """Whether the store is the embedded default, which a backup creates (no init)."""
        from ..stores import default_store_url

        return self.store == default_store_url()

    def retry_seconds(self) -> float:
        return parse_duration(self.retry_for, "--retry-for").total_seconds()

    def progress(self) -> Progress:
        """A bar in a terminal; off a terminal, a line every --progress-interval."""
        if self.quiet:
            return NoProgress()
        if sys.stderr.isatty():
            return RichProgress()
        interval = parse_duration(self.progress_interval, "--progress-interval")
        if interval.total_seconds() <= 0:
            return NoProgress()
        return IntervalProgress(interval.total_seconds(), self._emit_progress)

    def _emit_progress(self, fields: dict[str, Any]) -> None:
        if self.log_json:
            event = {"timestamp": datetime.now(UTC).isoformat(), "level": "info",
                     "event": "progress", "command": self.command, **fields}
            click.echo(json.dumps(event), err=True)
        else:
            click.echo(f"pitreos: {describe(fields)}", err=True)

    def recorded(self, operation: str, tag: str = "") -> AbstractContextManager[metrics.Run]:
        """Metrics of this run for --metrics-file (written when it ends, failed or not)."""
        from .. import metrics  # here: `list` and `--version` record none (0.6 ms)

        return metrics.recorded(self.metrics_file, metrics.Run(operation, tag))

    def elapsed(self) -> float:
        return time.monotonic() - self.started


_LOGGING = {"verbose", "log_json", "quiet"}  # settings that configure logging again


class GlobalOptionsGroup(click.Group):
    """A group whose commands take the root group's global options after them too
    (``pitreos backup DIR --store URL``). A command gets them when the group hands it
    out, about to parse or show its help: giving all 18 commands their ~15 options at
    import was ~5 ms of every start-up (324 ``click.Option``, cProfile)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._given: set[str] = set()  # names of the commands that have them

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None and not isinstance(command, click.Group) \
                and cmd_name not in self._given:
            _give_global_options(ctx.find_root().command, command)
            self._given.add(cmd_name)
        return command


def _give_global_options(root: click.Command, command: click.Command) -> None:
    """Give ``command`` the root group's global options (same names and types, read
    from the group), so that they work after it."""
    same = "Global option (see 'pitreos --help'), accepted here too."
    own = {opt for p in command.params for opt in getattr(p, "opts", [])}
    for param in root.params:
        if not isinstance(param, click.Option) or param.name in ("version", "help"):
            continue
        if own & set(param.opts):
            continue  # the command has an option of its own by that name
        attr = "json" if param.name == "json_output" else param.name or ""
        kind: dict[str, Any] = ({"count": True} if param.count else
                                {"is_flag": True} if param.is_flag else
                                {"type": param.type, "metavar": param.metavar})
        command.params.append(click.Option(param.opts, expose_value=False, help=same,
                                           callback=_after_the_command(attr),
                                           allow_from_autoenv=False, **kind))


def _after_the_command(attr: str) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """A global option given after the command: it overrides the one before it."""

    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if ctx.get_parameter_source(param.name or "") is not \
                click.core.ParameterSource.COMMANDLINE:
            return value  # the group's own option read the environment and profile
        s = ctx.find_object(Settings)
        assert s is not None
        setattr(s, attr, s.verbose + value if attr == "verbose" else value)
        s.from_flag_after.add(attr)
        if attr in _LOGGING:
            logsetup.configure(s.verbose, s.log_json, quiet=s.quiet)
        return value

    return callback


def settings() -> Settings:
    found = click.get_current_context().find_object(Settings)
    assert found is not None
    return found


def say(text: str) -> None:
    """A summary or a note for people, on stderr; nothing with -q (errors only) or
    --json (the document says it)."""
    s = click.get_current_context().find_object(Settings)
    if s is None or not (s.quiet or s.json):
        click.echo(text, err=True)


def line(text: str) -> None:
    """A line of the result on stdout; with --json the document replaces it."""
    if not settings().json:
        click.echo(text)


def result(**fields: Any) -> None:
    """Fields of the --json document (printed when the command ends, failed or not)."""
    settings().result.update(fields)


def envelope(s: Settings, *, exit_code: int, error: str | None) -> dict[str, Any]:
    """The --json document: what every command's schema starts with."""
    doc: dict[str, Any] = {"command": s.command or None, "ok": exit_code == 0,
                           "exit_code": exit_code, "seconds": round(s.elapsed(), 3)}
    if error is not None:
        doc["error"] = error
    return {**doc, **s.result}


def shown(name: str) -> str:
    """A file name for people: bytes that are not UTF-8 (the OS gives them as surrogate
    escapes) are shown as backslash escapes, so that output stays UTF-8 text."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def typed(value: str) -> int | str:
    """A metadata value for --json: an integer written as one (no sign but '-', no
    leading zero) is a number; anything else stays text."""
    return int(value) if _INTEGER_RE.fullmatch(value) else value


def typed_meta(meta: dict[str, str]) -> dict[str, int | str]:
    return {k: typed(v) for k, v in sorted(meta.items())}


human = iec  # sizes for people: the one unit system of every output


def in_flight(ws: Workspace) -> dict[str, int | bool] | None:
    """What ``--json`` says of the store requests in flight (None: a local store)."""
    limit = ws.repo.limit
    if limit is None:
        return None
    return {"limit": limit.current, "highest": limit.highest, "adaptive": limit.adapts}


def per_second(n: float, seconds: float) -> float:
    return round(n / seconds, 1) if seconds > 0 else 0.0


def parse_size(text: str, flag: str) -> int:
    match = _SIZE_RE.fullmatch(text.strip())
    if not match:
        raise UsageError(f"invalid {flag} {text!r}: use bytes or a size such as 4MiB")
    unit = (match.group(2) or "B").upper()[0]
    return int(match.group(1)) << {"B": 0, "K": 10, "M": 20, "G": 30}[unit]


def wait_seconds(text: str) -> float:
    return parse_duration(text, "--wait").total_seconds()


def hook_options(func: F) -> F:
    """--run-before and --run-after: commands around a backup or a restore (not
    --before/--after: restore's --before already chooses a backup by time)."""
    func = click.option("--run-after", "run_after", metavar="CMD",
                        help="Run CMD (sh -c) after, whether it succeeded or failed, with "
                        "PITREOS_RESULT (success or failure), PITREOS_BACKUP, "
                        "PITREOS_ERROR and the variables of --run-before.")(func)
    return click.option("--run-before", "run_before", metavar="CMD",
                        help="Run CMD (sh -c) first, with PITREOS_OPERATION, "
                        "PITREOS_DIRECTORY, PITREOS_STORE (and PITREOS_TAG or "
                        "PITREOS_BACKUP); if it fails, nothing else runs.")(func)


def wait_option(func: F) -> F:
    """--wait: for the same operation on the same directory and store, run on this host."""
    return click.option("--wait", default="0s", show_default=True, metavar="DURATION",
                        help="If the same operation on the same directory and store is "
                        "running on this host, wait this long for it to end (then exit 11, "
                        "as at once by default).")(func)


def filter_options(func: F) -> F:
    """--tag, --before, --where: shared by the commands that choose backups."""
    func = click.option("--where", "where", multiple=True, metavar="KEY<OP>VALUE",
                        help="Metadata condition, e.g. 'block<=123456' (= != < <= > >=; "
                        "numeric when both sides are numbers). Repeatable: all must hold.")(func)
    func = click.option("--before", metavar="TIME",
                        help="Only backups made at or before TIME: RFC 3339 "
                        "(2026-11-26T10:00:00Z) or a duration ago (2h, 1d).")(func)
    return click.option("--tag", help="Only backups of this tag.")(func)


def path_options(func: F) -> F:
    func = click.option("--exclude", multiple=True, metavar="GLOB",
                        help="Leave out paths matching GLOB ('**' spans directories). "
                        "Repeatable.")(func)
    return click.option("--include", multiple=True, metavar="GLOB",
                        help="Only paths matching GLOB, e.g. 'state/**'. Repeatable.")(func)


def make_filter(tag: str | None, before: str | None, where: tuple[str, ...]) -> BackupFilter:
    from ..manifest import validate_tag

    return BackupFilter(
        tag=validate_tag(tag) if tag else None,
        before=parse_time(before, "--before") if before else None,
        where=tuple(parse_where(w) for w in where),
    )
