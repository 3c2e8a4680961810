"""The commands that keep a store: init, gc, verify, stats, unlock, catalog, config,
check-node."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from .. import config as configuration
from ..defaults import DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE
from ..errors import NodeCheckFailed, PitreosError, StoreError, UsageError
from .common import (
    GlobalOptionsGroup,
    Settings,
    human,
    line,
    parse_size,
    per_second,
    result,
    say,
    shown,
    wait_option,
    wait_seconds,
)


@click.command()
@click.option("--chunk-size", default=f"{DEFAULT_CHUNK_SIZE >> 20}MiB", show_default=True,
              metavar="SIZE", help="The chunk size of this store's backups (64KiB to "
              "256MiB; a backup's --chunk-size overrides it).")
@click.pass_obj
def init(settings: Settings, chunk_size: str) -> None:
    """Create the store named by --store: write its description (format, id, chunk
    size, creation time). The only command that creates a store, except the default
    local one, so that a mistyped URL fails instead of starting an empty store. A bucket
    or container must exist; a local directory is made."""
    from ..workspace import init_store

    size = parse_size(chunk_size, "--chunk-size")
    if not MIN_CHUNK_SIZE <= size <= MAX_CHUNK_SIZE:
        raise UsageError(f"invalid --chunk-size {chunk_size}: must be 64KiB to 256MiB")
    description = init_store(settings.store, size, retry_for=settings.retry_seconds())
    result(store=settings.store, id=description.id, created=description.created,
           chunk_size=description.chunk_size, format=description.format)
    say(f"created pitreos store {settings.store} (id {description.id}, chunk size "
        f"{human(description.chunk_size)})")


@click.command()
@click.option("--keep-last", type=click.IntRange(0), metavar="N", help="Keep the N newest.")
@click.option("--keep-hourly", type=click.IntRange(0), metavar="N",
              help="Keep the newest of each of the last N hours that have backups.")
@click.option("--keep-daily", type=click.IntRange(0), metavar="N", help="Likewise, days.")
@click.option("--keep-weekly", type=click.IntRange(0), metavar="N", help="Likewise, ISO weeks.")
@click.option("--keep-monthly", type=click.IntRange(0), metavar="N", help="Likewise, months.")
@click.option("--keep-every-blocks", type=click.IntRange(1), metavar="N",
              help="Keep the newest backup of each range of N blocks of head height (e.g. "
              "1000000: one per million blocks), by the recorded head block.")
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
       keep_every_blocks: int | None, tag: str | None, grace: str, dry_run: bool,
       allow_empty: bool, wait: str) -> None:
    """Delete the backups a retention policy does not keep, then every blob no
    remaining backup references.

    Per tag, a backup kept by any --keep-* rule stays. Safe while backups run on other
    machines (see docs/gc.md), safe to interrupt and run again. Where the bucket keeps
    deleted objects (GCS or Azure soft delete, S3 versioning), deleted blobs stay billed
    until it lets them go: gc warns."""
    from ..gc import GCOptions, run_gc
    from ..gcdecision import RetentionPolicy
    from ..manifest import validate_tag
    from ..select import parse_duration

    options = GCOptions(
        policy=RetentionPolicy(keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly,
                               keep_every_blocks),
        tag=validate_tag(tag) if tag else None, grace=parse_duration(grace, "--grace"),
        dry_run=dry_run, allow_empty=allow_empty, progress=settings.progress(),
    )
    with settings.recorded("gc", options.tag or "") as run, \
            settings.workspace(sync=False) as ws:
        options.workers = ws.workers
        with ws.exclusive("gc", None, wait_seconds(wait)):
            report = run_gc(ws.repo, ws.catalog, options)
        kept, unknown = None, None
        if report.blobs_deleted:
            try:
                kept = ws.repo.deleted_kept()
            except StoreError as exc:  # gc's work is done: a note, not its exit status
                unknown = str(exc)
        run.values.update(last_run_blobs_deleted=report.blobs_deleted,
                          last_run_bytes_freed=report.bytes_freed,
                          last_run_backups_deleted=len(report.deleted_backups))
    verb = "would delete" if dry_run else "deleted"
    for name in report.deleted_backups if not settings.quiet else []:
        line(f"{verb} backup {name}")
    if settings.verbose or dry_run:  # one line a kept backup: not in a cron job's mail
        for name, reasons in sorted(report.kept.items()):
            line(f"keep {name}  ({', '.join(reasons)})")
    result(dry_run=dry_run, deleted_backups=report.deleted_backups,
           kept={name: reasons for name, reasons in sorted(report.kept.items())},
           blobs_deleted=report.blobs_deleted, bytes_freed=report.bytes_freed,
           blobs_too_young=report.blobs_too_young,
           blob_deletion_skipped=report.blob_deletion_skipped,
           deleted_kept_seconds=kept.seconds if kept else None,
           deleted_kept_by=kept.by if kept else None)
    say(f"{verb} {len(report.deleted_backups)} backups and {report.blobs_deleted} blobs, "
        f"freeing {human(report.bytes_freed)} ({report.bytes_freed} bytes); "
        f"{report.blobs_too_young} unreferenced blobs "
        "younger than --grace kept")
    if report.blob_deletion_skipped:
        say(f"note: {report.blob_deletion_skipped}")
    if kept:
        how_long = (f"for {kept.seconds / 86400:.1f} more days" if kept.seconds else
                    "until they are removed by hand: no lifecycle rule expires them")
        click.echo(f"pitreos: warning: the bucket of {ws.repo.url} keeps deleted objects "
                   f"({kept.by}): the {human(report.bytes_freed)} gc deleted stay billed "
                   f"{how_long} (see 'Deleted objects kept' in docs/operations.md)", err=True)
    if unknown:
        click.echo(f"pitreos: note: could not tell whether the bucket of {ws.repo.url} keeps "
                   f"deleted objects (soft delete, versioning): {unknown}", err=True)


@click.command()
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
    from ..verify import verify as run_verify

    if bool(name) == all_backups:
        raise UsageError("verify takes a BACKUP name or --all")
    with settings.recorded("verify") as run, settings.workspace() as ws:
        backups = None if all_backups else [ws.choose(name or "latest").name]
        report = run_verify(ws.repo, ws.catalog, backups, deep=deep, workers=ws.workers,
                            repair=repair, progress=settings.progress())
        sync = ws.last_sync
        run.values.update(last_run_blobs_checked=report.blobs_checked,
                          last_run_blobs_damaged=len(report.damage),
                          last_run_bytes_fetched=report.bytes_downloaded)
        bad_manifests = {**{n: "unreadable" for n in sync.unreadable},
                         **sync.quarantined} if sync is not None and all_backups else {}
        result(backups=backups, deep=deep, blobs_checked=report.blobs_checked,
               bytes_fetched=report.bytes_downloaded,
               manifests_left_out=dict(sorted(bad_manifests.items())),
               damage=[{"sha1": d.sha1, "problem": d.problem,
                        "breaks": [{"backup": b, "path": shown(p)} for b, p in d.files]}
                       for d in report.damage],
               broken_backups=report.broken_backups(), removed=report.removed)
        for manifest_name, problem in sorted(bad_manifests.items()):
            line(f"manifest {manifest_name}: left out ({problem})")
        for damage in report.damage:
            line(f"blob {damage.sha1}: {damage.problem}")
            for backup_name, path in damage.files:
                line(f"  breaks {backup_name}: {shown(path)}")
        rate = per_second(report.bytes_downloaded, settings.elapsed())
        summary = (f"checked {report.blobs_checked} blobs of {report.backups} backups"
                   + (f" (deep, {human(report.bytes_downloaded)} fetched at {human(rate)}/s)"
                      if deep else ""))
        if bad_manifests and not report.damage:
            raise PitreosError(f"{summary}: {len(bad_manifests)} manifests left out as "
                               "unreadable or conflicting: "
                               f"{', '.join(sorted(bad_manifests))}")
        if report.damage:
            repaired = (f"; {len(report.removed)} damaged blobs removed from the store"
                        if report.removed else "")
            raise PitreosError(f"{summary}: {len(report.damage)} blobs damaged, breaking "
                               f"{len(report.broken_backups())} backups: "
                               f"{', '.join(report.broken_backups())}{repaired}; the next "
                               "backup of the same data stores them again")
    say(f"{summary}: all good")


@click.command()
@click.pass_obj
def stats(settings: Settings) -> None:
    """Backups, unique blobs, stored and logical bytes, dedup and compression ratios,
    per tag and in total (from the catalog)."""
    with settings.workspace() as ws:
        by_tag: dict[str, dict[str, Any]] = dict(ws.catalog.tag_stats())
    for v in by_tag.values():
        v["dedup_ratio"] = _ratio(v["logical_bytes"], v["unique_bytes"])
        v["compression_ratio"] = _ratio(v["unique_bytes"], v["stored_bytes"])
    result(tags={tag: v for tag, v in by_tag.items() if tag != "*"},
           total=by_tag.get("*"))
    line(f"{'tag':<12} {'backups':>8} {'blobs':>9} {'stored':>12} {'logical':>12} "
         f"{'dedup':>7} {'compr':>7}")
    for tag, v in by_tag.items():
        line(f"{'(all)' if tag == '*' else tag:<12} {v['backups']:>8} "
             f"{v['unique_blobs']:>9} {human(v['stored_bytes']):>12} "
             f"{human(v['logical_bytes']):>12} {v['dedup_ratio'] or '-':>7} "
             f"{v['compression_ratio'] or '-':>7}")


def _ratio(a: int, b: int) -> float | None:
    return round(a / b, 3) if b else None


@click.command()
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
    from ..gcprotocol import marker_statuses, release_markers

    with settings.workspace(sync=False) as ws:
        statuses = marker_statuses(ws.repo)
        released = release_markers(ws.repo, statuses, everything=everything)
    done = {id(s) for s in released}
    rows = []
    for status in statuses:
        m = status.seen.marker
        started = datetime.fromtimestamp(m.started, UTC).isoformat(timespec="seconds")
        action = "released" if id(status) in done else "kept"
        rows.append({"action": action, "kind": m.kind, "id": m.id, "host": m.host,
                     "pid": m.pid, "started": started, "state": status.state})
        line(f"{action:<8} {m.kind:<6} {m.id}  host {m.host} pid {m.pid}  started "
             f"{started}  {status.state}")
    result(markers=rows, released=len(released), kept=len(statuses) - len(released))
    say(f"{len(released)} markers released, {len(statuses) - len(released)} kept")


@click.group(cls=GlobalOptionsGroup)
@click.pass_obj
def catalog(settings: Settings) -> None:
    """The local catalog that mirrors the store."""
    settings.command = f"catalog {click.get_current_context().invoked_subcommand}"


@catalog.command("sync")
@click.option("--rebuild", is_flag=True, help="Start from an empty catalog.")
@click.pass_obj
def catalog_sync(settings: Settings, rebuild: bool) -> None:
    """Bring the catalog level with the store (rebuilds it on a fresh machine)."""
    with settings.workspace(sync=False, rebuild_catalog=rebuild) as ws:
        report = ws.sync(list_blobs=True, progress=settings.progress())
        blob_stats = ws.catalog.blob_stats()
    result(catalog=str(ws.catalog.path), added=report.added, removed=report.removed,
           referenced_blobs=blob_stats["blobs"], missing_blobs=report.missing_blobs,
           unreadable=report.unreadable, quarantined=report.quarantined)
    say(f"catalog {ws.catalog.path}: {report.added} backups added, {report.removed} "
        f"removed; {blob_stats['blobs']} referenced blobs; {report.missing_blobs} missing")
    for name in report.unreadable:
        say(f"unreadable manifest skipped: {name} (see the warning above)")
    for name in report.quarantined:
        say(f"conflicting manifest left out: {name} (see the warning above)")


@catalog.command("check")
@click.pass_obj
def catalog_check(settings: Settings) -> None:
    """Compare the catalog with the store (changes neither); exits 1 when they differ."""
    from ..verify import check_catalog

    with settings.workspace(sync=False) as ws:
        found = check_catalog(ws.repo, ws.catalog)
    result(consistent=found.consistent,
           manifests_only_in_store=found.manifests_only_in_store,
           backups_only_in_catalog=found.backups_only_in_catalog,
           referenced_blobs_missing=found.referenced_blobs_missing,
           wrong_reference_counts=found.wrong_reference_counts)
    for name in found.manifests_only_in_store:
        line(f"backup in the store, not in the catalog: {name}")
    for name in found.backups_only_in_catalog:
        line(f"backup in the catalog, gone from the store: {name}")
    for sha1 in found.referenced_blobs_missing:
        line(f"referenced blob missing from the store: {sha1}")
    if found.wrong_reference_counts:
        line(f"blobs with a wrong reference count: {found.wrong_reference_counts}")
    if not found.consistent:
        raise PitreosError("the catalog differs from the store: run 'pitreos catalog sync' "
                           "(and 'pitreos verify --all' for missing blobs)")
    say("the catalog matches the store")


@click.group("config", cls=GlobalOptionsGroup)
@click.pass_obj
def config_group(settings: Settings) -> None:
    """The config file and its profiles (docs/operations.md)."""
    settings.command = f"config {click.get_current_context().invoked_subcommand}"


@config_group.command("show")
@click.pass_context
def config_show(ctx: click.Context) -> None:
    """Print the effective settings and where each comes from: a flag, an environment
    variable, the profile (and its file), or the default. Command options set by the
    environment or the profile are listed with the commands they apply to."""
    import os

    settings = ctx.find_object(Settings)
    group_ctx = ctx.find_root()
    assert settings is not None and isinstance(group_ctx.command, click.Group)
    profile = settings.loaded_profile
    rows: list[dict[str, Any]] = []
    for param in group_ctx.command.params:
        key = configuration.long_name(param)
        if key is None or key in ("version", "help") or param.name is None:
            continue
        attr = "json" if param.name == "json_output" else param.name
        value = getattr(settings, attr)
        source = group_ctx.get_parameter_source(param.name)
        rows.append({"key": key, "value": str(value) if value is not None else None,
                     "source": _source(source, param, profile, attr in
                                       settings.from_flag_after),
                     "commands": []})
    command_rows = [*configuration.environment_settings(group_ctx.command, os.environ),
                    *(configuration.profile_settings(profile) if profile else ())]
    global_keys = {row["key"] for row in rows}
    from_env = {origin.key for origin in command_rows if origin.source.startswith("env ")}
    for origin in command_rows:
        if origin.key in global_keys and not origin.commands:
            continue  # shown above
        source = origin.source
        if origin.key in from_env and not source.startswith("env "):
            source += ", overridden by the environment"
        rows.append({"key": origin.key, "value": str(origin.value), "source": source,
                     "commands": list(origin.commands)})
    result(config_file=str(profile.path if profile else configuration.default_config_path()),
           profile=profile.name if profile else None, settings=rows)
    line(f"# config file: {profile.path if profile else configuration.default_config_path()}"
         f"{'' if profile else ' (no profile applied)'}")
    for row in rows:
        scope = f" [{', '.join(row['commands'])}]" if row["commands"] else ""
        line(f"{row['key']} = {row['value']}{scope}  # {row['source']}")


def _source(source: click.core.ParameterSource | None, param: click.Parameter,
            profile: configuration.Profile | None, after: bool) -> str:
    if after or source is click.core.ParameterSource.COMMANDLINE:
        return "flag"
    if source is click.core.ParameterSource.ENVIRONMENT:
        return f"env {configuration.environ_has(param.envvar)}"
    if source is click.core.ParameterSource.DEFAULT_MAP and profile is not None:
        return f"profile {profile.name} ({profile.path})"
    return "default"


@click.command("check-node")
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False))
@click.option("--against", "name", metavar="BACKUP",
              help="Also check that DIRECTORY holds what this backup recorded: its head "
              "block and chain.")
@click.pass_obj
def check_node(settings: Settings, directory: Path, name: str | None) -> None:
    """Check a nodeos data directory as nodeos will need it: blocks.index agrees with
    blocks.log entry by entry (each entry's trailing offset), the head block and chain
    are the backup's (with --against), the state file is clean; its build environment is
    printed beside the local nodeos's (`nodeos --full-version`, if on the PATH). Exits 1
    with one line on any mismatch."""
    recorded: dict[str, str] = {}
    if name is not None:
        with settings.workspace() as ws:
            manifest = ws.choose(name)
        recorded, name = manifest.meta, manifest.name
    report_node_check(directory, recorded, name)


def report_node_check(directory: Path, recorded: dict[str, str], backup: str | None) -> None:
    """Check ``directory``, print what was found, raise on any problem."""
    from ..nodecheck import check_node as run_check

    found = run_check(directory, recorded)
    result(check={"directory": str(directory), "backup": backup,
                  "head_block": found.head_block, "chain_id": found.chain_id,
                  "blocks_checked": found.blocks_checked,
                  "state_environment": found.state_environment,
                  "local_nodeos": found.local_nodeos, "problems": found.problems})
    say(f"{directory}: head block {found.head_block}, chain {found.chain_id or 'unknown'}, "
        f"{found.blocks_checked} index entries checked against the log")
    if found.state_environment:
        say(f"  {found.state_environment}")
    say(f"  local nodeos: {found.local_nodeos or 'none on the PATH'}")
    if found.problems:
        more = f" (and {len(found.problems) - 1} more)" if len(found.problems) > 1 else ""
        raise NodeCheckFailed(f"{directory} is not as nodeos needs it: "
                              f"{found.problems[0]}{more}")


COMMANDS = (init, gc, verify, stats, unlock, catalog, config_group, check_node)
