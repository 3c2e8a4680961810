"""pitreos: point-in-time backup and restore for large, sparse and append-only files.

The engine is importable without the CLI: see :mod:`pitreos.backup`,
:mod:`pitreos.restore`, :mod:`pitreos.catalog` and :class:`pitreos.workspace.Workspace`.
It logs through the standard library's ``logging`` (logger ``pitreos``) and prints
nothing unless the application configures logging.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pitreos")  # one source: the package metadata (pyproject.toml)
except PackageNotFoundError:  # run from a checkout that was never installed
    __version__ = "0+unknown"
