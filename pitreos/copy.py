"""Copying a backup to another store, moving only the blobs the destination lacks.

For example to publish a private snapshot in a public bucket. The destination's blobs
are known from one listing; each copied blob is checked (both hashes) before it is
written, and the manifest is written last, as by a backup.
"""

from dataclasses import dataclass

from . import manifest as mf
from .catalog import Catalog, NewBlob
from .errors import PitreosError
from .hashing import ChunkDigest
from .log import get_logger
from .parallel import imap_unordered
from .repository import Repository

log = get_logger(__name__)


@dataclass
class CopyStats:
    blobs_copied: int = 0
    blobs_present: int = 0
    bytes_copied: int = 0


def copy_backup(manifest: mf.Manifest, source: Repository, dest: Repository,
                dest_catalog: Catalog, workers: int) -> CopyStats:
    if manifest.name in dest.manifest_names():
        raise PitreosError(f"backup {manifest.name} already exists in store {dest.url}")
    present = {b.sha1 for b in dest.list_blobs()}
    wanted = manifest.digests()
    missing = sorted((d for d in wanted if d.sha1 not in present), key=lambda d: d.sha1)
    stats = CopyStats(blobs_present=len(wanted) - len(missing))

    def copy_one(d: ChunkDigest) -> NewBlob:
        blob = source.get_blob(d.sha1)
        size = source.check_blob(blob, d)  # never spread a corrupt blob
        dest.put_blob(d.sha1, blob)
        return NewBlob(d.sha1, d.blake3, size, len(blob))

    copied: list[NewBlob] = []
    try:
        for blob in imap_unordered(copy_one, missing, workers=workers):
            copied.append(blob)
            stats.blobs_copied += 1
            stats.bytes_copied += blob.stored_size
    finally:
        if copied:
            dest.flush()
            dest_catalog.add_blobs(copied)
    if not dest.write_manifest(manifest):
        raise PitreosError(f"backup {manifest.name} already exists in store {dest.url}")
    dest_catalog.add_backup(manifest)
    log.info("copy.done", backup=manifest.name, to=dest.url, copied=stats.blobs_copied,
             present=stats.blobs_present)
    return stats
