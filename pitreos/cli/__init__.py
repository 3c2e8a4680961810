"""The command line: parses arguments, calls the engine, prints. Nothing else.

``app`` holds the group, its global options and ``main``; ``common`` the settings and
output rules every command follows; the commands live in ``transfer`` (backup, restore,
copy), ``browse`` (list, show, files, diff, dump, export) and ``maintain`` (init, gc,
verify, stats, unlock, catalog, config).
"""

from .app import cli, main

__all__ = ["cli", "main"]
