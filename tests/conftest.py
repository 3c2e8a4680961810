"""Suite-wide: the run must leave the checkout as it found it.

Test subprocesses run in temporary directories; a test that writes into the checkout
(as one once did: a store named ``file:relative/`` was created there and committed)
fails the whole run here.
"""

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_BEFORE = pytest.StashKey[set[str] | None]()
_LEFT = pytest.StashKey[list[str]]()


def _checkout_status() -> set[str] | None:
    """Untracked and modified files (ignored ones excluded); None outside a git checkout."""
    try:
        proc = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        return None
    if proc.returncode != 0:
        return None
    return set(proc.stdout.splitlines())


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[_BEFORE] = _checkout_status()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    before = session.config.stash.get(_BEFORE, None)
    after = _checkout_status()
    if before is None or after is None:
        return  # not a git checkout (an sdist): nothing to compare
    new = sorted(after - before)
    if new:
        session.config.stash[_LEFT] = new
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    left = terminalreporter.config.stash.get(_LEFT, [])
    if left:
        terminalreporter.write_line(
            "FAILED: the test run changed the checkout (tests must write only to "
            "temporary directories):", red=True)
        for line in left:
            terminalreporter.write_line(f"  {line}", red=True)

