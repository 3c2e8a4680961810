"""deploy/: the systemd units pass `systemd-analyze verify`, and the commands of the
units and of the Kubernetes CronJob are real pitreos commands: run here against a local
store (the node's stop/start hooks replaced by `true`, the paths by temporary ones)."""

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .helpers import make_node

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
UNITS = sorted((DEPLOY / "systemd").iterdir())


def test_units_verify() -> None:
    verify = shutil.which("systemd-analyze")
    assert verify is not None, "systemd-analyze is needed (tools/test.sh installs it)"
    proc = subprocess.run([verify, "verify", *map(str, UNITS)], capture_output=True,
                          text=True)
    assert proc.returncode == 0 and "pitreos" not in proc.stderr, proc.stderr


def test_a_broken_unit_fails_verify(tmp_path: Path) -> None:
    """The check above can fail: systemd-analyze reports a bad directive on stderr (and
    still exits 0, which is why the check reads stderr)."""
    broken = tmp_path / "broken.service"
    broken.write_text((DEPLOY / "systemd/pitreos-gc.service").read_text().replace(
        "Type=oneshot", "Type=sometimes"))
    proc = subprocess.run(["systemd-analyze", "verify", str(broken)], capture_output=True,
                          text=True)
    assert "Failed to parse service type" in proc.stderr


def exec_start(unit: Path) -> list[str]:
    text = unit.read_text().replace("\\\n", " ")
    line = next(li for li in text.splitlines() if li.startswith("ExecStart="))
    args = shlex.split(line.removeprefix("ExecStart="))
    assert args[:2] == ["/usr/bin/env", "pitreos"]
    return args[2:]


def runnable(args: list[str], node: Path) -> list[str]:
    """The command with its hooks made harmless and its paths temporary."""
    out: list[str] = []
    for i, arg in enumerate(args):
        if i > 0 and args[i - 1] in ("--run-before", "--run-after"):
            out.append("true")
        elif arg in ("/var/lib/nodeos", "/data"):
            out.append(str(node))
        else:
            out.append(arg)
    return out


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The environment of a host where `pitreos init` was run once, as deploy/ says."""
    env = {**os.environ, "PITREOS_STORE": (tmp_path / "store").as_uri(),
           "PITREOS_CATALOG": str(tmp_path / "catalog.sqlite")}
    assert pitreos(["init"], env, tmp_path).returncode == 0
    return env


def pitreos(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pitreos", *args], env=env, cwd=cwd,
                          capture_output=True, text=True)


def test_the_units_commands_run(tmp_path: Path, env: dict[str, str]) -> None:
    node = make_node(tmp_path / "node")
    backup = pitreos(runnable(exec_start(DEPLOY / "systemd/pitreos-backup.service"), node),
                     env, tmp_path)
    assert backup.returncode == 0 and backup.stdout == backup.stderr == "", backup.stderr
    gc = pitreos(runnable(exec_start(DEPLOY / "systemd/pitreos-gc.service"), node), env,
                 tmp_path)
    assert gc.returncode == 0 and gc.stdout == gc.stderr == "", gc.stderr
    listed = pitreos(["list"], env, tmp_path)
    assert len(listed.stdout.splitlines()) == 1 and "standard" in listed.stdout


def test_the_cronjob_runs(tmp_path: Path, env: dict[str, str]) -> None:
    docs = list(yaml.safe_load_all((DEPLOY / "kubernetes/cronjob.yaml").read_text()))
    assert [d["kind"] for d in docs] == ["PersistentVolumeClaim", "CronJob"]
    job = docs[1]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    container = job["containers"][0]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/data" in mounts and job["restartPolicy"] == "Never"
    node = make_node(tmp_path / "node")
    result = pitreos(runnable(container["args"], node), env, tmp_path)
    assert result.returncode == 0 and result.stdout == "", result.stderr


def test_the_dockerfile_copies_what_exists_and_runs_pitreos() -> None:
    lines = [li.strip() for li in (DEPLOY / "Dockerfile").read_text().splitlines()
             if li.strip() and not li.startswith("#")]
    root = DEPLOY.parent
    for line in lines:
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (root / source).exists(), source
    assert 'ENTRYPOINT ["pitreos"]' in lines
    assert any(li.startswith("RUN pip install") and "'.[all]'" in li for li in lines)
