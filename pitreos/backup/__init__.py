"""Backup: split files into fixed-size chunks, store the blobs the store lacks, then
write the manifest.

The flow, one module a step:

- :mod:`.plan`: what to read (scan, node checks, incremental reuse, holes skipped);
- :mod:`.pipeline`: read, hash, decide against the catalog, compress and store;
- :mod:`pitreos.gcprotocol`: the backup's half of the protocol with gc (a marker while
  it runs, a check of reused blobs before publishing);
- :mod:`.run`: the steps in order, the manifest written last under a fresh name.
"""

from .options import BackupOptions, BackupResult, BackupStats
from .run import run_backup

__all__ = ["BackupOptions", "BackupResult", "BackupStats", "run_backup"]
