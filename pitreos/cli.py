"""The command line: parses arguments, calls the engine, prints. Nothing else."""

import json
import os
import re
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from . import __version__, hooks, nodeos
from . import log as logsetup
from .backup import DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE, BackupOptions, run_backup
from .catalog import BackupRecord
from .errors import PitreosError, Stopped, UsageError
from .manifest import Manifest, validate_meta_key, validate_tag
from .manifest import chunk_length as mf_chunk_length
from .progress import NoProgress, Progress, RichProgress
from .restore import RestoreOptions, RestorePlan, execute_restore, plan_restore
from .restore.plan import MAX_UNKNOWN_DELETED
from .select import BackupFilter, parse_time, parse_where
from .stores import default_store_url
from .walk import PathFilter
from .workspace import Workspace

F = TypeVar("F", bound=Callable[..., Any])
log = logsetup.get_logger(__name__)
_SIZE_RE = re.compile(r"(\d+)\s*([KMG]i?B?|B)?", re.IGNORECASE)


@dataclass
class Settings:
    """Global options, passed to every command. They are accepted before the command
    (``pitreos --store URL backup DIR``) and after it (``pitreos backup DIR --store
    URL``); given after, they win."""

    store: str
    catalog: Path | None = None
    parallel: int | None = None
    cache: Path | None = None
    retry_for: str = "5m"
    request_timeout: str = "2m"
    verbose: int = 0
    log_json: bool = False
    quiet: bool = False

    @contextmanager
    def workspace(self, *, create: bool = False, sync: bool = True,
                  compression_level: int = 3, store: str | None = None,
                  catalog: Path | None = None, rebuild_catalog: bool = False
                  ) -> Iterator[Workspace]:
        from .select import parse_duration

        timeout = parse_duration(self.request_timeout, "--request-timeout").total_seconds()
        if timeout <= 0:
            raise UsageError(f"invalid --request-timeout {self.request_timeout!r}: must be "
                             "positive")
        retry_for = parse_duration(self.retry_for, "--retry-for").total_seconds()
        ws = Workspace.open(store or self.store,
                            catalog_path=catalog if store else self.catalog, create=create,
                            workers=self.parallel, compression_level=compression_level,
                            cache_dir=self.cache, rebuild_catalog=rebuild_catalog,
                            retry_for=retry_for, request_timeout=timeout)
        try:
            if sync:
                ws.sync()
            yield ws
        finally:
            ws.close()


def _after_the_command(attr: str) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """A global option given after the command: it overrides the one before it."""

    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value in (None, False, 0, ()):
            return value
        settings = ctx.find_object(Settings)
        assert settings is not None
        setattr(settings, attr, settings.verbose + value if attr == "verbose" else value)
        if attr in ("verbose", "log_json", "quiet"):
            logsetup.configure(settings.verbose, settings.log_json, quiet=settings.quiet)
        return value

    return callback


def _global_options_after(group: click.Group, command: click.Command) -> None:
    """Give ``command`` the group's global options too (same names and types, read from
    the group), so that they work after it."""
    same = "Global option (see 'pitreos --help'), accepted here too."
    own = {opt for p in command.params for opt in getattr(p, "opts", [])}
    for param in group.params:
        if not isinstance(param, click.Option) or param.name not in _SETTINGS_FIELDS:
            continue  # --version, --help
        if own & set(param.opts):
            continue  # the command has an option of its own by that name
        kind: dict[str, Any] = ({"count": True} if param.count else
                                {"is_flag": True} if param.is_flag else
                                {"type": param.type, "metavar": param.metavar})
        command.params.append(click.Option(param.opts, expose_value=False, help=same,
                                           callback=_after_the_command(param.name),
                                           **kind))


def say(text: str) -> None:
    """A summary or a note for people, on stderr; nothing with -q (errors only)."""
    settings = click.get_current_context().find_object(Settings)
    if settings is None or not settings.quiet:
        click.echo(text, err=True)


