"""Defaults and limits that the CLI's help shows, kept apart from the engine modules
that use them, so that ``pitreos --help`` and ``--version`` import nothing heavy."""

DEFAULT_CHUNK_SIZE = 1 << 20  # chosen by tools/bench.py: see docs/performance.md
MIN_CHUNK_SIZE = 64 << 10
MAX_CHUNK_SIZE = 256 << 20
MAX_UNKNOWN_DELETED = 10  # restore --delete removes more local paths than this only forced
