"""The commands that look into backups: list, show, files, diff, dump, export."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..errors import PitreosError, UsageError
from ..select import did_you_mean
from .common import (
    Settings,
    filter_options,
    human,
    line,
    per_second,
    result,
    say,
    shown,
    typed_meta,
)

if TYPE_CHECKING:
    from ..catalog import BackupRecord
    from ..export import ExportStats
    from ..manifest import Manifest
    from ..workspace import Workspace


def _record(r: BackupRecord) -> dict[str, Any]:
    return {"name": r.name, "tag": r.tag, "created": r.created.isoformat(),
            "files": r.file_count, "apparent_size": r.apparent_size,
            "data_size": r.data_size, "chunk_size": r.chunk_size,
            "meta": typed_meta(r.meta)}


@click.command("list")
@filter_options
@click.pass_obj
def list_backups(settings: Settings, tag: str | None, before: str | None,
                 where: tuple[str, ...]) -> None:
    """List backups, newest first."""
    from .common import make_filter

    with settings.workspace() as ws:
        records = make_filter(tag, before, where).apply(ws.catalog.backups())
    result(backups=[_record(r) for r in records])
    for r in records:
        meta = " ".join(f"{k}={v}" for k, v in sorted(r.meta.items()))
        line(f"{r.name}  {r.tag:<10} {r.file_count:>6} files  "
             f"{human(r.data_size):>10} data  {meta}".rstrip())


def _totals(m: Manifest) -> dict[str, int]:
    files = m.files()
    return {"files": len(files), "apparent_size": sum(e.size for e in files),
            "data_size": sum(e.data_size for e in files), "unique_blobs": len(m.digests())}


@click.command()
@click.argument("name", metavar="BACKUP")
@click.option("--manifest", "whole", is_flag=True,
              help="Print the whole manifest (YAML, every chunk) instead of a summary.")
@click.pass_obj
def show(settings: Settings, name: str, whole: bool) -> None:
    """Summarise a backup: its name, tag, time, metadata and totals (a unique prefix of
    a name is enough). --manifest prints the manifest itself (not with --json, whose
    document is the summary)."""
    from ..manifest import dump

    with settings.workspace() as ws:
        manifest = ws.choose(name)
    totals = _totals(manifest)
    result(backup=manifest.name, tag=manifest.tag, created=manifest.created.isoformat(),
           chunk_size=manifest.chunk_size, meta=typed_meta(manifest.meta), totals=totals)
    from .. import nodeos  # 8-16 ms of imports that `list` does not need

    environment = nodeos.describe_state_environment(manifest.meta)
    summary = (f"files: {totals['files']}, apparent size: {human(totals['apparent_size'])}, "
               f"data size: {human(totals['data_size'])}, unique blobs: "
               f"{totals['unique_blobs']}")
    if whole:
        line(dump(manifest).decode().rstrip("\n"))
        if environment:
            line(f"# {environment}")
        line(f"# {summary}")
        return
    line(f"backup: {manifest.name}")
    line(f"tag: {manifest.tag}")
    line(f"created: {manifest.created.isoformat()}")
    line(f"chunk size: {human(manifest.chunk_size)}")
    line(summary)
    for key, value in sorted(manifest.meta.items()):
        line(f"meta: {key}={value}")
    if environment:
        line(f"note: {environment}")


@click.command()
@click.argument("name", metavar="BACKUP")
@click.pass_obj
def files(settings: Settings, name: str) -> None:
    """List a backup's files with apparent size and data size."""
    with settings.workspace() as ws:
        manifest = ws.choose(name)
    out: list[dict[str, Any]] = []
    for e in manifest.entries:
        out.append({"path": shown(e.path), "type": e.type, "mode": e.mode,
                    "size": e.size, "data_size": e.data_size,
                    "target": shown(e.target) if e.target is not None else None})
        if e.type == "file":
            line(f"{e.size:>15} {e.data_size:>15}  {shown(e.path)}")
        elif e.type == "symlink":
            line(f"{'':>15} {'':>15}  {shown(e.path)} -> {shown(e.target or '')}")
    result(backup=manifest.name, entries=out)


