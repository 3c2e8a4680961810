"""The commands that move data: backup, restore, copy. The engine is imported when a
command runs, not when the CLI starts (start-up time: docs/performance.md)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..defaults import (
    APPEND_ONLY_DEFAULTS,
    MAX_CHUNK_SIZE,
    MAX_UNKNOWN_DELETED,
    MIN_CHUNK_SIZE,
)
from ..errors import UsageError
from ..log import get_logger
from .common import (
    Settings,
    filter_options,
    hook_options,
    human,
    in_flight,
    line,
    make_filter,
    parse_size,
    path_options,
    per_second,
    result,
    say,
    shown,
    typed_meta,
    wait_option,
    wait_seconds,
)

if TYPE_CHECKING:
    from ..restore import RestorePlan
    from ..restore.execute import RestoreStats

log = get_logger(__name__)


@click.command()
@click.argument("directory", type=click.Path(path_type=Path, readable=False))
@click.option("--tag", default="default", show_default=True,
              help="Kind of backup (e.g. standard, history); tags are listed and chosen "
              "separately but share blobs.")
@click.option("--meta", multiple=True, metavar="KEY=VALUE",
              help="Free metadata stored in the manifest. Repeatable.")
@click.option("--incremental", is_flag=True,
              help="Build on the newest backup of the same tag: unchanged files are not "
              "read again.")
@click.option("--chunk-size", metavar="SIZE",
              help="Chunk size (64KiB to 256MiB) [default: the store's, set by 'pitreos "
              "init', 1MiB].")
@click.option("--compression-level", type=click.IntRange(-7, 22), default=3,
              show_default=True, help="zstd level.")
@click.option("--appendonly", multiple=True, metavar="GLOB",
              help="Files that are only ever appended to, besides the nodeos defaults "
              f"({', '.join(APPEND_ONLY_DEFAULTS)}): with --incremental only their "
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
@click.option("--exclude-caches", is_flag=True,
              help="Leave out what nodeos rebuilds (state/code_cache.bin); a restore then "
              "leaves any local copy alone.")
@click.option("--latest-snapshot-only", is_flag=True,
              help="Of the portable snapshots (snapshots/snapshot-*.bin), back up only the "
              "newest (by the block number in its name).")
@path_options
@wait_option
@hook_options
@click.pass_obj
def backup(settings: Settings, directory: Path, tag: str, meta: tuple[str, ...],
           incremental: bool, chunk_size: str | None, compression_level: int,
           appendonly: tuple[str, ...], node: bool | None, allow_dirty: bool,
           keep_finalizer_safety: bool, exclude_caches: bool, latest_snapshot_only: bool,
           include: tuple[str, ...],
           exclude: tuple[str, ...], wait: str, run_before: str | None,
           run_after: str | None) -> None:
    """Back up DIRECTORY. Prints the new backup's name on stdout.

    Every data chunk is read and hashed; only blobs the store lacks are sent. With
    --incremental, files whose size, mtime, ctime and inode match the newest backup of
    the same tag are not read again (unless modified within 2 s of that backup's scan),
    and append-only files whose prefix is unchanged have only their new tail read. The
    store must exist ('pitreos init'), except the default one."""
    settings.start_worker_server()
    from .. import hooks
    from ..backup import BackupOptions, run_backup
    from ..manifest import validate_meta_key, validate_tag
    from ..walk import PathFilter

    size = parse_size(chunk_size, "--chunk-size") if chunk_size else None
    if size is not None and not MIN_CHUNK_SIZE <= size <= MAX_CHUNK_SIZE:
        raise UsageError(f"invalid --chunk-size {chunk_size}: must be 64KiB to 256MiB")
    meta_values: dict[str, str] = {}
    for item in meta:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"invalid --meta {item!r}: use KEY=VALUE")
        meta_values[validate_meta_key(key)] = value
    options = BackupOptions(
        tag=validate_tag(tag), meta=meta_values, incremental=incremental,
        path_filter=PathFilter(include, exclude),
        appendonly=(*APPEND_ONLY_DEFAULTS, *appendonly), node=node,
        allow_dirty=allow_dirty, keep_finalizer_safety=keep_finalizer_safety,
        exclude_caches=exclude_caches, latest_snapshot_only=latest_snapshot_only,
    )
    result(tag=options.tag)
    with settings.recorded("backup", options.tag) as run, \
            settings.workspace(create=settings.on_default_store, sync=False,
                               compression_level=compression_level) as ws:
        # run_backup syncs the catalog after its marker is up
        options.workers = ws.workers
        options.chunk_size = size or (ws.description.chunk_size if ws.description
                                      else options.chunk_size)
        hook_env = {"PITREOS_OPERATION": "backup", "PITREOS_DIRECTORY": str(directory),
                    "PITREOS_STORE": ws.repo.url, "PITREOS_TAG": options.tag}
        with ws.exclusive("backup", directory, wait_seconds(wait)), \
                hooks.around(run_before, run_after, hook_env) as outcome:
            done = run_backup(directory, ws.repo, ws.catalog, options, settings.progress())
            outcome["PITREOS_BACKUP"] = done.manifest.name
        s = done.stats
        head = typed_meta(done.manifest.meta).get("block")
        run.values.update(last_run_bytes_read=s.bytes_read, last_run_bytes_stored=s.bytes_stored,
                          last_run_blobs_stored=s.blobs_stored)
        if isinstance(head, int):
            run.values["head_block"] = head
    result(backup=done.manifest.name, meta=typed_meta(done.manifest.meta), files=s.files,
           files_unchanged=s.files_unchanged, files_appended=s.files_appended,
           files_read_again_next_time=s.files_racy,
           chunks=s.chunks, blobs_stored=s.blobs_stored, bytes_read=s.bytes_read,
           bytes_stored=s.bytes_stored, read_bytes_per_second=per_second(s.bytes_read,
                                                                         s.seconds),
           requests_in_flight=in_flight(ws))
    say(f"backed up {s.files} files ({s.files_unchanged} unchanged, {s.files_appended} "
        f"appended to): read {human(s.bytes_read)} at {human(per_second(s.bytes_read, s.seconds))}"
        f"/s, stored {s.blobs_stored} new blobs ({human(s.bytes_stored)}) in {s.seconds:.1f}s")
    if not settings.quiet:
        line(done.manifest.name)


@click.command()
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
@click.option("--seed", "seeds", multiple=True, metavar="DIR",
              type=click.Path(path_type=Path, file_okay=False, exists=True),
              help="Take chunks from DIR (another node's data directory, an older copy) "
              "before fetching them: the same file at the same offset, used only when "
              "its blake3 matches the backup's. Repeatable.")
@click.option("--check", "check_after", is_flag=True,
              help="Then check DIRECTORY as nodeos needs it (as 'pitreos check-node'): "
              "index against log, head block and chain as recorded, a clean state.")
@wait_option
@hook_options
@click.pass_obj
def restore(settings: Settings, args: tuple[str, ...], tag: str | None,
            before: str | None, where: tuple[str, ...], include: tuple[str, ...],
            exclude: tuple[str, ...], delete_extra: bool, dry_run: bool, check_all: bool,
            force: bool, keep_setid: bool, write_through_hard_links: bool,
            seeds: tuple[Path, ...], check_after: bool, wait: str, run_before: str | None,
            run_after: str | None) -> None:
    """Restore a backup into DIRECTORY, in place: only chunks that differ from the local
    files are fetched.

    BACKUP is a name or 'latest' (the default): the newest backup that matches --tag,
    --before and --where, e.g. the last one before block N:
    `pitreos restore --tag standard --where 'block<=123456' /var/lib/nodeos`.

    Safe by default: a node state file locked by a running nodeos, or dirty, is refused
    before anything changes, and so is a block log of another chain than the backup's;
    while the state is restored its dirty flag stays set, so an interrupted restore
    never leaves a state that nodeos would open; nothing is written through a symlink or
    a hard link; --delete prints each path it removes."""
    settings.start_worker_server()
    from .. import hooks
    from ..parallel import WorkerPool
    from ..restore import RestoreOptions, execute_restore, plan_restore
    from ..restore.seeds import Seeds
    from ..walk import PathFilter

    if len(args) > 2:
        raise UsageError("restore takes [BACKUP|latest] DIRECTORY")
    name, dest = ("latest", args[0]) if len(args) == 1 else args
    backup_filter = make_filter(tag, before, where)
    result(directory=str(dest), dry_run=dry_run)
    with settings.recorded("restore", tag or "") as run, settings.workspace() as ws:
        manifest = ws.choose(name, backup_filter)
        run.tag = manifest.tag
        result(backup=manifest.name, tag=manifest.tag)
        options = RestoreOptions(workers=ws.workers, delete_extra=delete_extra,
                                 path_filter=PathFilter(include, exclude), check_all=check_all,
                                 force=force, keep_setid=keep_setid,
                                 write_through_links=write_through_hard_links,
                                 seeds=Seeds(seeds))
        from .. import nodeos  # not at start-up: `list` and `--version` need none of it

        environment = nodeos.describe_state_environment(manifest.meta)
        if environment:
            say(f"note: {environment}")
        unused = options.path_filter.unused([e.path for e in manifest.entries])
        for pattern in unused:
            log.warning("restore.glob_matches_nothing", glob=pattern)
        hook_env = {"PITREOS_OPERATION": "restore", "PITREOS_DIRECTORY": str(dest),
                    "PITREOS_STORE": ws.repo.url, "PITREOS_BACKUP": manifest.name}
        # one pool of workers hashes the local chunks, then fetches and writes
        with ws.exclusive("restore", Path(dest), wait_seconds(wait)), \
                WorkerPool(options.workers) as pool:
            plan = plan_restore(manifest, Path(dest), options, settings.progress(), pool)
            if dry_run:
                _report_plan(plan)
                return
            with hooks.around(run_before, run_after, hook_env):
                stats = execute_restore(plan, ws.repo, options, settings.progress(), pool)
                run.values.update(last_run_bytes_fetched=stats.stored_bytes_fetched,
                                  last_run_bytes_written=stats.bytes_written)
                result(requests_in_flight=in_flight(ws))
                _report_restore(stats, plan, delete_extra)
                if check_after:  # before the after hook: a failed check fails the restore
                    from .maintain import report_node_check

                    report_node_check(Path(dest), manifest.meta, manifest.name)


def _report_restore(stats: RestoreStats, plan: RestorePlan, delete_extra: bool) -> None:
    result(files=stats.files, chunks_checked=stats.chunks_checked,
           chunks_kept=stats.chunks_kept, chunks_fetched=stats.chunks_fetched,
           chunks_holed=stats.chunks_holed, bytes_fetched=stats.bytes_fetched,
           stored_bytes_fetched=stats.stored_bytes_fetched, chunks_seeded=stats.chunks_seeded,
           bytes_written=stats.bytes_written,
           fetched_bytes_per_second=per_second(stats.bytes_fetched, stats.seconds),
           deleted=[shown(p) for p in stats.deleted],
           setid_dropped=[shown(p) for p in stats.setid_dropped],
           not_in_backup=[] if delete_extra else [shown(p) for p in plan.extra])
    say(f"restored {plan.manifest.name} into {plan.dest}: {stats.files} files; chunks "
        f"checked {stats.chunks_checked}, kept {stats.chunks_kept}, fetched "
        f"{stats.chunks_fetched}, holed {stats.chunks_holed}"
        f"{f'; {stats.chunks_seeded} chunks from seeds' if stats.chunks_seeded else ''}; "
        f"fetched {human(stats.bytes_fetched)} of data "
        f"({human(stats.stored_bytes_fetched)} from the store) at "
        f"{human(per_second(stats.bytes_fetched, stats.seconds))}/s, wrote "
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


def _report_plan(plan: RestorePlan) -> None:
    """A dry run: what a restore would fetch, in the words of its summary."""
    step = plan.manifest.chunk_size
    changes = []
    line(f"dry run: restore {plan.manifest.name} into {plan.dest}")
    for fp in plan.files:
        fetch, hole = fp.bytes_of(fp.fetch, step), fp.bytes_of(fp.punch, step)
        truncate = (fp.local_size - fp.entry.size if fp.local_size is not None
                    and fp.local_size > fp.entry.size else 0)
        if fetch or hole or fp.local_size != fp.entry.size:
            changes.append({"path": shown(fp.entry.path), "chunks_to_fetch": len(fp.fetch),
                            "bytes_to_fetch": fetch, "chunks_to_hole": len(fp.punch),
                            "bytes_to_hole": hole, "bytes_to_truncate": truncate})
            text = (f"  {shown(fp.entry.path)}: fetch {len(fp.fetch)} chunks ({human(fetch)} "
                    f"of data), hole {len(fp.punch)} chunks ({human(hole)})")
            line(text + (f", truncate {human(truncate)}" if truncate else ""))
    total_fetch, total_hole = plan.bytes_to_fetch(), plan.bytes_to_punch()
    chunks = sum(len(fp.fetch) for fp in plan.files)
    line(f"total: fetch {chunks} chunks ({human(total_fetch)} of data), hole "
         f"{human(total_hole)}, truncate {len(plan.truncated())} files")
    for rel in plan.extra:
        line(f"  not in backup (deleted with --delete): {shown(rel)}")
    result(changes=changes, chunks_to_fetch=chunks, bytes_to_fetch=total_fetch,
           bytes_to_hole=total_hole, files_to_truncate=len(plan.truncated()),
           not_in_backup=[shown(p) for p in plan.extra])


@click.command()
@click.argument("name", metavar="BACKUP")
@click.option("--to", "to_url", required=True, metavar="URL",
              help="The destination store (it must exist: 'pitreos init').")
@click.option("--to-catalog", type=click.Path(path_type=Path),
              help="The destination's catalog [default: its own under the cache dir].")
@click.pass_obj
def copy(settings: Settings, name: str, to_url: str, to_catalog: Path | None) -> None:
    """Copy BACKUP to another store, sending only the blobs it lacks."""
    from ..copy import copy_backup

    with settings.workspace() as src, settings.workspace(store=to_url,
                                                         catalog=to_catalog) as dst:
        manifest = src.choose(name)
        started = time.monotonic()
        stats = copy_backup(manifest, src.repo, dst.repo, dst.catalog, dst.workers,
                            settings.progress())
        seconds = time.monotonic() - started
    result(backup=manifest.name, to=to_url, already_there=stats.already_there,
           blobs_copied=stats.blobs_copied, bytes_copied=stats.bytes_copied,
           blobs_present=stats.blobs_present,
           copied_bytes_per_second=per_second(stats.bytes_copied, seconds))
    if stats.already_there:
        say(f"{to_url} already holds {manifest.name}, identical: nothing sent")
        return
    say(f"copied {manifest.name} to {to_url}: {stats.blobs_copied} blobs "
        f"({human(stats.bytes_copied)}) sent at {human(per_second(stats.bytes_copied, seconds))}"
        f"/s, {stats.blobs_present} already there")


COMMANDS = (backup, restore, copy)
