"""The command's entry point, kept tiny: it installs the signal handling before the CLI
and its libraries are imported (a few hundred milliseconds), so that Ctrl-C or a stop
signal during start-up ends quietly with the documented exit code, not a traceback."""

import gc
import signal
import sys
from collections.abc import Callable
from typing import Any


def _stop(signum: int, frame: object) -> None:
    sys.stderr.write(f"pitreos: stopped by {signal.Signals(signum).name} while starting\n")
    sys.exit(128 + signum)


def catch_stop_signals(handler: Callable[[int, Any], None]) -> None:
    """Stop on SIGTERM (systemd, Kubernetes, ``timeout``) and SIGHUP (a closed terminal)
    with ``handler``, except one this process was started with ignored: ``nohup``
    ignores SIGHUP so that a command outlives its terminal, and a program keeps what its
    parent chose to ignore (as Python does with SIGINT)."""
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) != signal.SIG_IGN:
            signal.signal(signum, handler)


def main() -> None:
    catch_stop_signals(_stop)
    try:
        from .cli import main as cli_main
    except KeyboardInterrupt:
        sys.stderr.write("pitreos: interrupted while starting\n")
        sys.exit(130)
    try:
        cli_main()
    finally:
        # Whatever is still alive is about to go with the process. Frozen, the
        # interpreter's shutdown passes of the cyclic collector skip it instead of
        # tearing down every module's cycles one by one: `pitreos list` on an empty
        # catalog took 188 ms, and 166 ms frozen; `--version` 139 and 123 ms (medians
        # of 61 alternating runs, 2-core VM). Exit handlers, buffered output and the
        # exit code are as before; nothing pitreos writes waits on a collection.
        gc.freeze()