@click.command()
@click.argument("old", metavar="OLD")
@click.argument("new", metavar="NEW")
@click.pass_obj
def diff(settings: Settings, old: str, new: str) -> None:
    """What changed from backup OLD to backup NEW: files added (+), removed (-),
    changed (M, with the chunks and bytes that differ), of another type (T), or with
    only their mode or time changed (U). From the manifests alone: nothing is fetched."""
    from ..diff import diff_manifests

    with settings.workspace() as ws:
        older, newer = ws.choose(old), ws.choose(new)
    changes = diff_manifests(older, newer)
    marks = {"added": "+", "removed": "-", "changed": "M", "type": "T", "metadata": "U"}
    for change in changes:
        detail = (f"  ({change.chunks} chunks, {human(change.bytes)})"
                  if change.kind in ("added", "removed", "changed") and change.chunks else "")
        line(f"{marks[change.kind]}    {shown(change.path)}{detail}")
    counts = {kind: sum(1 for c in changes if c.kind == kind) for kind in marks}
    chunks, size = sum(c.chunks for c in changes), sum(c.bytes for c in changes)
    result(old=older.name, new=newer.name, counts=counts, chunks=chunks, bytes=size,
           changes=[{"path": shown(c.path), "kind": c.kind, "chunks": c.chunks,
                     "bytes": c.bytes} for c in changes])
    say(f"{older.name} -> {newer.name}: {counts['added']} added, {counts['removed']} "
        f"removed, {counts['changed']} changed, {counts['type']} of another type, "
        f"{counts['metadata']} with new metadata; {chunks} chunks, {human(size)} differ")


@click.command()
@click.argument("name", metavar="BACKUP")
@click.argument("path", metavar="PATH")
@click.pass_obj
def dump(settings: Settings, name: str, path: str) -> None:
    """Write one file of a backup to stdout (e.g. `pitreos dump latest config.ini >
    config.ini`). Every blob is checked before its bytes are written; holes come out as
    zeros. Not with --json: stdout is the file."""
    from ..export import file_pieces

    if settings.json:
        raise UsageError("dump writes the file to stdout: --json does not apply (use "
                         "'pitreos files --json' for its size)")
    with settings.workspace() as ws:
        manifest = ws.choose(name)
        entry = next((e for e in manifest.entries if e.path == path.strip("/")), None)
        if entry is None or entry.type != "file":
            hint = did_you_mean(path, (e.path for e in manifest.files()))
            raise UsageError(f"backup {manifest.name} has no file {path!r}{hint}")
        out = sys.stdout.buffer
        for piece in file_pieces(ws.repo, entry, ws.workers, holes=True):
            out.write(piece)
        out.flush()


@click.command()
@click.argument("name", metavar="BACKUP")
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False),
              metavar="FILE", help="Write the tar stream to FILE [default: stdout].")
@click.pass_obj
def export(settings: Settings, name: str, output: Path | None) -> None:
    """Write BACKUP as a tar stream (POSIX pax) to stdout or -o FILE: a file with holes
    in GNU sparse format 1.0, so a 4 GiB sparse state holding 100 MiB of data is a
    stream of about 100 MiB that `tar -x` (GNU tar, bsdtar) extracts sparse. Every blob
    is checked before its bytes are written. --json needs -o (stdout is the stream)."""
    from ..export import export_tar

    if settings.json and output is None:
        raise UsageError("export writes the tar stream to stdout: with --json, give "
                         "-o FILE")
    with settings.workspace() as ws:
        manifest = ws.choose(name)
        started = time.monotonic()
        if output is None:
            with open(sys.stdout.fileno(), "wb", closefd=False) as stdout:
                stats = export_tar(manifest, ws.repo, stdout, ws.workers)
        else:
            stats = _export_to(output, manifest, ws)
        seconds = time.monotonic() - started
    result(backup=manifest.name, output=str(output) if output else None,
           files=stats.files, entries=stats.entries, data_bytes=stats.data_bytes,
           bytes_written=stats.bytes_written,
           written_bytes_per_second=per_second(stats.bytes_written, seconds))
    say(f"exported {manifest.name}: {stats.entries} entries, {human(stats.data_bytes)} of "
        f"data in a {human(stats.bytes_written)} tar stream at "
        f"{human(per_second(stats.bytes_written, seconds))}/s")


def _export_to(output: Path, manifest: Manifest, ws: Workspace) -> ExportStats:
    """Into ``output.part``, renamed when whole: an interrupted export leaves no file
    that looks like a whole backup."""
    from ..export import export_tar

    partial = output.with_name(output.name + ".part")
    try:
        with open(partial, "wb") as out:
            stats = export_tar(manifest, ws.repo, out, ws.workers)
            os.fsync(out.fileno())
        os.replace(partial, output)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise PitreosError(f"cannot write -o {output}: {exc.strerror or exc}") from exc
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return stats


COMMANDS = (list_backups, show, files, diff, dump, export)
