"""Exceptions raised by the engine.

Every error a user can cause derives from :class:`PitreosError`; the CLI prints its
message on one line and exits with its ``exit_code``. Messages name the file, flag or
object at fault. The exit codes (documented in the README and ``pitreos --help``):

====  ==============================================================
0     success
1     failure (the message says what)
2     usage: a bad flag, argument or value
10    no pitreos store there (no such bucket, container or directory, or never
      initialized: ``pitreos init`` creates one)
11    locked: the catalog, or a node's state file, is in use by another process
12    access denied: the credentials were refused or lack a permission
70    a bug in pitreos
129   stopped by SIGHUP; 130 interrupted (Ctrl-C); 143 stopped by SIGTERM
====  ==============================================================
"""


class PitreosError(Exception):
    """Base of every expected failure; its message is shown to the user as is."""

    exit_code = 1


class UsageError(PitreosError):
    """A flag or argument is invalid."""

    exit_code = 2


class StoreError(PitreosError):
    """The store could not be reached or answered with an error."""


class TransientStoreError(StoreError):
    """A failure worth retrying: throttling, a 5xx answer, a reset or timed-out connection."""


class StoreNotFound(StoreError):
    """The store (directory, bucket, container) does not exist."""

    exit_code = 10


class StoreExists(StoreError):
    """``pitreos init`` on a store that already exists."""


class AccessDenied(StoreError):
    """The store refused the credentials, or they lack a permission."""

    exit_code = 12


class Locked(PitreosError):
    """Something pitreos needs is in use by another process."""

    exit_code = 11


class ReadOnlyStore(StoreError):
    """A write was attempted on a store that only supports reading."""


class BlobNotFound(StoreError):
    """An object the caller expected is absent from the store."""

    def __init__(self, key: str, store: str) -> None:
        super().__init__(f"object {key} not found in store {store}")
        self.key = key
        self.store = store

    def __reduce__(self) -> tuple[type["BlobNotFound"], tuple[str, str]]:
        # raised in a worker process, it is pickled back to the coordinator
        return BlobNotFound, (self.key, self.store)


class IntegrityError(PitreosError):
    """Data does not match the hashes recorded for it."""


class CollisionError(IntegrityError):
    """Two different chunks share a sha1: their blake3 hashes differ."""


class ManifestError(PitreosError):
    """A manifest does not parse, has an unknown version or unsafe paths."""


class CatalogError(PitreosError):
    """The local catalog is corrupt, from a newer schema, or inconsistent."""


class CatalogLocked(CatalogError, Locked):
    """Another process holds the catalog."""


class BackupNotFound(PitreosError):
    """No backup matches the name or filters given."""


class SourceChanged(PitreosError):
    """A file changed while it was being backed up."""


class NodeFileDamaged(PitreosError):
    """A node file that never changes once written (a retained block log piece) did."""


class ChainMismatch(PitreosError):
    """A restore would mix the data of two chains."""


class NodeCheckFailed(PitreosError):
    """A node directory is not as nodeos needs it (``check-node``, ``restore --check``)."""


class DirtyState(PitreosError):
    """A node's state file has its dirty flag set: nodeos would refuse to open it."""


class RestoreError(PitreosError):
    """A restore could not complete. One caused by a pitreos error exits with its code
    (a refusal mid-way is still access denied, 12)."""

    def __init__(self, message: str, cause: Exception | None = None) -> None:
        super().__init__(message)
        if isinstance(cause, PitreosError):
            self.exit_code = cause.exit_code


class UnfinishedRestore(PitreosError):
    """A directory holds the marker of a restore that did not finish."""


class NodeRunning(Locked):
    """A node's state file is locked by a running process, or dirty."""


class Stopped(BaseException):
    """A stop signal (SIGTERM, SIGHUP) arrived: unwinds like KeyboardInterrupt, so that
    every cleanup runs, and is never caught as an ordinary error."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by signal {signum}")
        self.signum = signum
