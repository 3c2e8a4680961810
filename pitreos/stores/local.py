"""A store in a local directory (``file:///path``): one file per object.

Writes go to an unnamed file (``O_TMPFILE``; a named temporary file where the file
system lacks it) that is then linked into place, so a reader never sees half an object,
and ``link`` gives create-only-if-absent for free. Objects are not fsynced as they are
written: callers :meth:`LocalStore.flush` the ones they rely on before they record or
publish anything. One fsync per 1 MiB chunk as it was written cost about 40% of a full
backup's time (tools/bench.py, docs/performance.md).
"""

import errno
import os
import tempfile
from collections.abc import Collection, Iterator
from datetime import UTC, datetime
from pathlib import Path

from ..errors import BlobNotFound, StoreError, StoreNotFound
from .base import DeletedKept, ObjectInfo, StoreProperties

# CPU-bound: a request is a system call, not a round trip
PROPERTIES = StoreProperties(remote=False)

# A flush of a few objects (up to FSYNC_EACH_MAX) while the machine has more than
# OTHERS_DIRTY_MAX bytes besides them waiting to be written back fsyncs each object and
# the folders that hold it; any other flush syncs the store's file system once
# (``syncfs``), which writes out everything dirty there, whoever wrote it. With 64 MiB
# just appended to a file there (a node's block log between two backups), syncfs took
# 33-37 ms for the 64 blobs of an incremental backup, fsyncing them and their folders on
# 8 threads 10-12 ms; with nothing else dirty, syncfs took 4-5 ms against 10-14 ms, and
# for 256 blobs of 300 kB 32-36 ms against 62-69 ms (2 cores, this VM's virtual disk,
# /tmp script; docs/performance.md, nineteenth pass). So a small backup pays for what
# it wrote and at most OTHERS_DIRTY_MAX of others' writes, never for the gigabytes a
# running node may hold dirty on the same disk, and syncfs stays where it is cheaper.
FSYNC_EACH_MAX = 128
OTHERS_DIRTY_MAX = 32 << 20
_FSYNC_THREADS = 8


def _dirty_bytes() -> int:
    """What this machine has waiting to be written back (``Dirty`` and ``Writeback`` of
    /proc/meminfo); unknown, it counts as a lot."""
    found = 0
    try:
        with open("/proc/meminfo", "rb") as meminfo:
            for line in meminfo:
                if line.startswith((b"Dirty:", b"Writeback:")):
                    found += int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return 1 << 62
    return found


