"""pitreos: point-in-time backup and restore for large, sparse and append-only files.

The engine is importable without the CLI: see :mod:`pitreos.backup`,
:mod:`pitreos.restore`, :mod:`pitreos.catalog` and :class:`pitreos.workspace.Workspace`.
It logs through the standard library's ``logging`` (logger ``pitreos``) and prints
nothing unless the application configures logging.
"""


from ._version import __version__

__all__ = ["__version__"]
