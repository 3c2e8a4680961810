"""Optional libc calls that the os module lacks (fallocate's hole punching, syncfs)."""

import ctypes
import ctypes.util
import functools
import os
from collections.abc import Callable


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    return ctypes.CDLL(name, use_errno=True) if name else None


@functools.cache
def function(name: str, *argtypes: type) -> Callable[..., None] | None:
    """libc's ``name`` as a function raising OSError on failure; None where libc lacks it."""
    libc = _libc()
    func = getattr(libc, name, None) if libc is not None else None
    if func is None:
        return None
    func.argtypes = list(argtypes)
    func.restype = ctypes.c_int

    def call(*args: object) -> None:
        if func(*args) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))

    return call