def shown(name: str) -> str:
    """A file name for people: bytes that are not UTF-8 (the OS gives them as surrogate
    escapes) are shown as backslash escapes, so that output stays UTF-8 text."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def parse_size(text: str, flag: str) -> int:
    match = _SIZE_RE.fullmatch(text.strip())
    if not match:
        raise UsageError(f"invalid {flag} {text!r}: use bytes or a size such as 4MiB")
    unit = (match.group(2) or "B").upper()[0]
    return int(match.group(1)) << {"B": 0, "K": 10, "M": 20, "G": 30}[unit]


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def make_progress() -> Progress:
    return RichProgress() if sys.stderr.isatty() else NoProgress()


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


def wait_seconds(text: str) -> float:
    from .select import parse_duration

    return parse_duration(text, "--wait").total_seconds()


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
    return BackupFilter(
        tag=validate_tag(tag) if tag else None,
        before=parse_time(before, "--before") if before else None,
        where=tuple(parse_where(w) for w in where),
    )


EXIT_CODES = """\b
Exit codes:
  0    success
  1    failure (the one-line message says what)
  2    usage: a bad flag, argument or value
  10   the store does not exist
  11   locked: the catalog or a node's state file is in use by another process
  12   access denied: credentials refused or lacking a permission
  70   a bug in pitreos (-vv or PITREOS_TRACEBACK=1 shows the traceback)
  129  stopped by SIGHUP, 130 interrupted (Ctrl-C), 143 stopped by SIGTERM"""


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
             epilog=EXIT_CODES)
@click.version_option(__version__, prog_name="pitreos")
@click.option("--store", envvar="PITREOS_STORE", default=default_store_url,
              show_default="a directory under the user's data dir, e.g. "
              "~/.local/share/pitreos/store",
              metavar="URL", help="Where backups live: file:///path, gs://bucket/prefix, "
              "s3://bucket/prefix, azblob://container/prefix, https://host/prefix "
              "(read-only). Env: PITREOS_STORE.")
@click.option("--catalog", envvar="PITREOS_CATALOG", type=click.Path(path_type=Path),
              help="The local SQLite catalog [default: one per store under the user's cache "
              "dir]. Env: PITREOS_CATALOG.")
@click.option("--parallel", type=click.IntRange(1, 256), metavar="N",
              help="Worker threads [default: 1 per core for a local store, 16+ for object "
              "stores].")
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
@click.option("--log-json", is_flag=True, help="Log events as JSON lines.")
@click.pass_context
def cli(ctx: click.Context, store: str, catalog: Path | None, parallel: int | None,
        cache: Path | None, retry_for: str, request_timeout: str, verbose: int, quiet: bool,
        log_json: bool) -> None:
    """Point-in-time backup and restore for very large, sparse and append-only files.

    Typical use: `pitreos backup --incremental DIR` from cron, `pitreos gc --keep-last 48`,
    and on a new machine `pitreos catalog sync` then `pitreos restore latest DIR`.
    """
    logsetup.configure(verbose, log_json, quiet=quiet)
    ctx.obj = Settings(store, catalog, parallel, cache, retry_for, request_timeout, verbose,
                       log_json, quiet)


@cli.command()
@click.argument("directory", type=click.Path(path_type=Path, readable=False))
@click.option("--tag", default="default", show_default=True,
              help="Kind of backup (e.g. standard, history); tags are listed and chosen "
              "separately but share blobs.")
@click.option("--meta", multiple=True, metavar="KEY=VALUE",
              help="Free metadata stored in the manifest. Repeatable.")
@click.option("--incremental", is_flag=True,
              help="Build on the newest backup of the same tag: unchanged files are not "
              "read again.")
@click.option("--chunk-size", default=f"{DEFAULT_CHUNK_SIZE >> 20}MiB", show_default=True,
              metavar="SIZE", help="Chunk size (64KiB to 256MiB).")
@click.option("--compression-level", type=click.IntRange(-7, 22), default=3,
              show_default=True, help="zstd level.")
@click.option("--appendonly", multiple=True, metavar="GLOB",
              help="Files that are only ever appended to, besides the nodeos defaults "
              f"({', '.join(nodeos.APPEND_ONLY_DEFAULTS)}): with --incremental only their "
              "new tail is read. Repeatable.")
@click.option("--node/--no-node", default=None,
              help="Treat DIRECTORY as a nodeos data directory [default: detected from "
              "blocks/blocks.log or state/shared_memory.bin]: record the head block and "
              "the state's build environment.")
@click.option("--allow-dirty", is_flag=True,
              help="Back up a state file whose dirty flag is set (it will not open as is).")
@click.option("--keep-finalizer-safety", is_flag=True,
              help="Include finalizers/safety.dat (left out by default: restoring an old "
              "copy on a finalizer is dangerous).")
@path_options
@wait_option
@hook_options
@click.pass_obj
def backup(settings: Settings, directory: Path, tag: str, meta: tuple[str, ...],
           incremental: bool, chunk_size: str, compression_level: int,
           appendonly: tuple[str, ...], node: bool | None, allow_dirty: bool,
           keep_finalizer_safety: bool, include: tuple[str, ...],
           exclude: tuple[str, ...], wait: str, run_before: str | None,
           run_after: str | None) -> None:
    """Back up DIRECTORY. Prints the new backup's name on stdout.

    Every data chunk is read and hashed; only blobs the store lacks are sent. With
    --incremental, files whose size, mtime and inode match the newest backup of the same
    tag are not read again, and append-only files whose prefix is unchanged have only
    their new tail read."""
    size = parse_size(chunk_size, "--chunk-size")
    if not MIN_CHUNK_SIZE <= size <= MAX_CHUNK_SIZE:
        raise UsageError(f"invalid --chunk-size {chunk_size}: must be 64KiB to 256MiB")
    meta_values: dict[str, str] = {}
    for item in meta:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"invalid --meta {item!r}: use KEY=VALUE")
        meta_values[validate_meta_key(key)] = value
    options = BackupOptions(
        tag=validate_tag(tag), meta=meta_values, chunk_size=size, incremental=incremental,
        path_filter=PathFilter(include, exclude),
        appendonly=(*nodeos.APPEND_ONLY_DEFAULTS, *appendonly), node=node,
        allow_dirty=allow_dirty, keep_finalizer_safety=keep_finalizer_safety,
    )
    with settings.workspace(create=True, sync=False,  # run_backup syncs after its marker
                            compression_level=compression_level) as ws:
        options.workers = ws.workers
        hook_env = {"PITREOS_OPERATION": "backup", "PITREOS_DIRECTORY": str(directory),
                    "PITREOS_STORE": ws.repo.url, "PITREOS_TAG": options.tag}
        with ws.exclusive("backup", directory, wait_seconds(wait)), \
                hooks.around(run_before, run_after, hook_env) as outcome:
            result = run_backup(directory, ws.repo, ws.catalog, options, make_progress())
            outcome["PITREOS_BACKUP"] = result.manifest.name
    s = result.stats
    say(f"backed up {s.files} files ({s.files_unchanged} unchanged, {s.files_appended} "
        f"appended to): read {human(s.bytes_read)}, stored {s.blobs_stored} new blobs "
        f"({human(s.bytes_stored)}) in {s.seconds:.1f}s")
    if not settings.quiet:
        click.echo(result.manifest.name)


@cli.command()
@click.argument("args", nargs=-1, required=True, metavar="[BACKUP|latest] DIRECTORY")
@filter_options
@path_options
@click.option("--delete", "delete_extra", is_flag=True,
              help="Remove local files the backup does not have.")
@click.option("--dry-run", is_flag=True,
              help="Print what would be fetched, holed, truncated and deleted; change nothing.")
@click.option("--check-all", is_flag=True,
              help="Hash every local chunk, even of append-only files whose first and last "
              "chunks match.")
@click.option("--force", is_flag=True,
              help="Restore over a node state file that is locked by another process or "
              f"dirty, and let --delete remove more than {MAX_UNKNOWN_DELETED} local paths.")
@click.option("--keep-setuid", "keep_setid", is_flag=True,
              help="Restore setuid and setgid bits (left out by default, as tar does).")
@click.option("--write-through-hard-links", is_flag=True,
              help="Write into local files that have other hard links (by default they "
              "are replaced: a link may lead outside DIRECTORY).")
@wait_option
@hook_options
@click.pass_obj
def restore(settings: Settings, args: tuple[str, ...], tag: str | None,
            before: str | None, where: tuple[str, ...], include: tuple[str, ...],
            exclude: tuple[str, ...], delete_extra: bool, dry_run: bool, check_all: bool,
            force: bool, keep_setid: bool, write_through_hard_links: bool, wait: str,
            run_before: str | None, run_after: str | None) -> None:
    """Restore a backup into DIRECTORY, in place: only chunks that differ from the local
    files are fetched.

    BACKUP is a name or 'latest' (the default): the newest backup that matches --tag,
    --before and --where, e.g. the last one before block N:
    `pitreos restore --tag standard --where 'block<=123456' /var/lib/nodeos`.

    Safe by default: a node state file locked by a running nodeos, or dirty, is refused
    before anything changes; while it is restored its dirty flag stays set, so an
    interrupted restore never leaves a state that nodeos would open; nothing is written
    through a symlink or a hard link; --delete prints each path it removes."""
    if len(args) > 2:
        raise UsageError("restore takes [BACKUP|latest] DIRECTORY")
    name, dest = ("latest", args[0]) if len(args) == 1 else args
    backup_filter = make_filter(tag, before, where)
    with settings.workspace() as ws:
        manifest = ws.choose(name, backup_filter)
        options = RestoreOptions(workers=ws.workers, delete_extra=delete_extra,
                                 path_filter=PathFilter(include, exclude), check_all=check_all,
                                 force=force, keep_setid=keep_setid,
                                 write_through_links=write_through_hard_links)
        environment = nodeos.describe_state_environment(manifest.meta)
        if environment:
            say(f"note: {environment}")
        unused = options.path_filter.unused([e.path for e in manifest.entries])
        for pattern in unused:
            log.warning("restore.glob_matches_nothing", glob=pattern)
        hook_env = {"PITREOS_OPERATION": "restore", "PITREOS_DIRECTORY": str(dest),
                    "PITREOS_STORE": ws.repo.url, "PITREOS_BACKUP": manifest.name}
        with ws.exclusive("restore", Path(dest), wait_seconds(wait)):
            plan = plan_restore(manifest, Path(dest), options, make_progress())
            if dry_run:
                _print_plan(plan)
                return
            with hooks.around(run_before, run_after, hook_env):
                stats = execute_restore(plan, ws.repo, options, make_progress())
    say(f"restored {manifest.name} into {dest}: {stats.files} files; chunks checked "
        f"{stats.chunks_checked}, kept {stats.chunks_kept}, fetched {stats.chunks_fetched}, "
        f"holed {stats.chunks_holed}; fetched {human(stats.bytes_fetched)}, wrote "
        f"{human(stats.bytes_written)} in {stats.seconds:.1f}s")
    for rel in stats.deleted:
        say(f"deleted {shown(rel)} (not in the backup)")
    if stats.setid_dropped:
        say(f"note: setuid/setgid bits not restored on {len(stats.setid_dropped)} paths "
            f"({', '.join(map(shown, stats.setid_dropped[:3]))}...): --keep-setuid restores "
            "them")
    if plan.extra and not delete_extra:
        say(f"{len(plan.extra)} local paths are not in the backup (--delete removes them):")
        for rel in plan.extra:
            say(f"  {shown(rel)}")


def _print_plan(plan: RestorePlan) -> None:
    step = plan.manifest.chunk_size
    click.echo(f"dry run: restore {plan.manifest.name} into {plan.dest}")
    for fp in plan.files:
        fetch, hole = fp.bytes_of(fp.fetch, step), fp.bytes_of(fp.punch, step)
        if fetch or hole or fp.local_size != fp.entry.size:
            line = f"  {shown(fp.entry.path)}: fetch {len(fp.fetch)} chunks ({fetch} bytes)"
            line += f", hole {len(fp.punch)} chunks ({hole} bytes)"
            if fp.local_size is not None and fp.local_size > fp.entry.size:
                line += f", truncate {fp.local_size - fp.entry.size} bytes"
            click.echo(line)
    click.echo(f"total: fetch {plan.bytes_to_fetch()} bytes, hole {plan.bytes_to_punch()} "
               f"bytes, truncate {len(plan.truncated())} files")
    for rel in plan.extra:
        click.echo(f"  not in backup (deleted with --delete): {shown(rel)}")


def _record_json(r: BackupRecord) -> dict[str, Any]:
    return {"name": r.name, "tag": r.tag, "created": r.created.isoformat(),
            "files": r.file_count, "apparent_size": r.apparent_size,
            "data_size": r.data_size, "chunk_size": r.chunk_size, "meta": r.meta}


@cli.command("list")
@filter_options
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@click.pass_obj
def list_backups(settings: Settings, tag: str | None, before: str | None,
                 where: tuple[str, ...], as_json: bool) -> None:
    """List backups, newest first."""
    with settings.workspace() as ws:
        records = make_filter(tag, before, where).apply(ws.catalog.backups())
    if as_json:
        click.echo(json.dumps([_record_json(r) for r in records], indent=2))
        return
    for r in records:
        meta = " ".join(f"{k}={v}" for k, v in sorted(r.meta.items()))
        click.echo(f"{r.name}  {r.tag:<10} {r.file_count:>6} files  "
                   f"{human(r.data_size):>10} data  {meta}".rstrip())


def _manifest_totals(m: Manifest) -> dict[str, int]:
    files = m.files()
    return {"files": len(files), "apparent_size": sum(e.size for e in files),
            "data_size": sum(e.data_size for e in files), "unique_blobs": len(m.digests())}


@cli.command()
@click.argument("name", metavar="BACKUP")
@click.option("--manifest", "whole", is_flag=True,
              help="Print the whole manifest (YAML, every chunk) instead of a summary.")
@click.option("--json", "as_json", is_flag=True, help="JSON output (without chunk lists).")
@click.pass_obj
def show(settings: Settings, name: str, whole: bool, as_json: bool) -> None:
    """Summarise a backup: its name, tag, time, metadata and totals (a unique prefix of
    a name is enough). --manifest prints the manifest itself."""
    from .manifest import dump

    with settings.workspace() as ws:
        manifest = ws.choose(name)
    totals = _manifest_totals(manifest)
    if as_json:
        click.echo(json.dumps({"name": manifest.name, "tag": manifest.tag,
                               "created": manifest.created.isoformat(),
                               "chunk_size": manifest.chunk_size, "meta": manifest.meta,
                               "totals": totals}, indent=2))
        return
    environment = nodeos.describe_state_environment(manifest.meta)
    summary = (f"files: {totals['files']}, apparent size: {human(totals['apparent_size'])}, "
               f"data size: {human(totals['data_size'])}, unique blobs: "
               f"{totals['unique_blobs']}")
    if whole:
        click.echo(dump(manifest).decode(), nl=False)
        if environment:
            click.echo(f"# {environment}")
        click.echo(f"# {summary}")
        return
    click.echo(f"backup: {manifest.name}")
    click.echo(f"tag: {manifest.tag}")
    click.echo(f"created: {manifest.created.isoformat()}")
    click.echo(f"chunk size: {human(manifest.chunk_size)}")
    click.echo(summary)
    for key, value in sorted(manifest.meta.items()):
        click.echo(f"meta: {key}={value}")
    if environment:
        click.echo(f"note: {environment}")


@cli.command()
@click.argument("name", metavar="BACKUP")
@click.pass_obj
def files(settings: Settings, name: str) -> None:
    """List a backup's files with apparent size and data size."""
    with settings.workspace() as ws:
        manifest = ws.choose(name)
    for e in manifest.entries:
        if e.type == "file":
            click.echo(f"{e.size:>15} {e.data_size:>15}  {shown(e.path)}")
        elif e.type == "symlink":
            click.echo(f"{'':>15} {'':>15}  {shown(e.path)} -> {shown(e.target or '')}")


