"""pitreos: point-in-time backup and restore for large, sparse and append-only files.

The engine is importable without the CLI: see :mod:`pitreos.backup`,
:mod:`pitreos.restore`, :mod:`pitreos.catalog` and :func:`pitreos.stores.open_store`.
"""

__version__ = "0.1.0"