class LocalStore:
    properties = PROPERTIES

    def __init__(self, root: Path, *, create: bool = False) -> None:
        self.root = root
        self.url = root.as_uri()
        self.create = create
        self._made_dirs: set[Path] = set()  # parents known to exist: skip a mkdir per put
        self._root_str = str(root)

    def check(self) -> None:
        if self.create:
            try:
                self.root.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create store {self.url}: {exc.strerror}") from exc
        if not self.root.is_dir():
            raise StoreNotFound(f"no pitreos store at {self.url} (no such directory): run "
                                f"`pitreos init --store {self.url}` to create one")

    def deleted_kept(self) -> DeletedKept | None:
        return None

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*key.split("/"))

    def get(self, key: str) -> bytes:
        # plain os calls on a string path: pathlib's objects and buffered file cost a
        # restore more GIL time than decompressing the blob
        try:
            fd = os.open(os.path.join(self._root_str, key), os.O_RDONLY)
            try:
                size = os.fstat(fd).st_size
                data = os.read(fd, size)
                while len(data) < size:  # a short read: read the rest
                    more = os.read(fd, size - len(data))
                    if not more:
                        break
                    data += more
                return data
            finally:
                os.close(fd)
        except FileNotFoundError as exc:
            raise BlobNotFound(key, self.url) from exc
        except OSError as exc:
            raise StoreError(f"cannot read {key} from store {self.url}: {exc.strerror}") from exc

    def put(self, key: str, data: bytes, *, overwrite: bool = False) -> bool:
        path = self._path(key)
        try:
            if path.parent not in self._made_dirs:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._made_dirs.add(path.parent)
            if overwrite:
                return self._publish_named(path, data, overwrite=True)
            try:
                fd = os.open(path.parent, os.O_TMPFILE | os.O_WRONLY, 0o644)
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                    raise
                return self._publish_named(path, data, overwrite=False)
            try:
                _write_all(fd, data)
                # a dir fd makes CPython call linkat(AT_SYMLINK_FOLLOW), which publishes
                # the unnamed file; plain link() would not follow /proc's magic link
                os.link(f"/proc/self/fd/{fd}", path, src_dir_fd=fd, follow_symlinks=True)
            except FileExistsError:
                return False
            finally:
                os.close(fd)
            return True
        except OSError as exc:
            raise StoreError(f"cannot write {key} to store {self.url}: {exc.strerror}") from exc

    def _publish_named(self, path: Path, data: bytes, *, overwrite: bool) -> bool:
        """Through a named temporary file: replace (overwrite) or link (create only if
        absent, False when the object exists)."""
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            _write_all(fd, data)
            if overwrite:
                os.replace(tmp, path)
            else:
                os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        finally:
            os.close(fd)
            if os.path.lexists(tmp):
                os.unlink(tmp)

    def exists(self, key: str) -> bool:
        try:
            os.stat(self._path(key))
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise StoreError(f"cannot check {key} in store {self.url}: {exc.strerror}") from exc
        return True

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        directory = prefix.rpartition("/")[0]
        base = self._path(directory) if directory else self.root
        for dirpath, _dirnames, filenames in os.walk(base, onerror=self._walk_error):
            rel = os.path.relpath(dirpath, self.root).replace(os.sep, "/")
            rel = "" if rel == "." else rel + "/"
            for filename in filenames:
                key = rel + filename
                if filename.startswith(".tmp-") or not key.startswith(prefix):
                    continue
                try:
                    st = os.stat(os.path.join(dirpath, filename))
                except FileNotFoundError:  # deleted while listing
                    continue
                yield ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))

    def _walk_error(self, exc: OSError) -> None:
        if not isinstance(exc, FileNotFoundError):
            raise StoreError(f"cannot list store {self.url}: {exc.strerror}") from exc

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink(missing_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot delete {key} from store {self.url}: {exc.strerror}") from exc

    def flush(self, keys: Collection[str] | None = None) -> None:
        if keys is not None and len(keys) <= FSYNC_EACH_MAX:
            objects = {self._path(key): key for key in keys}
            if not objects:
                return
            if _dirty_bytes() - sum(map(_size, objects)) > OTHERS_DIRTY_MAX:
                self._fsync_each(objects)
                return
        self._sync_file_system()

    def _fsync_each(self, objects: dict[Path, str]) -> None:
        """fsync each object, then each folder from it up to the store's root: a new
        name (and a folder made for it) is durable only once the folder holding it is."""
        folders: set[Path] = set()
        for path, key in objects.items():
            folders.update(path.parents[:key.count("/") + 1])
        from ..parallel import imap_unordered

        # the objects first: a crash in between leaves no synced name of unsynced data
        for paths in (objects, folders):
            for _ in imap_unordered(self._fsync, paths, workers=_FSYNC_THREADS):
                pass

    def _fsync(self, path: Path) -> None:
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except FileNotFoundError:
            return  # deleted since it was put (a gc): nothing of it to keep
        except OSError as exc:
            what = path.relative_to(self.root).as_posix()
            where = f"{what} in store {self.url}" if what != "." else f"store {self.url}"
            raise StoreError(f"cannot sync {where}: {exc.strerror}") from exc

    def _sync_file_system(self) -> None:
        try:
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            raise StoreError(f"cannot sync store {self.url}: {exc.strerror}") from exc
        import ctypes  # here: 2-3 ms of every command's start-up, for a backup's end

        from .. import libc

        try:
            syncfs = libc.function("syncfs", ctypes.c_int)
            if syncfs is None:
                os.sync()  # every file system: slower, as safe
            else:
                syncfs(fd)  # every dirty page and inode of the store's file system
        except OSError as exc:
            raise StoreError(f"cannot sync store {self.url}: {exc.strerror}") from exc
        finally:
            os.close(fd)


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0  # gone since (a gc), or unreadable: an fsync of it says so


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