@cli.command()
@click.argument("old", metavar="OLD")
@click.argument("new", metavar="NEW")
@click.pass_obj
def diff(settings: Settings, old: str, new: str) -> None:
    """What changed from backup OLD to backup NEW: files added (+), removed (-),
    changed (M, with the chunks and bytes that differ), of another type (T), or with
    only their mode or time changed (U). From the manifests alone: nothing is fetched."""
    from .diff import diff_manifests

    with settings.workspace() as ws:
        older, newer = ws.choose(old), ws.choose(new)
    changes = diff_manifests(older, newer)
    marks = {"added": "+", "removed": "-", "changed": "M", "type": "T", "metadata": "U"}
    for change in changes:
        detail = (f"  ({change.chunks} chunks, {human(change.bytes)})"
                  if change.kind in ("added", "removed", "changed") and change.chunks else "")
        click.echo(f"{marks[change.kind]}    {shown(change.path)}{detail}")
    counts = {kind: sum(1 for c in changes if c.kind == kind) for kind in marks}
    say(f"{older.name} -> {newer.name}: {counts['added']} added, {counts['removed']} "
        f"removed, {counts['changed']} changed, {counts['type']} of another type, "
        f"{counts['metadata']} with new metadata; {sum(c.chunks for c in changes)} chunks, "
        f"{human(sum(c.bytes for c in changes))} differ")


