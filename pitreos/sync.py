"""Bringing the catalog level with the store."""

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .catalog import Catalog
from .errors import CollisionError, ManifestError
from .log import get_logger
from .manifest import Manifest
from .progress import NoProgress, Progress
from .repository import Repository, StoredBlob, parse_manifest

if TYPE_CHECKING:
    from .chunkprints import RepeatedChunks

log = get_logger(__name__)

# Manifests fetched ahead of the one being inserted hold at most this many bytes (by
# their listed sizes), or one manifest alone when it is larger: a window of twice the
# workers (256 on an object store) of 100 MB manifests (a node of 1 TB) would be 25 GB.
# Manifests of the benchmark's node (600 kB) still run 100 ahead.
SYNC_AHEAD_BYTES = 64 << 20
# The catalog commits the manifests a sync adds once they hold this many chunk rows
# (Catalog.batch: a million blobs' sync, 33 s in a transaction a manifest, 12 s so)
SYNC_ROWS_PER_COMMIT = 200_000


@dataclass(frozen=True, slots=True)
class SyncReport:
    added: int
    removed: int
    unreadable: list[str]  # manifests in the store that could not be read
    missing_blobs: int | None  # None when blobs were not listed: else the catalog holds
    # the listing until the next one (Catalog.unreferenced_listed, missing_listed)
    # chunk rows copied from an earlier backup's file in this sync (pitreos.chunkprints)
    chunks_copied: int = 0
    # manifests that conflict with the catalog (a sha1 with another blake3), left out
    quarantined: dict[str, str] = field(default_factory=dict)  # name -> the conflict
    quarantined_sha1s: set[str] = field(default_factory=set)  # blobs they reference

    @property
    def blobs_unaccounted(self) -> bool:
        """Whether some manifest's blobs are unknown (it could not be read): nothing
        may be deleted as unreferenced then."""
        return bool(self.unreadable)


def _parse_or_name(name: str, data: bytes) -> Manifest | tuple[str, str]:
    """Parse a manifest; an unreadable one comes back as (name, reason): one bad
    object must not block every command."""
    try:
        return parse_manifest(name, data)
    except ManifestError as exc:
        return name, str(exc)


def sync_catalog(
    catalog: Catalog, repo: Repository, *, list_blobs: bool = False, workers: int = 8,
    progress: Progress | None = None, ahead_bytes: int = SYNC_AHEAD_BYTES,
    rows_per_commit: int = SYNC_ROWS_PER_COMMIT,
) -> SyncReport:
    """Add manifests the catalog lacks, drop those gone from the store.

    With ``list_blobs`` the store's blobs are listed too (one listing, no downloads), so
    the catalog stops claiming blobs the store no longer holds.
    """
    progress = progress or NoProgress()
    sizes = repo.manifest_sizes()
    in_store = set(sizes)
    in_catalog = catalog.backup_names()
    new = sorted(in_store - in_catalog)
    gone = sorted(in_catalog - in_store)
    for name in gone:
        catalog.remove_backup(name)
        log.info("catalog.backup_dropped", backup=name)
    added = _Additions(catalog, held=in_catalog - set(gone))
    if new:
        added.run(repo, new, sizes, workers, ahead_bytes, rows_per_commit, progress)
        catalog.recount_references()  # before the listing is applied: it trusts the counts
    missing = None
    if list_blobs:
        missing = apply_blob_listing(catalog, repo, progress)
        if missing:
            log.warning("catalog.blobs_missing", count=missing, store=repo.url,
                        hint="run 'pitreos verify --all'")
    return SyncReport(added=len(new) - len(added.unreadable) - len(added.quarantined),
                      removed=len(gone), unreadable=sorted(added.unreadable),
                      missing_blobs=missing, chunks_copied=added.chunks_copied,
                      quarantined=added.quarantined,
                      quarantined_sha1s=added.quarantined_sha1s)


