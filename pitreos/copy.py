"""Copying a backup to another store, moving only the blobs the destination lacks.

For example to publish a private snapshot in a public bucket. The destination's blobs
are known from one listing. Each blob copied is checked before it is written, and each
that the destination holds but its catalog does not know is checked where it is: both
hashes, so that the manifest's pairing of each name with a blake3 is checked too. The
manifest is written last, as by a backup, after every check that could refuse it: a
copy that fails leaves no manifest behind. Copying a backup that the
destination already holds, identically, is a success that sends nothing.
"""

from dataclasses import dataclass

from . import manifest as mf
from .catalog import Catalog
from .errors import CollisionError, PitreosError
from .hashing import ChunkDigest, NewBlob
from .log import get_logger
from .parallel import imap_unordered
from .progress import NoProgress, Progress
from .repository import BlobState, Repository

log = get_logger(__name__)


@dataclass
class CopyStats:
    blobs_copied: int = 0
    blobs_present: int = 0
    bytes_copied: int = 0
    already_there: bool = False  # the destination held this very backup: nothing sent


def copy_backup(manifest: mf.Manifest, source: Repository, dest: Repository,
                dest_catalog: Catalog, workers: int,
                progress: Progress | None = None) -> CopyStats:
    if manifest.name in dest.manifest_names():
        if dest.read_manifest(manifest.name) == manifest:
            log.info("copy.already_there", backup=manifest.name, to=dest.url)
            return CopyStats(blobs_present=len(manifest.digests()), already_there=True)
        raise PitreosError(f"store {dest.url} holds another backup named {manifest.name}: "
                           "nothing was copied")
    wanted = sorted(manifest.digests())
    known = dest_catalog.known_blobs([d.sha1 for d in wanted])
    for d in wanted:
        if d.sha1 in known and known[d.sha1].blake3 != d.blake3:
            raise _collision(manifest, d, dest, known[d.sha1].blake3)
    present = {b.sha1 for b in dest.list_blobs()}
    # a blob the destination holds but its catalog does not know is checked whole: it
    # may hold another chunk with the same sha1, or be damaged
    unknown = [d for d in wanted if d.sha1 in present and d.sha1 not in known]
    damaged: set[str] = set()

    def examine(d: ChunkDigest) -> tuple[ChunkDigest, tuple[BlobState, str | None]]:
        return d, dest.examine_blob(d, check_name=True)  # the manifest's pairs too

    for d, (state, detail) in imap_unordered(examine, unknown, workers=workers):
        if state is BlobState.OTHER:
            raise _collision(manifest, d, dest, detail or "?")
        if state is BlobState.DAMAGED:
            damaged.add(d.sha1)
    missing = sorted((d for d in wanted if d.sha1 not in present or d.sha1 in damaged),
                     key=lambda d: d.sha1)
    stats = CopyStats(blobs_present=len(wanted) - len(missing))

    def copy_one(d: ChunkDigest) -> NewBlob:
        blob = source.get_blob(d.sha1)
        size = source.check_blob(blob, d)  # never spread a corrupt blob
        if d.sha1 in damaged:
            dest.replace_blob(d.sha1, blob)
        else:
            dest.put_blob(d.sha1, blob)
        return NewBlob(d.sha1, d.blake3, size, len(blob))

    copied: list[NewBlob] = []
    progress = progress or NoProgress()
    progress.start("copy", len(missing), "blobs")
    try:
        for blob in imap_unordered(copy_one, missing, workers=workers):
            copied.append(blob)
            stats.blobs_copied += 1
            stats.bytes_copied += blob.stored_size
            progress.advance(1)
    finally:
        progress.finish()
        # every blob, copied now or found there (left by a copy that was cut short, and
        # perhaps never synced), is durable before the manifest says so
        dest.flush()
        if copied:
            dest_catalog.add_blobs(copied)
    if not dest.write_manifest(manifest):
        raise PitreosError(f"store {dest.url} holds another backup named {manifest.name}: "
                           "its blobs were copied, its manifest was not")
    dest_catalog.add_backup(manifest)
    log.info("copy.done", backup=manifest.name, to=dest.url, copied=stats.blobs_copied,
             present=stats.blobs_present)
    return stats


def _collision(manifest: mf.Manifest, d: ChunkDigest, dest: Repository,
               other: str) -> CollisionError:
    return CollisionError(
        f"sha1 collision: backup {manifest.name} has blob {d.sha1} with blake3 {d.blake3}, "
        f"store {dest.url} has it with blake3 {other}; no manifest was copied")