@cli.command()
@click.argument("name", metavar="BACKUP")
@click.argument("path", metavar="PATH")
@click.pass_obj
def dump(settings: Settings, name: str, path: str) -> None:
    """Write one file of a backup to stdout (e.g. `pitreos dump latest config.ini >
    config.ini`). Every blob is checked before its bytes are written; holes come out as
    zeros."""
    from .select import did_you_mean

    with settings.workspace() as ws:
        manifest = ws.choose(name)
        entry = next((e for e in manifest.entries if e.path == path.strip("/")), None)
        if entry is None or entry.type != "file":
            hint = did_you_mean(path, (e.path for e in manifest.files()))
            raise UsageError(f"backup {manifest.name} has no file {path!r}{hint}")
        out = sys.stdout.buffer
        for index, chunk in enumerate(entry.chunks):
            length = mf_chunk_length(entry.size, manifest.chunk_size, index)
            if chunk.digest is None:
                out.write(bytes(length))
            else:
                data, _ = ws.repo.read_chunk(chunk.digest)
                if len(data) != length:
                    raise PitreosError(f"blob {chunk.digest.sha1} holds {len(data)} bytes, "
                                       f"chunk {index} of {path} is {length}")
                out.write(data)
        out.flush()


@cli.command()
@click.argument("name", metavar="BACKUP")
@click.option("--to", "to_url", required=True, metavar="URL",
              help="The destination store (it must exist).")
