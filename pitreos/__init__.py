"""pitreos: point-in-time backup and restore for large, sparse and append-only files.

The engine is importable without the CLI: see :mod:`pitreos.backup`,
:mod:`pitreos.restore`, :mod:`pitreos.catalog` and :class:`pitreos.workspace.Workspace`.
It logs through the standard library's ``logging`` (logger ``pitreos``) and prints
nothing unless the application configures logging.
"""


def __getattr__(name: str) -> str:
    # read on first use: importing importlib.metadata at start-up widens the window in
    # which Ctrl-C meets Python's own import machinery instead of pitreos's handler
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("pitreos")  # one source: the package metadata (pyproject.toml)
        except PackageNotFoundError:  # run from a checkout that was never installed
            return "0+unknown"
    raise AttributeError(f"module 'pitreos' has no attribute {name!r}")
