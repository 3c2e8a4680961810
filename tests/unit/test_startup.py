"""Start-up (issue 15, target 5): `pitreos --version` and `pitreos list` import only what
they use. Each module below cost milliseconds of every command's start when imported at
the top (docs/performance.md, "Start-up"); this keeps them from coming back."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# what a run that logs nothing, reads no config file, migrates nothing and lists no blob
# never needs
NOT_AT_START = ("structlog", "rich", "yaml", "sqlite_utils", "tomllib", "difflib",
                "socket", "importlib.resources", "zipfile", "boto3", "google.cloud.storage",
                "azure.storage.blob", "pitreos.nodeos", "pitreos.backup", "pitreos.restore",
                # what compresses, syncs a local store, or wraps an object store
                "zstandard", "ctypes", "pitreos.stores.limit", "pitreos.stores.deadline",
                "pitreos.stores.retry", "pitreos.stores.cache", "pitreos.metrics",
                # what handles markers, or reads manifests on threads
                "pitreos.locks", "pitreos.parallel", "concurrent.futures",
                # what prints the chunk lists of backups a sync adds
                "pitreos.chunkprints")

RUN_AND_REPORT = """
import json, sys
from pathlib import Path
from pitreos.cli.app import main
report, sys.argv = Path(sys.argv[1]), ["pitreos", *sys.argv[2:]]
code = None
try:
    main()
except SystemExit as exc:
    code = exc.code
report.write_text(json.dumps({"exit": code, "modules": sorted(sys.modules)}))
"""


def imported(tmp_path: Path, *args: str) -> tuple[int, set[str]]:
    env = {**os.environ, "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "config"),
           "XDG_CACHE_HOME": str(tmp_path / "cache"), "XDG_DATA_HOME": str(tmp_path / "data")}
    env = {k: v for k, v in env.items() if not k.startswith("PITREOS_")}
    report = tmp_path / "report.json"
    proc = subprocess.run([sys.executable, "-c", RUN_AND_REPORT, str(report), *args],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    found = json.loads(report.read_text())
    return found["exit"], set(found["modules"])


@pytest.mark.parametrize("args", [("--version",), ("list",)])
def test_start_up_imports_nothing_the_command_does_not_use(tmp_path: Path,
                                                          args: tuple[str, ...]) -> None:
    store = tmp_path / "store"
    extra = ("--store", store.as_uri(), "--catalog", str(tmp_path / "c.sqlite"))
    # the store, then its catalog: the first command on a machine creates the catalog,
    # which imports sqlite-utils to migrate
    for first in (("init",), ("list",)):
        proc = subprocess.run([sys.executable, "-m", "pitreos", *first, *extra],
                              capture_output=True, text=True, cwd=tmp_path, timeout=60)
        assert proc.returncode == 0, proc.stderr
    code, modules = imported(tmp_path, *args, *(extra if args == ("list",) else ()))
    assert code in (0, None)
    assert not modules & set(NOT_AT_START), sorted(modules & set(NOT_AT_START))
    if args == ("list",):
        assert "pitreos.catalog" in modules  # it did open the catalog: the check is live


def test_a_global_option_after_a_subcommand_is_given_once(tmp_path: Path) -> None:
    """The global options are given to a command when its group hands it out: asking
    twice in one process must not give them twice."""
    from click.testing import CliRunner

    from pitreos.cli.app import cli

    runner = CliRunner()
    for _ in range(2):
        result = runner.invoke(cli, ["catalog", "sync", "--help"])
        assert result.exit_code == 0, result.output
        assert result.output.count("--store URL") == 1


FREEZE_REPORT = """
import gc, sys
from pathlib import Path
from pitreos import launch
report, sys.argv = Path(sys.argv[1]), ["pitreos", *sys.argv[2:]]
try:
    launch.main()
finally:
    report.write_text(str(gc.get_freeze_count()))
"""


@pytest.mark.parametrize(("args", "exit_code"), [(("--version",), 0), (("list",), 10)])
def test_what_is_alive_at_exit_is_frozen_and_the_exit_code_kept(
        tmp_path: Path, args: tuple[str, ...], exit_code: int) -> None:
    """The entry point freezes what is alive on its way out, so the interpreter's
    shutdown does not collect it (tens of milliseconds of every command); a failing
    command keeps its exit code and its one-line error."""
    report = tmp_path / "frozen"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PITREOS_")}
    env["PITREOS_STORE"] = (tmp_path / "absent").as_uri()
    env["PITREOS_CATALOG"] = str(tmp_path / "c.sqlite")
    proc = subprocess.run([sys.executable, "-c", FREEZE_REPORT, str(report), *args],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60)
    assert proc.returncode == exit_code, proc.stderr
    assert int(report.read_text()) > 1000  # the modules' objects, not a stray few
    if exit_code:
        assert proc.stderr.count("\n") == 1 and "no pitreos store" in proc.stderr, proc.stderr
    else:
        assert proc.stdout.startswith("pitreos, version ")