@click.option("--to-catalog", type=click.Path(path_type=Path),
              help="The destination's catalog [default: its own under the cache dir].")
@click.pass_obj
def copy(settings: Settings, name: str, to_url: str, to_catalog: Path | None) -> None:
    """Copy BACKUP to another store, sending only the blobs it lacks."""
    from .copy import copy_backup

    with settings.workspace() as src, settings.workspace(store=to_url,
                                                         catalog=to_catalog) as dst:
        manifest = src.choose(name)
        stats = copy_backup(manifest, src.repo, dst.repo, dst.catalog, dst.workers)
    if stats.already_there:
        say(f"{to_url} already holds {manifest.name}, identical: nothing sent")
        return
    say(f"copied {manifest.name} to {to_url}: {stats.blobs_copied} blobs "
               f"({human(stats.bytes_copied)}) sent, {stats.blobs_present} already there")


@cli.command()
@click.option("--keep-last", type=click.IntRange(0), metavar="N", help="Keep the N newest.")
@click.option("--keep-hourly", type=click.IntRange(0), metavar="N",
              help="Keep the newest of each of the last N hours that have backups.")
@click.option("--keep-daily", type=click.IntRange(0), metavar="N", help="Likewise, days.")
@click.option("--keep-weekly", type=click.IntRange(0), metavar="N", help="Likewise, ISO weeks.")
@click.option("--keep-monthly", type=click.IntRange(0), metavar="N", help="Likewise, months.")
@click.option("--tag", help="Only this tag [default: every tag, each on its own].")
@click.option("--grace", default="24h", show_default=True, metavar="DURATION",
              help="Never delete blobs younger than this (a backup elsewhere may be about "
              "to reference them); 0s when no backup can be running.")
