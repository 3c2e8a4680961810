"""The ``pitreos`` group: its global options, where settings come from, and ``main``,
which turns every outcome into an exit code, a one-line error and, with ``--json``, the
result document."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import click

from .. import __version__, config
from .. import log as logsetup
from ..errors import PitreosError, Stopped
from ..launch import catch_stop_signals
from ..stores import default_store_url
from . import browse, maintain, transfer
from .common import GlobalOptionsGroup, Settings, envelope

EXIT_CODES = """\b
Exit codes:
  0    success
  1    failure (the one-line message says what)
  2    usage: a bad flag, argument, value or config file
  10   no pitreos store there ('pitreos init' creates one)
  11   locked: the catalog or a node's state file is in use by another process
  12   access denied: credentials refused or lacking a permission
  70   a bug in pitreos (-vv or PITREOS_TRACEBACK=1 shows the traceback)
  129  stopped by SIGHUP, 130 interrupted (Ctrl-C), 143 stopped by SIGTERM
       (a signal pitreos was started ignoring, as under nohup, stays ignored)

\b
Settings come from flags, then PITREOS_* environment variables (PITREOS_KEEP_LAST, or
PITREOS_GC_KEEP_LAST for one command), then the profile of the config file
(--profile), then the defaults: 'pitreos config show' says which.
"""


@click.group(cls=GlobalOptionsGroup, epilog=EXIT_CODES,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="pitreos")
@click.option("--store", envvar="PITREOS_STORE", default=default_store_url,
              show_default="a directory under the user's data dir, e.g. "
              "~/.local/share/pitreos/store",
              metavar="URL", help="Where backups live: file:///path, gs://bucket/prefix, "
              "s3://bucket/prefix, azblob://container/prefix, https://host/prefix "
              "(read-only). Create it with 'pitreos init'. Env: PITREOS_STORE.")
@click.option("--catalog", envvar="PITREOS_CATALOG", type=click.Path(path_type=Path),
              help="The local SQLite catalog [default: one per store under the user's cache "
              "dir]. Env: PITREOS_CATALOG.")
@click.option("--parallel", type=click.IntRange(1, 256), metavar="N",
              help="On a local store, workers: processes (at most one a core) when there "
              "are 256 MiB or more to read or write (below 4 cores, a backup counts only "
              "the chunks it cannot compare with the previous backup's), threads below "
              "[default: 1 per core; "
              "cores as this process may use them: CPU affinity and a container's CPU "
              "limit count]. "
              "On an object store, requests in flight [default: adapted to the link, "
              "from 8 up to 128; with chunks over 1 MiB, up to 128 MiB of chunks].")
@click.option("--cache", envvar="PITREOS_CACHE", type=click.Path(path_type=Path),
              metavar="DIR", help="Local blob cache that restores read first and fill; "
              "only blobs whose hashes were checked enter it. Env: PITREOS_CACHE.")
@click.option("--retry-for", envvar="PITREOS_RETRY_FOR", default="5m", show_default=True,
              metavar="DURATION", help="Keep retrying an object store's transient errors "
              "(5xx, resets, stalls) this long before failing. Env: PITREOS_RETRY_FOR.")
@click.option("--request-timeout", envvar="PITREOS_REQUEST_TIMEOUT", default="2m",
              show_default=True, metavar="DURATION",
              help="Deadline of one request to an object store, whole (a trickling answer "
              "is cut and retried). An operation fails within --retry-for plus this. "
              "Env: PITREOS_REQUEST_TIMEOUT.")
@click.option("-v", "--verbose", count=True, help="More log events on stderr (-v, -vv).")
@click.option("-q", "--quiet", is_flag=True,
              help="Errors only: a command that succeeds prints nothing (for cron).")
@click.option("--log-json", is_flag=True, help="Log events (and progress) as JSON lines.")
@click.option("--json", "json_output", is_flag=True,
              help="Print one JSON document on stdout describing the result, success or "
              "failure (shapes: schema/json/ in the source).")
@click.option("--metrics-file", type=click.Path(path_type=Path, dir_okay=False),
              metavar="PATH", help="After backup, restore, gc and verify, update Prometheus "
              "textfile-collector metrics in PATH (atomically; docs/operations.md).")
@click.option("--progress-interval", default="30s", show_default=True, metavar="DURATION",
              help="Off a terminal, a progress line this often during long work (0s: "
              "none). In a terminal, a progress bar.")
@click.option("--config", type=click.Path(path_type=Path, dir_okay=False), metavar="PATH",
              help="Config file [default: $XDG_CONFIG_HOME/pitreos/config.toml]. Env: "
              "PITREOS_CONFIG.")
@click.option("--profile", metavar="NAME",
              help="Take defaults from [profile.NAME] of the config file [default: "
              "[profile.default] if there is one]. Env: PITREOS_PROFILE.")
@click.pass_context
def cli(ctx: click.Context, /, **options: Any) -> None:
    """Point-in-time backup and restore for very large, sparse and append-only files.

    Typical use: `pitreos init` once, `pitreos backup --incremental DIR` from cron,
    `pitreos gc --keep-last 48`, and on a new machine `pitreos catalog sync` then
    `pitreos restore latest DIR`.
    """
    s = ctx.ensure_object(Settings)
    options["json"] = options.pop("json_output")
    for name, value in options.items():
        if name not in s.from_flag_after:  # given after the command: that one wins
            setattr(s, name, value)
    s.command = ctx.invoked_subcommand or ""
    logsetup.configure(s.verbose, s.log_json, quiet=s.quiet)


for _command in (*transfer.COMMANDS, *browse.COMMANDS, *maintain.COMMANDS):
    cli.add_command(_command)


config.set_environment_names(cli)


def _verbosity(args: list[str]) -> int:
    """How many -v the command line holds (for a bug's traceback, before click ran)."""
    count = 0
    for arg in args:
        if arg == "--verbose":
            count += 1
        elif arg.startswith("-") and not arg.startswith("--") and set(arg[1:]) == {"v"}:
            count += len(arg) - 1
    return count


def _stop_on(signum: int, frame: object) -> None:
    raise Stopped(signum)


def _finish(s: Settings, exit_code: int, error: str | None = None) -> None:
    """The --json document, then the exit code."""
    if s.json or (s.command == "" and "--json" in sys.argv[1:]):
        click.echo(json.dumps(envelope(s, exit_code=exit_code, error=error), indent=2))
    sys.exit(exit_code)


def main() -> None:
    s = Settings()
    args = sys.argv[1:]
    try:
        # SIGTERM and SIGHUP unwind like Ctrl-C, so markers are removed and nothing half
        # done is published; installed inside the try, since a signal that lands as the
        # handler changes runs the new one at once
        catch_stop_signals(_stop_on)
        profile = config.load_profile(args, os.environ)
        s.loaded_profile = profile
        default_map = config.default_map(cli, profile) if profile else None
        cli.main(args, standalone_mode=False, prog_name="pitreos", obj=s,
                 default_map=default_map)
    except Stopped as exc:
        message = (f"stopped by {signal.Signals(exc.signum).name}; nothing incomplete "
                   "looks complete: run the command again")
        click.echo(f"pitreos: {message}", err=True)
        _finish(s, 128 + exc.signum, message)
    except PitreosError as exc:
        click.echo(f"pitreos: error: {exc}", err=True)
        _finish(s, exc.exit_code, str(exc))
    except click.exceptions.Abort:
        click.echo("pitreos: interrupted", err=True)
        _finish(s, 130, "interrupted")
    except click.UsageError as exc:
        command = exc.ctx.command_path if exc.ctx else "pitreos"
        click.echo(f"pitreos: error: {exc.format_message()} (see '{command} --help')",
                   err=True)
        _finish(s, exc.exit_code, exc.format_message())
    except click.ClickException as exc:
        click.echo(f"pitreos: error: {exc.format_message()}", err=True)
        _finish(s, exc.exit_code, exc.format_message())
    except KeyboardInterrupt:
        click.echo("pitreos: interrupted; nothing incomplete looks complete: run the command "
                   "again", err=True)
        _finish(s, 130, "interrupted")
    except BrokenPipeError:
        sys.exit(141)
    except Exception as exc:  # a bug: one line, and the traceback only when asked for
        if os.environ.get("PITREOS_TRACEBACK") or _verbosity(args) >= 2:
            raise
        click.echo(f"pitreos: internal error: {type(exc).__name__}: {exc} "
                   "(set PITREOS_TRACEBACK=1 for details)", err=True)
        _finish(s, 70, f"{type(exc).__name__}: {exc}")
    else:
        if s.command:  # not --help or --version
            _finish(s, 0)
