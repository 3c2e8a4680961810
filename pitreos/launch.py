"""The command's entry point, kept tiny: it installs the signal handling before the CLI
and its libraries are imported (a few hundred milliseconds), so that Ctrl-C or a stop
signal during start-up ends quietly with the documented exit code, not a traceback."""

import signal
import sys


def _stop(signum: int, frame: object) -> None:
    sys.stderr.write(f"pitreos: stopped by {signal.Signals(signum).name} while starting\n")
    sys.exit(128 + signum)


def main() -> None:
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _stop)
    try:
        from .cli import main as cli_main
    except KeyboardInterrupt:
        sys.stderr.write("pitreos: interrupted while starting\n")
        sys.exit(130)
    cli_main()
