"""Defaults and limits that the CLI's help shows, kept apart from the engine modules
that use them, so that ``pitreos --help`` and ``--version`` import nothing heavy."""

DEFAULT_CHUNK_SIZE = 1 << 20  # chosen by tools/bench.py: see docs/performance.md
MIN_CHUNK_SIZE = 64 << 10
MAX_CHUNK_SIZE = 256 << 20
# Files nodeos only ever appends to (pruning punches holes at the front, which is fine);
# the paths are nodeos's own (pitreos.nodeos names them)
APPEND_ONLY_DEFAULTS = ("blocks/blocks.log", "blocks/blocks.index", "state-history/*.log",
                        "state-history/*.index")
MAX_UNKNOWN_DELETED = 10  # restore --delete removes more local paths than this only forced
# Work handed to a worker in one task: 64 chunks of 1 MiB. Each task costs the
# coordinator a future, a pickled task and result, and a callback: with tasks of 16 MiB
# it held the GIL for 5.2% of a full backup and 4.7% of a full restore, with 64 MiB
# 3.1% and 1.8% (tools/bench.py small, py-spy --gil --nonblocking, one run each). A
# task's chunks are read one at a time: its size costs no memory.
TASK_BYTES = 64 << 20
# Below this much data to read or write, a local store's work stays on threads: starting
# the worker processes' server (0.19 s on 2 cores; each pool after it 0.025 s) would
# cost more than the GIL does.
PROCESS_MIN_BYTES = 256 << 20
# An object store's requests (pitreos.stores.retry, .deadline and .limit use them)
DEFAULT_RETRY_FOR = 300.0  # seconds an operation is retried for
DEFAULT_REQUEST_TIMEOUT = 120.0  # a 256 MiB chunk at 2.5 MiB/s; 1 MiB chunks need far less
ADAPTIVE_MAX = 128  # the most requests in flight an adaptive limit climbs to
