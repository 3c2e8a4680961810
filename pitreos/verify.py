"""Checking that backups restore: every referenced blob exists (one listing, no
downloads), or with ``deep`` that every blob's content matches both its hashes.
Damage is reported with exactly the backups and files it breaks."""

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

from .catalog import Catalog
from .errors import IntegrityError, StoreError
from .hashing import ChunkDigest
from .parallel import imap_unordered
from .progress import NoProgress, Progress
from .repository import Repository
from .sync import apply_blob_listing


@dataclass(frozen=True)
class Damage:
    sha1: str
    problem: str  # "missing", or what the check found
    files: list[tuple[str, str]]  # (backup, path) that need the blob


@dataclass
class VerifyReport:
    backups: int = 0
    blobs_checked: int = 0
    bytes_downloaded: int = 0
    damage: list[Damage] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)  # damaged blobs removed (repair)

    def broken_backups(self) -> list[str]:
        return sorted({b for d in self.damage for b, _ in d.files})


def verify(repo: Repository, catalog: Catalog, backups: Collection[str] | None,
           *, deep: bool = False, workers: int = 8, repair: bool = False,
           progress: Progress | None = None) -> VerifyReport:
    """Check ``backups`` (all when None); the catalog must be in sync with the store.

    Every blob found missing or damaged is marked so in the catalog: the next backup
    here that reads the same data stores it again. With ``repair`` the damaged objects
    are also removed from the store, so that every machine's next listing (gc,
    ``catalog sync``) sees them missing and stores them again too."""
    report = VerifyReport(backups=len(backups) if backups is not None else
                          len(catalog.backup_names()),
                          blobs_checked=catalog.referenced_count(backups))
    problems: dict[str, str] = {}
    listable = repo.properties.listable
    progress = progress or NoProgress()
    if listable:  # one listing, into the catalog: a million blobs are never in memory
        apply_blob_listing(catalog, repo, progress)
        problems.update({sha1: "missing" for sha1 in catalog.missing_listed(backups)})
    if deep or not listable:
        todo = (d for d in catalog.referenced_digests(backups) if d.sha1 not in problems)
        progress.start("verify: download and check" if deep else "verify: look up",
                       report.blobs_checked - len(problems), "blobs")
        try:
            problems.update(_check_each(repo, todo, deep, workers, report, progress))
        finally:
            progress.finish()
    refs = catalog.references_to(problems)
    report.damage = [Damage(sha1, problems[sha1], refs[sha1]) for sha1 in sorted(problems)]
    catalog.mark_damaged(list(problems))
    if repair:
        for sha1, problem in problems.items():
            if problem != "missing":
                repo.delete_blob(sha1)
                report.removed.append(sha1)
    return report


def _check_each(repo: Repository, digests: Iterable[ChunkDigest], deep: bool, workers: int,
                report: VerifyReport, progress: Progress) -> dict[str, str]:
    """Download and check each blob (deep), or ask whether it exists (stores that
    cannot list)."""

    def check(d: ChunkDigest) -> tuple[str, str | None, int]:
        if not deep:
            return d.sha1, None if repo.blob_exists(d.sha1) else "missing", 0
        try:
            blob = repo.get_blob(d.sha1)
        except StoreError as exc:
            return d.sha1, str(exc), 0
        try:
            repo.check_blob(blob, d)
        except IntegrityError as exc:
            return d.sha1, f"corrupt: {exc}", len(blob)
        return d.sha1, None, len(blob)

    problems: dict[str, str] = {}
    for sha1, problem, size in imap_unordered(check, digests, workers=workers):
        report.bytes_downloaded += size
        progress.advance(1)
        if problem is not None:
            problems[sha1] = "missing" if "not found" in problem else problem
    return problems


@dataclass
class CatalogCheck:
    manifests_only_in_store: list[str]
    backups_only_in_catalog: list[str]
    referenced_blobs_missing: list[str]
    wrong_reference_counts: int

    @property
    def consistent(self) -> bool:
        return not (self.manifests_only_in_store or self.backups_only_in_catalog
                    or self.referenced_blobs_missing or self.wrong_reference_counts)


def check_catalog(repo: Repository, catalog: Catalog) -> CatalogCheck:
    """Compare the catalog with the store, changing neither."""
    in_store = set(repo.manifest_names())
    in_catalog = catalog.backup_names()
    catalog.stage_listing(repo.list_blobs())  # not applied: the catalog stays as it was
    return CatalogCheck(
        manifests_only_in_store=sorted(in_store - in_catalog),
        backups_only_in_catalog=sorted(in_catalog - in_store),
        referenced_blobs_missing=sorted(catalog.missing_listed()),
        wrong_reference_counts=catalog.wrong_reference_counts(),
    )
