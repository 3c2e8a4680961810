"""Defaults and limits that the CLI's help shows, kept apart from the engine modules
that use them, so that ``pitreos --help`` and ``--version`` import nothing heavy."""

DEFAULT_CHUNK_SIZE = 1 << 20  # chosen by tools/bench.py: see docs/performance.md
MIN_CHUNK_SIZE = 64 << 10
MAX_CHUNK_SIZE = 256 << 20
MAX_UNKNOWN_DELETED = 10  # restore --delete removes more local paths than this only forced
# Work handed to a worker in one task: 16 chunks of 1 MiB. A task a chunk cost the
# coordinator a future, a callback and a result each (the GIL share of issue 15).
TASK_BYTES = 16 << 20
# Below this much data to read or write, a local store's work stays on threads: starting
# the worker processes (~0.2 s on 2 cores) would cost more than the GIL does.
PROCESS_MIN_BYTES = 256 << 20
