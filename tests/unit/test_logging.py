"""A library user gets no output unless they configure logging; the CLI's configuration
renders events on stderr, never stdout."""

import subprocess
import sys
from pathlib import Path

LIBRARY_USE = """
import sys
from pathlib import Path
from pitreos.backup import BackupOptions, run_backup
from pitreos.workspace import Workspace

root = Path(sys.argv[1])
(root / "src").mkdir()
(root / "src" / "f").write_bytes(b"data" * 1000)
ws = Workspace.open((root / "store").as_uri(), catalog_path=root / "c.sqlite", create=True)
run_backup(root / "src", ws.repo, ws.catalog, BackupOptions(incremental=True))
run_backup(root / "src", ws.repo, ws.catalog, BackupOptions(incremental=True,
           path_filter=__import__("pitreos.walk").walk.PathFilter(include=("nothing/**",))))
ws.close()
"""


def run_python(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                          text=True, cwd=tmp_path, timeout=60)


def test_the_library_is_silent_by_default(tmp_path: Path) -> None:
    """Both backups log events (info: done; warning: a glob matches nothing)."""
    proc = run_python(LIBRARY_USE, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and proc.stderr == ""


def test_an_application_that_configures_logging_gets_the_events(tmp_path: Path) -> None:
    code = "import logging; logging.basicConfig(level=logging.INFO)\n" + LIBRARY_USE
    proc = run_python(code, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert "backup.done" in proc.stderr and "backup.glob_matches_nothing" in proc.stderr
