"""Commands run around a backup or a restore (``--run-before``, ``--run-after``): to
stop a node and start it again, take a snapshot first, or report the result. They run
through ``sh -c`` with ``PITREOS_*`` variables saying what runs and how it went; the
after command runs whether the operation succeeded or failed."""

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import PitreosError
from .log import get_logger

log = get_logger(__name__)


class HookFailed(PitreosError):
    """A --before or --after command failed."""


def run_hook(which: str, command: str, env: dict[str, str]) -> None:
    proc = subprocess.run(["sh", "-c", command], env={**os.environ, **env,
                                                      "PITREOS_HOOK": which},
                          capture_output=True, text=True, check=False)
    output = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0:
        last = output.splitlines()[-1] if output else "no output"
        raise HookFailed(f"--run-{which} command failed with exit {proc.returncode}: {last}")


@contextmanager
def around(before: str | None, after: str | None, env: dict[str, str]) -> Iterator[dict[str, str]]:
    """Run ``before``, then the operation, then ``after`` (always). Yields a dict the
    operation fills (``PITREOS_BACKUP``) for ``after``. A failing ``before`` stops the
    operation; a failing ``after`` fails an operation that had succeeded."""
    if before:
        run_hook("before", before, env)
    outcome: dict[str, str] = {"PITREOS_RESULT": "failure"}
    try:
        yield outcome
        outcome["PITREOS_RESULT"] = "success"
    except BaseException as exc:
        outcome["PITREOS_ERROR"] = str(exc)
        if after:
            try:
                run_hook("after", after, {**env, **outcome})
            except HookFailed as hook:  # the operation's own error is the one to report
                log.warning("hook.after_failed", error=str(hook))
        raise
    if after:
        run_hook("after", after, {**env, **outcome})