@click.option("--dry-run", is_flag=True,
              help="List what would go, which rule keeps the rest, and the bytes freed.")
@click.option("--allow-empty", is_flag=True,
              help="Allow a policy that keeps no backup of a tag.")
@wait_option
@click.pass_obj
def gc(settings: Settings, keep_last: int | None, keep_hourly: int | None,
       keep_daily: int | None, keep_weekly: int | None, keep_monthly: int | None,
       tag: str | None, grace: str, dry_run: bool, allow_empty: bool, wait: str) -> None:
    """Delete the backups a retention policy does not keep, then every blob no
    remaining backup references.

    Per tag, a backup kept by any --keep-* rule stays. Safe while backups run on other
    machines (see docs/gc.md), safe to interrupt and run again."""
    from .gc import GCOptions, run_gc
    from .gcdecision import RetentionPolicy
    from .select import parse_duration

    options = GCOptions(
        policy=RetentionPolicy(keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly),
        tag=validate_tag(tag) if tag else None, grace=parse_duration(grace, "--grace"),
        dry_run=dry_run, allow_empty=allow_empty,
    )
    with settings.workspace(sync=False) as ws:
        options.workers = ws.workers
        with ws.exclusive("gc", None, wait_seconds(wait)):
            report = run_gc(ws.repo, ws.catalog, options)
    verb = "would delete" if dry_run else "deleted"
    for name in report.deleted_backups if not settings.quiet else []:
        click.echo(f"{verb} backup {name}")
    if settings.verbose or dry_run:  # one line a kept backup: not in a cron job's mail
        for name, reasons in sorted(report.kept.items()):
            click.echo(f"keep {name}  ({', '.join(reasons)})")
    say(f"{verb} {len(report.deleted_backups)} backups and {report.blobs_deleted} blobs, "
        f"freeing {human(report.bytes_freed)} ({report.bytes_freed} bytes); "
        f"{report.blobs_too_young} unreferenced blobs younger than --grace kept")
    if report.blob_deletion_skipped:
        say(f"note: {report.blob_deletion_skipped}")


