"""Optional libc calls that the os module lacks (fallocate's hole punching, syncfs)."""

import ctypes
import functools
import os
from collections.abc import Callable


@functools.cache
def _libc() -> ctypes.CDLL:
    # the symbols already loaded in this process (libc among them): find_library would
    # run ldconfig in a subprocess
    return ctypes.CDLL(None, use_errno=True)


@functools.cache
def function(name: str, *argtypes: type) -> Callable[..., None] | None:
    """libc's ``name`` as a function raising OSError on failure; None where libc lacks it."""
    func = getattr(_libc(), name, None)
    if func is None:
        return None
    func.argtypes = list(argtypes)
    func.restype = ctypes.c_int

    def call(*args: object) -> None:
        if func(*args) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))

    return call