class _Additions:
    """The manifests a sync adds to the catalog, and what became of them."""

    def __init__(self, catalog: Catalog, held: set[str]) -> None:
        self.catalog = catalog
        self.held = held  # what the catalog held before this sync
        self.unreadable: list[str] = []
        self.quarantined: dict[str, str] = {}  # name -> the conflict
        self.quarantined_sha1s: set[str] = set()
        self.chunks_copied = 0

    def run(self, repo: Repository, new: list[str], sizes: dict[str, int | None],
            workers: int, ahead_bytes: int, rows_per_commit: int,
            progress: Progress) -> None:
        """Insert ``new`` in name order (oldest first), whatever order the fetches end
        in: of two manifests that conflict, the older one is kept, on every machine. A
        slow fetch holds back the ones after it, not memory: at most twice the workers,
        and ``ahead_bytes`` by their listed sizes, are fetched ahead of the one being
        inserted. Fetching runs on threads; parsing (GIL-bound) on the calling thread,
        between inserts. The catalog commits every ``rows_per_commit`` chunk rows, before
        each wait for a fetch, and at the end: an interrupted sync keeps what it
        committed, each manifest whole."""
        # imported here: a sync that adds nothing (every `pitreos list` on a machine that
        # is up to date) prints no list, and the module cost ~2.4 ms of that start
        from .chunkprints import RepeatedChunks

        repeated = RepeatedChunks()
        # how many of the backups still to insert have each tag: the lists of a backup
        # that no later one of its tag can build on are not printed
        later = Counter(map(_tag_of, new))
        seeded: set[str] = set()
        progress.start("catalog sync: read manifests", len(new), "manifests")
        try:
            with self.catalog.batch(rows_per_commit) as batch:
                # committed before each wait for a fetch: another pitreos on this machine
                # (a backup publishing) never waits for this sync's network
                for data, name in _fetched_in_order(repo, new, sizes, workers, ahead_bytes,
                                                    on_wait=batch.commit):
                    tag = _tag_of(name)
                    later[tag] -= 1
                    if data is not None:  # None: deleted since the listing
                        if tag not in seeded:
                            seeded.add(tag)
                            self._seed(repeated, tag, name)
                        batch.wrote(self._insert(repeated, _parse_or_name(name, data),
                                                 keep=later[tag] > 0))
                    progress.advance(1)
        finally:
            progress.finish()

    def _seed(self, repeated: "RepeatedChunks", tag: str, before: str) -> None:
        """Print the lists of the newest backup of ``tag`` older than ``before`` that the
        catalog held before this sync (a sync adding the latest backups on a machine
        that synced before), from its rows; they are read and printed, then dropped,
        before the next manifest is parsed, so that the two are never held at once."""
        earlier = max((n for n in self.held if _tag_of(n) == tag and n < before),
                      default=None)
        if earlier is not None:
            repeated.remember_files(tag, self.catalog.files_of(earlier))

    def _insert(self, repeated: "RepeatedChunks", result: Manifest | tuple[str, str],
                keep: bool) -> int:
        """Add one manifest; returns how many chunks it lists (about the rows it wrote:
        empty chunks have none), the measure of a batch."""
        if isinstance(result, tuple):
            log.warning("catalog.manifest_unreadable", backup=result[0], error=result[1])
            self.unreadable.append(result[0])
            return 0
        copied, prints = repeated.compare(result, keep=keep)
        try:
            chunks_copied = self.catalog.add_backup(result, count_references=False,
                                                    copied=copied)
        except CollisionError as exc:
            # one bad manifest (a failed copy, a hand edit) must not lock the store out
            log.warning("catalog.manifest_quarantined", backup=result.name, conflict=str(exc),
                        hint="left out: the other backups work; 'pitreos verify' reports it")
            self.quarantined[result.name] = str(exc)
            self.quarantined_sha1s.update(d.sha1 for d in result.digests())
            return 0
        repeated.remember(prints)
        self.chunks_copied += chunks_copied
        log.info("catalog.backup_added", backup=result.name, chunks_copied=chunks_copied)
        return sum(len(entry.chunks) for entry in result.entries)


def _tag_of(name: str) -> str:
    """The tag a backup's name ends in (``2026-11-26T02-00-00Z--standard``): which of
    the backups to add and of those the catalog holds may build on each other. Only a
    hint: a manifest whose own tag says otherwise is compared with nothing."""
    return name.partition("--")[2]


def _fetched_in_order(repo: Repository, names: list[str], sizes: dict[str, int | None],
                      workers: int, ahead_bytes: int, on_wait: Callable[[], None]
                      ) -> Iterator[tuple[bytes | None, str]]:
    """Each manifest of ``names`` with its name, in their order, fetched on threads
    (``on_wait``: see :func:`pitreos.parallel.imap_ordered`)."""
    if not names:
        return iter(())
    # imported here: `pitreos list` with nothing new to read saved ~4 ms of its start
    from .parallel import imap_ordered

    fetched = imap_ordered(repo.manifest_bytes, names, workers=workers,
                           weigh=lambda name: sizes[name] or 0, budget=ahead_bytes,
                           on_wait=on_wait)
    return zip(fetched, names, strict=True)


def apply_blob_listing(catalog: Catalog, repo: Repository, progress: Progress) -> int:
    """List the store's blobs into the catalog, streamed (never a whole listing in
    memory); returns how many referenced blobs the store lacks."""

    def counted() -> Iterator[StoredBlob]:
        for blob in repo.list_blobs():
            progress.advance(1)
            yield blob

    progress.start("catalog sync: list blobs", 0, "blobs")
    try:
        return catalog.apply_listing(counted())
    finally:
        progress.finish()