@cli.command()
@click.argument("name", metavar="[BACKUP]", required=False)
@click.option("--all", "all_backups", is_flag=True, help="Every backup.")
@click.option("--deep", is_flag=True,
              help="Download every blob (in parallel) and check both hashes.")
@click.option("--repair", is_flag=True,
              help="Also remove damaged blobs from the store, so that every machine's next "
              "backup of the same data stores them again.")
@click.pass_obj
def verify(settings: Settings, name: str | None, all_backups: bool, deep: bool,
           repair: bool) -> None:
    """Check that backups restore: every blob they reference exists (one listing, no
    downloads), and with --deep that its content matches. Exits 1 on any damage,
    naming the backups and files it breaks.

    Damaged and missing blobs are marked in the local catalog: the next backup here
    that reads the same data stores them again (with --repair, every machine's does)."""
    from .verify import verify as run_verify

    if bool(name) == all_backups:
        raise UsageError("verify takes a BACKUP name or --all")
    with settings.workspace() as ws:
        backups = None if all_backups else [ws.choose(name or "latest").name]
        report = run_verify(ws.repo, ws.catalog, backups, deep=deep, workers=ws.workers,
                            repair=repair)
        sync = ws.last_sync
    bad_manifests = {**{n: "unreadable" for n in sync.unreadable},
                     **sync.quarantined} if sync is not None and all_backups else {}
    for manifest_name, problem in sorted(bad_manifests.items()):
        click.echo(f"manifest {manifest_name}: left out ({problem})")
    for damage in report.damage:
        click.echo(f"blob {damage.sha1}: {damage.problem}")
        for backup_name, path in damage.files:
            click.echo(f"  breaks {backup_name}: {shown(path)}")
    summary = (f"checked {report.blobs_checked} blobs of {report.backups} backups"
               f"{' (deep, ' + human(report.bytes_downloaded) + ' downloaded)' if deep else ''}")
    if bad_manifests and not report.damage:
        raise PitreosError(f"{summary}: {len(bad_manifests)} manifests left out as unreadable "
                           f"or conflicting: {', '.join(sorted(bad_manifests))}")
    if report.damage:
        repaired = (f"; {len(report.removed)} damaged blobs removed from the store"
                    if report.removed else "")
        raise PitreosError(f"{summary}: {len(report.damage)} blobs damaged, breaking "
                           f"{len(report.broken_backups())} backups: "
                           f"{', '.join(report.broken_backups())}{repaired}; the next backup "
                           "of the same data stores them again")
    say(f"{summary}: all good")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@click.pass_obj
def stats(settings: Settings, as_json: bool) -> None:
    """Backups, unique blobs, stored and logical bytes, dedup and compression ratios,
    per tag and in total (from the catalog)."""
    with settings.workspace() as ws:
        by_tag: dict[str, dict[str, Any]] = dict(ws.catalog.tag_stats())
    for v in by_tag.values():
        v["dedup_ratio"] = _ratio(v["logical_bytes"], v["unique_bytes"])
        v["compression_ratio"] = _ratio(v["unique_bytes"], v["stored_bytes"])
    if as_json:
        click.echo(json.dumps(by_tag, indent=2))
        return
    click.echo(f"{'tag':<12} {'backups':>8} {'blobs':>9} {'stored':>12} {'logical':>12} "
               f"{'dedup':>7} {'compr':>7}")
    for tag, v in by_tag.items():
        click.echo(f"{'(all)' if tag == '*' else tag:<12} {v['backups']:>8} "
                   f"{v['unique_blobs']:>9} {human(v['stored_bytes']):>12} "
                   f"{human(v['logical_bytes']):>12} {v['dedup_ratio'] or '-':>7} "
                   f"{v['compression_ratio'] or '-':>7}")


def _ratio(a: int, b: int) -> float | None:
    return round(a / b, 3) if b else None


@cli.command()
@click.option("--all", "everything", is_flag=True,
              help="Also remove the markers of operations that look alive (only when you "
              "know that none runs).")
@click.pass_obj
def unlock(settings: Settings, everything: bool) -> None:
    """List the markers that running backups and gcs leave in the store, and release
    those whose process is gone (same host: by host id, boot id and pid) or that were
    not refreshed for 6 hours.

    gc deletes no blob while a backup runs, and a backup waits for a running gc that
    deletes blobs: a marker left by a killed process holds the other side up until it
    goes stale (a marker of this host whose process is gone, at once), or until this
    releases it. A backup's marker is removed; a gc's is marked finished, since a
    backup that overlapped that gc must still learn of it. Finished gc markers are
    records that backups need for a week, not locks: they stay."""
    from .gcprotocol import marker_statuses, release_markers

    with settings.workspace(sync=False) as ws:
        statuses = marker_statuses(ws.repo)
        released = release_markers(ws.repo, statuses, everything=everything)
    done = {id(s) for s in released}
    for status in statuses:
        m = status.seen.marker
        started = datetime.fromtimestamp(m.started, UTC).isoformat(timespec="seconds")
        action = "released" if id(status) in done else "kept"
        click.echo(f"{action:<8} {m.kind:<6} {m.id}  host {m.host} pid {m.pid}  started "
                   f"{started}  {status.state}")
    say(f"{len(released)} markers released, {len(statuses) - len(released)} kept")


@cli.group()
def catalog() -> None:
    """The local catalog that mirrors the store."""


@catalog.command("sync")
@click.option("--rebuild", is_flag=True, help="Start from an empty catalog.")
@click.pass_obj
def catalog_sync(settings: Settings, rebuild: bool) -> None:
    """Bring the catalog level with the store (rebuilds it on a fresh machine)."""
    with settings.workspace(sync=False, rebuild_catalog=rebuild) as ws:
        report = ws.sync(list_blobs=True)
        stats = ws.catalog.blob_stats()
    say(f"catalog {ws.catalog.path}: {report.added} backups added, {report.removed} "
               f"removed; {stats['blobs']} referenced blobs; {report.missing_blobs} missing")
    for name in report.unreadable:
        say(f"unreadable manifest skipped: {name} (see the warning above)")
    for name in report.quarantined:
        say(f"conflicting manifest left out: {name} (see the warning above)")


@catalog.command("check")
@click.pass_obj
def catalog_check(settings: Settings) -> None:
    """Compare the catalog with the store (changes neither); exits 1 when they differ."""
    from .verify import check_catalog

    with settings.workspace(sync=False) as ws:
        result = check_catalog(ws.repo, ws.catalog)
    for name in result.manifests_only_in_store:
        click.echo(f"backup in the store, not in the catalog: {name}")
    for name in result.backups_only_in_catalog:
        click.echo(f"backup in the catalog, gone from the store: {name}")
    for sha1 in result.referenced_blobs_missing:
        click.echo(f"referenced blob missing from the store: {sha1}")
    if result.wrong_reference_counts:
        click.echo(f"blobs with a wrong reference count: {result.wrong_reference_counts}")
    if not result.consistent:
        raise PitreosError("the catalog differs from the store: run 'pitreos catalog sync' "
                           "(and 'pitreos verify --all' for missing blobs)")
    say("the catalog matches the store")


def _every_command(group: click.Group) -> Iterator[click.Command]:
    for command in group.commands.values():
        if isinstance(command, click.Group):
            yield from _every_command(command)
        else:
            yield command


_SETTINGS_FIELDS = {f.name for f in fields(Settings)}
for _command in _every_command(cli):
    _global_options_after(cli, _command)


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


def main() -> None:
    # systemd, Kubernetes and timeout stop with SIGTERM, a closed terminal sends SIGHUP:
    # both unwind like Ctrl-C, so markers are removed and nothing half done is published
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _stop_on)
    try:
        cli.main(standalone_mode=False, prog_name="pitreos")
    except Stopped as exc:
        click.echo(f"pitreos: stopped by {signal.Signals(exc.signum).name}; nothing "
                   "incomplete looks complete: run the command again", err=True)
        sys.exit(128 + exc.signum)
    except PitreosError as exc:
        click.echo(f"pitreos: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("pitreos: interrupted", err=True)
        sys.exit(130)
    except click.UsageError as exc:
        command = exc.ctx.command_path if exc.ctx else "pitreos"
        click.echo(f"pitreos: error: {exc.format_message()} (see '{command} --help')",
                   err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        click.echo(f"pitreos: error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("pitreos: interrupted; nothing incomplete looks complete: run the command "
                   "again", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(141)
    except Exception as exc:  # a bug: one line, and the traceback only when asked for
        if os.environ.get("PITREOS_TRACEBACK") or _verbosity(sys.argv[1:]) >= 2:
            raise
        click.echo(f"pitreos: internal error: {type(exc).__name__}: {exc} "
                   "(set PITREOS_TRACEBACK=1 for details)", err=True)
        sys.exit(70)
